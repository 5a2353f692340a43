// `transient serve` for a program built on it: the command, with what that program adds to
// each loop's connection_loop. The test fixture (tools/fixture) adds its knobs this way.
#pragma once

#include <functional>

#include "../command.hpp"
#include "serve_connections.hpp"
#include "serve_options.hpp"

namespace transient::tool {

/// What a program built on serve adds to it; `transient serve` itself adds nothing.
struct serve_extension {
  /// Called with each loop's connection_loop before the loop accepts (hooks, a response
  /// delay), on that loop's thread: with --threads N, on N threads, possibly at once.
  std::function<void(connection_loop& connections)> configure;
  /// The program's name and the options it adds to serve's table.
  serve_table_additions options;
};

/// `transient serve` with `args` (serve's options and the extension's) and `extension`:
/// returns the exit status, as serve(arguments) does.
int serve(arguments args, const serve_extension& extension);

}  // namespace transient::tool
