// The sub-commands of the `transient` tool. Each lives in its own file and is listed in
// main.cpp's table. A command receives its arguments (without the program and command
// names) and returns the process exit status: 0 success, 1 a negative finding, 2 bad usage.
#pragma once

#include <span>
#include <string_view>

namespace transient::tool {

/// Arguments of a sub-command, without the program and sub-command names.
using arguments = std::span<const std::string_view>;

/// Exit status for bad usage (unknown flag, bad value, missing argument).
inline constexpr int exit_usage = 2;

/// `transient explain`: what an errno means for an operation, or the whole table.
int explain(arguments args);

/// `transient who PORT`: the processes listening on a port; exit 1 on a duplicate listener.
int who(arguments args);

/// `transient serve`: an HTTP/1.1 keep-alive responder on transient's accept loop.
int serve(arguments args);

/// `transient drill`: runs `serve` children through named failure scenarios; exit 0 if all pass.
int drill(arguments args);

}  // namespace transient::tool
