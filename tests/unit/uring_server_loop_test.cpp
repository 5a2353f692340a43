// The loop handler's contract on the io_uring server (cases in support/loop_handler_cases.hpp).
// ctest-labels: threads
#include "support/loop_handler_cases.hpp"
#include "transient/drivers/uring.hpp"

namespace transient::test {
template <>
struct engine<transient::uring_server> {
  static bool available(std::string& why) { return transient::uring_available(why); }
};
INSTANTIATE_TYPED_TEST_SUITE_P(Uring, LoopHandlerCases, transient::uring_server);
}  // namespace transient::test
