// ctest-labels: threads
// The bound on the wait in the accept queue on the epoll server, on real loopback sockets:
// stale clients shed (reset), fresh ones served with their wait, a failed measurement never
// sheds (the syscall seam), and the loop handler's connections carry their wait too.
#include <gtest/gtest.h>

#include <memory>
#include <thread>
#include <vector>

#include "support/stale_clients.hpp"
#include "transient/drivers/server.hpp"
#include "transient/testing/syscalls.hpp"

namespace {

using namespace std::chrono_literals;

std::unique_ptr<transient::basic_server> epoll_server(std::vector<transient::listener> listeners,
                                                      transient::connection_handler handler,
                                                      transient::server_options options) {
  return std::make_unique<transient::server>(std::move(listeners), std::move(handler), std::move(options));
}

TEST(QueueWait, TheServerShedsStaleClientsAndServesFreshOnesWithTheirWait) {
  transient::test::stale_clients_are_shed_and_fresh_ones_served(epoll_server);
}

TEST(QueueWait, TheServerServesAClientWhoseWaitCannotBeMeasured) {
  transient::test::a_failed_measurement_never_sheds(epoll_server);
}

// The loop handler path: its connections carry their wait in the queue too.
struct keeping_handler final : transient::loop_handler {
  explicit keeping_handler(transient::test::kept_connections& k) : kept(k) {}
  void on_connection(transient::connection c) override { kept.keep(std::move(c)); }
  void on_accepting_end() override {}
  transient::test::kept_connections& kept;
};

TEST(QueueWait, ALoopHandlerGetsEachConnectionsWait) {
  transient::test::kept_connections kept;
  std::vector<transient::listener> listeners;
  listeners.push_back(transient::listen(transient::endpoint::loopback_v4(0)));
  const transient::endpoint where = listeners.front().local_endpoint();
  transient::test::running server(std::make_unique<transient::server>(
      std::move(listeners), [&](transient::loop& /*l*/) { return std::make_unique<keeping_handler>(kept); },
      transient::test::bounded_wait(1s)));
  const transient::unique_fd holder = transient::test::connect_to(where);
  ASSERT_TRUE(holder && transient::test::served(holder.get()));
  const transient::unique_fd waiting = transient::test::connect_to(where);
  ASSERT_TRUE(waiting);
  std::this_thread::sleep_for(60ms);  // the wait under test
  kept.release(0);
  ASSERT_TRUE(transient::test::served(waiting.get()));
  EXPECT_GE(kept.wait_of(1), 60ms);
}

}  // namespace
