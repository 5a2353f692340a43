// Counts heap allocations made through operator new, so a benchmark can prove a path
// allocates nothing. Include it in exactly one translation unit of a benchmark program:
// it replaces the global allocation functions for the whole program.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <new>

namespace transient::bench {

/// Number of operator new calls since the program started.
inline std::atomic<std::size_t> allocation_count{0};

}  // namespace transient::bench

// Replacement allocation functions ([new.delete.single]); the array and aligned forms
// forward to these by default in libstdc++.
void* operator new(std::size_t size) {
  transient::bench::allocation_count.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(size == 0 ? 1 : size)) {
    return p;
  }
  throw std::bad_alloc();
}
// g++ 12 flags free() of memory from (this very) operator new as a mismatch; it is not.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpragmas"
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
#pragma GCC diagnostic pop
