// The syscall table a driver or listen() keeps for its work (testing/syscalls.hpp): the options
// point to a test's table, or to none for the real calls.
#pragma once

#include "transient/testing/syscalls.hpp"

namespace transient::detail {

/// A copy of `table`, or the real calls if it is null; the caller's table need not outlive it.
[[nodiscard]] inline syscalls seam_of(const syscalls* table) { return table != nullptr ? *table : syscalls{}; }

}  // namespace transient::detail
