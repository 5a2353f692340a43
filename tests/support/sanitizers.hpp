// Which sanitizer this build runs under, for the tests whose counts a sanitizer's runtime changes.
#pragma once

namespace transient::test {

/// True under ThreadSanitizer, whose runtime starts a thread of its own in a process once that
/// process creates a thread (a test counting a program's threads allows for it).
#if defined(__SANITIZE_THREAD__)
inline constexpr bool thread_sanitizer = true;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
inline constexpr bool thread_sanitizer = true;
#else
inline constexpr bool thread_sanitizer = false;
#endif
#else
inline constexpr bool thread_sanitizer = false;
#endif

}  // namespace transient::test
