// The drivers only apply decisions and report what the kernel gave them (issue 22): read from
// their sources, as docs/acceptor.md states it. Readiness is reported where the kernel gave
// it: the epoll acceptor's EPOLLIN, the Asio loop's async_wait(wait_read). The completion
// drivers (io_uring, Asio) report results and parked requests, invent no EAGAIN, leave
// multishot to accept_policy::batch(), and shed and diagnose through the kit.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>

namespace {

std::string source(const std::string& path) {
  std::ifstream in(std::string(TRANSIENT_SOURCE_DIR) + "/" + path);
  EXPECT_TRUE(in) << path;
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

int count(const std::string& text, const std::string& what) {
  int n = 0;
  for (std::size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) {
    ++n;
  }
  return n;
}

TEST(DriverProtocol, ReadinessIsReportedOnlyWhereTheKernelGaveIt) {
  EXPECT_EQ(count(source("src/drivers/acceptor.cpp"), "policy.on_ready("), 1);
  const std::string asio = source("include/transient/detail/asio_adapter.hpp");
  EXPECT_EQ(count(asio, "on_ready("), 1) << "in readable(), the completion of async_wait(wait_read)";
  EXPECT_EQ(count(asio, "async_wait(Acceptor::wait_read"), 2) << "with and without per-operation cancellation";
  for (const char* path :
       {"src/drivers/uring/uring_acceptor.cpp", "src/drivers/acceptor_core.hpp", "src/drivers/driver_kit.cpp"}) {
    EXPECT_EQ(count(source(path), "on_ready("), 0) << path;
  }
}

TEST(DriverProtocol, CompletionDriversReportResultsAndInventNoErrno) {
  const std::string uring = source("src/drivers/uring/uring_acceptor.cpp");
  const std::string asio = source("include/transient/detail/asio_adapter.hpp");
  EXPECT_EQ(count(uring, "on_accept_failed("), 0) << "an empty backlog is a parked request, not a made-up EAGAIN";
  EXPECT_EQ(count(uring, "on_accept_parked("), 1);
  EXPECT_EQ(count(asio, "on_accept_result("), 2) << "the accept's connection and its error";
  EXPECT_EQ(count(asio, "bad_descriptor"), 0) << "a closed acceptor's accept fails by itself";
}

TEST(DriverProtocol, TheBatchDecidesMultishot) {
  const std::string uring = source("src/drivers/uring/uring_acceptor.cpp");
  EXPECT_EQ(count(uring, "multishot_fits"), 0);
  EXPECT_EQ(count(uring, "max_connections"), 0) << "the budget is the policy's to read";
  EXPECT_EQ(count(uring, "arm_accept(policy.batch() > 1)"), 2);
}

TEST(DriverProtocol, TheAsioLoopShedsAndDiagnosesThroughTheKit) {
  const std::string asio = source("include/transient/detail/asio_adapter.hpp");
  EXPECT_EQ(count(asio, "linger("), 0);
  EXPECT_EQ(count(asio, "failure_context context;"), 0);
  EXPECT_EQ(count(asio, "shed_as("), 1);
  EXPECT_EQ(count(asio, "failure_context_of("), 1);
  EXPECT_EQ(count(asio, "stop_info_of("), 1);
}

}  // namespace
