// ctest-labels: threads
// The bound on the wait in the accept queue on the epoll server, on real loopback sockets:
// stale clients shed (reset), fresh ones served with their wait, a failed measurement never
// sheds (the syscall seam), and the loop handler's connections carry their wait too.
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "support/stale_clients.hpp"
#include "transient/drivers/server.hpp"
#include "transient/policy/events.hpp"
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

// A server that bounds the wait exports the histogram from its construction on (at 0), so a
// scrape before its loops first publish already has the series a rate is taken over.
TEST(QueueWait, TheServerSaysItMeasuresWaitsBeforeItRuns) {
  std::vector<transient::listener> listeners;
  listeners.push_back(transient::listen(transient::endpoint::loopback_v4(0)));
  const transient::server server(
      std::move(listeners), [](transient::connection /*c*/) {}, transient::test::bounded_wait(1s));
  const transient::policy_metrics m = server.metrics();
  EXPECT_TRUE(m.queue_wait_measured);
  EXPECT_NE(transient::to_prometheus(m).find("transient_queue_wait_seconds_count 0\n"), std::string::npos);
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
