// The loop handler's contract on the epoll server (cases in support/loop_handler_cases.hpp).
// ctest-labels: threads
#include "support/loop_handler_cases.hpp"

namespace transient::test {
INSTANTIATE_TYPED_TEST_SUITE_P(Epoll, LoopHandlerCases, transient::server);
}  // namespace transient::test
