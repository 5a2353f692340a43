// serve's watch of its listener's accept queue (tools/serve/serve_queue.cpp), driven directly
// on servers over real loopback listeners: the threshold, how long the queue has been above it
// (with the reading's time given), the text the probes and STATUS= carry, the metrics, and no
// reading once the server has let go of its listener.
#include "../../tools/serve/serve_queue.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <chrono>
#include <future>
#include <memory>
#include <optional>
#include <vector>

#include "support/loopback.hpp"
#include "transient/drivers/server.hpp"

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

// A server over `l`, not yet run: its listener's queue fills as clients connect.
std::unique_ptr<transient::server> server_over(transient::listener l) {
  std::vector<transient::listener> listeners;
  listeners.push_back(std::move(l));
  return std::make_unique<transient::server>(std::move(listeners), [](transient::connection) {});
}

// `n` clients in the queue of `l` (on loopback, connect returns once the kernel queued them).
std::vector<unique_fd> queue_clients(const transient::server& srv, int n) {
  std::vector<unique_fd> clients;
  for (int i = 0; i < n; ++i) {
    clients.push_back(transient::test::connect_to(srv.local_endpoints().front()));
    EXPECT_TRUE(clients.back());
  }
  return clients;
}

TEST(ServeQueueWatch, AboveTheThresholdOnlyWhenMoreThanItsFractionWaits) {
  const auto srv = server_over(listener_with_backlog(4));
  const endpoint at = srv->local_endpoints().front();
  const queue_watch watch(*srv, 0.5);
  EXPECT_EQ(watch.address(), at.to_string());
  std::vector<unique_fd> clients = queue_clients(*srv, 2);
  std::optional<queue_reading> r = watch.read();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->queue, (transient::listen_queue{2, 4}));
  EXPECT_FALSE(r->above) << "2 of 4 is the threshold, not above it";
  clients.push_back(transient::test::connect_to(at));
  r = watch.read();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->queue.length, 3U);
  EXPECT_TRUE(r->above);
  const queue_watch off(*srv, 0.0);
  EXPECT_FALSE(off.read()->above) << "0 turns the threshold off";
}

TEST(ServeQueueWatch, SaysHowLongTheQueueHasBeenAboveAndStartsAgainOnceBelow) {
  transient::listener l = listener_with_backlog(4);
  const int listening = l.native_handle();  // the server holds it until it runs
  const auto srv = server_over(std::move(l));
  const queue_watch watch(*srv, 0.5);
  std::vector<unique_fd> clients = queue_clients(*srv, 3);
  const auto t0 = queue_watch::clock::now();
  EXPECT_EQ(watch.read(t0)->above_for, 0ms);
  const queue_reading later = *watch.read(t0 + 1800ms);
  EXPECT_EQ(later.above_for, 1800ms);
  EXPECT_EQ(transient::tool::describe(later, 0.5),
            "3 of 4 waiting in the accept queue for 1.8 s (over 0.5 of its limit)");
  const unique_fd accepted(::accept4(listening, nullptr, nullptr, SOCK_CLOEXEC));
  ASSERT_TRUE(accepted);
  EXPECT_FALSE(watch.read(t0 + 2000ms)->above) << "2 of 4";
  clients.push_back(transient::test::connect_to(srv->local_endpoints().front()));
  EXPECT_EQ(watch.read(t0 + 3000ms)->above_for, 0ms) << "a new episode starts from its own first reading";
  EXPECT_EQ(watch.read(t0 + 3500ms)->above_for, 500ms);
}

TEST(ServeQueueWatch, ReadsNothingOnceTheServerHasLetGoOfItsListener) {
  const auto srv = server_over(listener_with_backlog(4));
  const endpoint at = srv->local_endpoints().front();
  const queue_watch watch(*srv, 0.5);
  std::future<transient::stop_info> ran = std::async(std::launch::async, [&] { return srv->run(); });
  EXPECT_TRUE(watch.read()) << "the queue reads while the server runs";
  srv->stop();
  ASSERT_EQ(ran.wait_for(5s), std::future_status::ready);
  EXPECT_FALSE(watch.read());
  EXPECT_FALSE(transient::test::connect_to(at)) << "the watch keeps nothing listening";
}

TEST(ServeQueueWatch, MetricsNameTheListenerAndSayTheCountersAreMachineWide) {
  const auto srv = server_over(listener_with_backlog(4));
  const queue_watch watch(*srv, 0.5);
  const std::vector<unique_fd> clients = queue_clients(*srv, 3);
  const std::string text = transient::tool::queue_metrics(watch.read(), watch.address(), watch.drops());
  const std::string label = "{listener=\"" + srv->local_endpoints().front().to_string() + "\"}";
  EXPECT_THAT(text,
              HasSubstr("# TYPE transient_listen_queue_length gauge\ntransient_listen_queue_length" + label + " 3\n"));
  EXPECT_THAT(text,
              HasSubstr("# TYPE transient_listen_queue_limit gauge\ntransient_listen_queue_limit" + label + " 4\n"));
  EXPECT_THAT(text, HasSubstr("# TYPE transient_listen_overflows_total counter\ntransient_listen_overflows_total "));
  EXPECT_THAT(text, HasSubstr("# TYPE transient_listen_drops_total counter\ntransient_listen_drops_total "));
  EXPECT_THAT(text,
              testing::ContainsRegex("HELP transient_listen_overflows_total [^\n]*machine-wide[^\n]*not this one"));
  EXPECT_THAT(text, testing::ContainsRegex("HELP transient_listen_drops_total [^\n]*machine-wide[^\n]*not this one"));
  const std::string without = transient::tool::queue_metrics(std::nullopt, watch.address(), watch.drops());
  EXPECT_THAT(without, testing::Not(HasSubstr("transient_listen_queue_length")))
      << "no reading (the server stopped): no sample rather than a made-up one";
  EXPECT_THAT(without, HasSubstr("transient_listen_overflows_total "));
}

}  // namespace
