// ctest-labels: threads
// The bound on the wait in the accept queue on the io_uring server, on real loopback sockets
// (the scenarios of support/stale_clients.hpp): with a multishot accept the kernel accepts on
// arrival, and a completion batch that leaves the request armed is the queue seen empty.
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "support/stale_clients.hpp"
#include "transient/drivers/uring.hpp"

namespace {

struct UringQueueWait : ::testing::Test {
  void SetUp() override {
    std::string why;
    if (!transient::uring_available(why)) {
      GTEST_SKIP() << "io_uring unavailable: " << why;
    }
  }
};

std::unique_ptr<transient::basic_server> uring_server(std::vector<transient::listener> listeners,
                                                      transient::connection_handler handler,
                                                      transient::server_options options) {
  return std::make_unique<transient::uring_server>(std::move(listeners), std::move(handler), std::move(options));
}

TEST_F(UringQueueWait, TheServerShedsStaleClientsAndServesFreshOnesWithTheirWait) {
  transient::test::stale_clients_are_shed_and_fresh_ones_served(uring_server);
}

TEST_F(UringQueueWait, TheServerServesAClientWhoseWaitCannotBeMeasured) {
  transient::test::a_failed_measurement_never_sheds(uring_server);
}

}  // namespace
