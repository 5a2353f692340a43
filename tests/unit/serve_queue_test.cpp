// serve's watch of its listener's accept queue (tools/serve/serve_queue.cpp), driven directly
// on real loopback listeners: the threshold, how long the queue has been above it (with the
// reading's time given), the text the probes and STATUS= carry, the metrics, and the duplicate
// descriptor letting the socket close with the server's last hold on it.
#include "../../tools/serve/serve_queue.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <chrono>
#include <optional>
#include <vector>

#include "support/loopback.hpp"

namespace {

using namespace std::chrono_literals;
using testing::HasSubstr;
using transient::endpoint;
using transient::unique_fd;
using transient::tool::queue_reading;
using transient::tool::queue_watch;

transient::listener listener_with_backlog(int backlog) {
  transient::listen_options options;
  options.backlog = backlog;
  return transient::listen(endpoint::loopback_v4(0), options);
}

// `n` clients in the queue of `l` (on loopback, connect returns once the kernel queued them).
std::vector<unique_fd> queue_clients(const transient::listener& l, int n) {
  std::vector<unique_fd> clients;
  for (int i = 0; i < n; ++i) {
    clients.push_back(transient::test::connect_to(l.local_endpoint()));
    EXPECT_TRUE(clients.back());
  }
  return clients;
}

TEST(ServeQueueWatch, AboveTheThresholdOnlyWhenMoreThanItsFractionWaits) {
  const transient::listener l = listener_with_backlog(4);
  const queue_watch watch(l, 0.5);
  EXPECT_EQ(watch.address(), l.local_endpoint().to_string());
  std::vector<unique_fd> clients = queue_clients(l, 2);
  std::optional<queue_reading> r = watch.read();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->queue, (transient::listen_queue{2, 4}));
  EXPECT_FALSE(r->above) << "2 of 4 is the threshold, not above it";
  clients.push_back(transient::test::connect_to(l.local_endpoint()));
  r = watch.read();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->queue.length, 3U);
  EXPECT_TRUE(r->above);
  const queue_watch off(l, 0.0);
  EXPECT_FALSE(off.read()->above) << "0 turns the threshold off";
}

TEST(ServeQueueWatch, SaysHowLongTheQueueHasBeenAboveAndStartsAgainOnceBelow) {
  const transient::listener l = listener_with_backlog(4);
  const queue_watch watch(l, 0.5);
  std::vector<unique_fd> clients = queue_clients(l, 3);
  const auto t0 = queue_watch::clock::now();
  EXPECT_EQ(watch.read(t0)->above_for, 0ms);
  const queue_reading later = *watch.read(t0 + 1800ms);
  EXPECT_EQ(later.above_for, 1800ms);
  EXPECT_EQ(transient::tool::describe(later, 0.5),
            "3 of 4 waiting in the accept queue for 1.8 s (over 0.5 of its limit)");
  const unique_fd accepted(::accept4(l.native_handle(), nullptr, nullptr, SOCK_CLOEXEC));
  ASSERT_TRUE(accepted);
  EXPECT_FALSE(watch.read(t0 + 2000ms)->above) << "2 of 4";
  clients.push_back(transient::test::connect_to(l.local_endpoint()));
  EXPECT_EQ(watch.read(t0 + 3000ms)->above_for, 0ms) << "a new episode starts from its own first reading";
  EXPECT_EQ(watch.read(t0 + 3500ms)->above_for, 500ms);
}

TEST(ServeQueueWatch, StopWatchingLetsTheSocketCloseWithTheServersLastHold) {
  transient::listener l = listener_with_backlog(4);
  const endpoint at = l.local_endpoint();
  queue_watch watch(l, 0.5);
  l.close();  // the server lets go: the duplicate alone keeps the socket listening
  EXPECT_TRUE(watch.read()) << "the watch reads through its own descriptor";
  watch.stop_watching();
  EXPECT_FALSE(watch.read());
  watch.stop_watching();  // idempotent
  EXPECT_FALSE(transient::test::connect_to(at)) << "the socket still listens after both let go";
}

TEST(ServeQueueWatch, MetricsNameTheListenerAndSayTheCountersAreMachineWide) {
  const transient::listener l = listener_with_backlog(4);
  const queue_watch watch(l, 0.5);
  const std::vector<unique_fd> clients = queue_clients(l, 3);
  const std::string text = transient::tool::queue_metrics(watch.read(), watch.address());
  const std::string label = "{listener=\"" + l.local_endpoint().to_string() + "\"}";
  EXPECT_THAT(text,
              HasSubstr("# TYPE transient_listen_queue_length gauge\ntransient_listen_queue_length" + label + " 3\n"));
  EXPECT_THAT(text,
              HasSubstr("# TYPE transient_listen_queue_limit gauge\ntransient_listen_queue_limit" + label + " 4\n"));
  EXPECT_THAT(text, HasSubstr("# TYPE transient_listen_overflows_total counter\ntransient_listen_overflows_total "));
  EXPECT_THAT(text, HasSubstr("# TYPE transient_listen_drops_total counter\ntransient_listen_drops_total "));
  EXPECT_THAT(text,
              testing::ContainsRegex("HELP transient_listen_overflows_total [^\n]*machine-wide[^\n]*not this one"));
  EXPECT_THAT(text, testing::ContainsRegex("HELP transient_listen_drops_total [^\n]*machine-wide[^\n]*not this one"));
  const std::string without = transient::tool::queue_metrics(std::nullopt, watch.address());
  EXPECT_THAT(without, testing::Not(HasSubstr("transient_listen_queue_length")))
      << "no reading (the server stopped): no sample rather than a made-up one";
  EXPECT_THAT(without, HasSubstr("transient_listen_overflows_total "));
}

}  // namespace
