// Include first in every translation unit that includes Asio (tests and benchmarks).
//
// g++ 12 reports false positives inside Asio 1.22's headers: its coroutine frame allocator
// looks like a new/delete mismatch, and under -fsanitize=thread its fenced blocks
// (atomic_thread_fence) are reported by -Wtsan. The pragmas must come before Asio's headers,
// and they stay in force for the rest of the translation unit (no push/pop on purpose).
#pragma once

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#if __GNUC__ >= 12
#pragma GCC diagnostic ignored "-Wtsan"
#endif
#endif

#ifndef ASIO_STANDALONE
#define ASIO_STANDALONE 1
#endif
