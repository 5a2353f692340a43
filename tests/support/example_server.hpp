// An HTTP example server (examples/asio_server.cpp, examples/beast_server.cpp) run as a child on
// 127.0.0.1, any free port, two threads, and the address it says it listens on.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <system_error>

#include "support/spawned_process.hpp"
#include "transient/sockets/endpoint.hpp"

namespace transient::test {

struct example_server {
  spawned_process process;
  transient::endpoint at;  ///< Port 0 if the example did not say where it listens.

  /// Starts `program` with `max_connections` and reads "`name`: listening on ADDRESS with 2
  /// thread(s)" from its stderr (at most 5 s).
  example_server(const std::string& program, const std::string& name, unsigned max_connections)
      : process(program, {"0", "2", std::to_string(max_connections), "127.0.0.1"}) {
    const std::string line = process.read_line(spawned_process::stream::err, std::chrono::seconds(5));
    const std::string prefix = name + ": listening on ";
    std::error_code ec;
    if (line.rfind(prefix, 0) == 0) {
      at = transient::parse_endpoint(line.substr(prefix.size(), line.find(' ', prefix.size()) - prefix.size()), ec);
    }
    EXPECT_TRUE(line.rfind(prefix, 0) == 0 && !ec) << line;
  }
};

}  // namespace transient::test
