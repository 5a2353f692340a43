// ctest-labels: threads
// The io_uring server's accept_queues() (cases in support/accept_queue_cases.hpp).
#include "support/accept_queue_cases.hpp"
#include "transient/drivers/uring.hpp"

namespace transient::test {
template <>
struct accept_queue_engine<transient::uring_server> {
  static bool available(std::string& why) { return transient::uring_available(why); }
};
INSTANTIATE_TYPED_TEST_SUITE_P(Uring, AcceptQueueCases, transient::uring_server);
}  // namespace transient::test
