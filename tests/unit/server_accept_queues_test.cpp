// ctest-labels: threads
// The epoll server's accept_queues() (cases in support/accept_queue_cases.hpp).
#include "support/accept_queue_cases.hpp"

namespace transient::test {
INSTANTIATE_TYPED_TEST_SUITE_P(Epoll, AcceptQueueCases, transient::server);
}  // namespace transient::test
