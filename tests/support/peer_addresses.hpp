// server_options::peer_addresses, checked the same way for every driver with transient::server's
// contract (constructor, run(ec), stop(), local_endpoints()): the handler sees the client's
// address by default, an empty endpoint with the option off, and the address again when a
// per-peer cap needs it.
#pragma once

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <utility>
#include <vector>

#include "support/loopback.hpp"
#include "transient/drivers/server.hpp"
#include "transient/policy/budget.hpp"
#include "transient/sockets/listener.hpp"

namespace transient::test {

/// The address the handler of a `Server` with `options` sees for one loopback client.
template <typename Server>
endpoint peer_seen(server_options options) {
  using namespace std::chrono_literals;
  std::vector<listener> listeners;
  listeners.push_back(listen(parse_endpoint("127.0.0.1:0")));
  std::promise<endpoint> seen;
  std::future<endpoint> peer = seen.get_future();
  std::atomic<bool> first{true};
  Server srv(
      std::move(listeners),
      [&](connection c) {
        if (first.exchange(false)) {
          seen.set_value(c.peer());
        }
      },
      std::move(options));
  auto result = std::async(std::launch::async, [&srv] {
    std::error_code ec;
    return srv.run(ec);
  });
  const auto client = connect_to(srv.local_endpoints().at(0));
  EXPECT_EQ(peer.wait_for(3s), std::future_status::ready);
  srv.stop();
  result.wait();
  return peer.wait_for(0s) == std::future_status::ready ? peer.get() : endpoint{};
}

/// The three cases of server_options::peer_addresses for `Server`.
template <typename Server>
void expect_peer_addresses_read_unless_turned_off() {
  EXPECT_TRUE(peer_seen<Server>({}).is_loopback());
  server_options off;
  off.peer_addresses = false;
  const endpoint none = peer_seen<Server>(off);
  EXPECT_FALSE(none.is_loopback());
  EXPECT_EQ(none.port(), 0);
  // A per-peer cap needs the addresses, so they are read anyway.
  off.policy.peers = std::make_shared<peer_limit>(4);
  EXPECT_TRUE(peer_seen<Server>(off).is_loopback());
}

}  // namespace transient::test
