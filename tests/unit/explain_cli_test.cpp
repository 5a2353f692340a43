// `transient explain`: output, JSON, the table, and every kind of bad input.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "support/run_command.hpp"

namespace {

using testing::HasSubstr;
using transient::test::command_result;
using transient::test::expect_usage_error;

command_result explain(const std::vector<std::string>& args) {
  std::vector<std::string> full{"explain"};
  full.insert(full.end(), args.begin(), args.end());
  return transient::test::run_command(TRANSIENT_CLI_PATH, full);
}

TEST(ExplainCli, ByName) {
  const command_result r = explain({"accept", "EMFILE"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("accept EMFILE (24): back_off"));
  EXPECT_THAT(r.out, HasSubstr("fd_exhausted, process_fd_limit, resource_exhausted"));
  EXPECT_THAT(r.out, HasSubstr("RLIMIT_NOFILE"));
}

TEST(ExplainCli, ByNumberAndAnyCase) {
  const command_result by_number = explain({"accept", "24"});
  const command_result by_lower = explain({"ACCEPT", "emfile"});
  EXPECT_EQ(by_number.exit_code, 0);
  EXPECT_EQ(by_number.out, explain({"accept", "EMFILE"}).out);
  EXPECT_EQ(by_lower.out, by_number.out);
}

TEST(ExplainCli, RecvAndSendAreReadAndWrite) {
  const command_result recv = explain({"recv", "ECONNRESET"});
  EXPECT_EQ(recv.exit_code, 0) << recv.err;
  EXPECT_EQ(recv.out, explain({"read", "ECONNRESET"}).out);
  EXPECT_THAT(recv.out, HasSubstr("read ECONNRESET (104): close"));
  const command_result send = explain({"send", "EPIPE"});
  EXPECT_EQ(send.exit_code, 0) << send.err;
  EXPECT_EQ(send.out, explain({"write", "EPIPE"}).out);
  EXPECT_THAT(send.out, HasSubstr("write EPIPE (32): close"));
  expect_usage_error("explain", {"recvmmsg", "EAGAIN"},
                     "accepted: accept, connect, read (recv), write (send), bind, listen");
}

TEST(ExplainCli, ContextChangesTheAnswer) {
  EXPECT_THAT(explain({"accept", "EINVAL"}).out, HasSubstr("fail"));
  EXPECT_THAT(explain({"accept", "EINVAL"}).out, HasSubstr("not_listening"));
  EXPECT_THAT(explain({"connect", "EISCONN"}).out, HasSubstr(": done"));
  EXPECT_THAT(explain({"connect", "EINTR"}).out, HasSubstr(": wait"));
  EXPECT_THAT(explain({"read", "EINTR"}).out, HasSubstr(": retry"));
}

TEST(ExplainCli, Json) {
  const command_result r = explain({"accept", "ENFILE", "--json"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out,
            "{\"operation\":\"accept\",\"errno\":\"ENFILE\",\"value\":23,\"action\":\"back_off\","
            "\"decided_by\":\"system_fd_limit\",\"conditions\":[\"fd_exhausted\",\"system_fd_limit\","
            "\"resource_exhausted\"],\"advice\":\"the system file table is full (fs.file-max), maybe by another "
            "process: back off, check /proc/sys/fs/file-nr\"}\n");
  const command_result alias = explain({"--json", "write", "EWOULDBLOCK"});
  EXPECT_THAT(alias.out, HasSubstr("\"errno\":\"EAGAIN\",\"value\":11,\"action\":\"wait\""));
}

TEST(ExplainCli, Table) {
  const command_result r = explain({"--table"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("| errno | value | conditions | accept | connect | read | write | bind | listen |"));
  EXPECT_THAT(r.out, HasSubstr("| EMFILE | 24 | fd_exhausted, process_fd_limit, resource_exhausted | back_off "
                               "(process_fd_limit) | back_off (process_fd_limit) | fail (unclassified) | fail "
                               "(unclassified) | back_off (process_fd_limit) | back_off (process_fd_limit) |"));
  EXPECT_THAT(r.out, HasSubstr("| anything else | | unclassified | back_off | fail | fail | fail | fail | fail |"));
  // 33 classified errnos (those docs/errors.md lists), a header, a separator and "anything else".
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 33 + 3);
}

TEST(ExplainCli, Help) {
  const command_result r = explain({"--help"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_THAT(r.out, HasSubstr("usage: transient explain"));
  const command_result top = transient::test::run_command(TRANSIENT_CLI_PATH, {"--help"});
  EXPECT_EQ(top.exit_code, 0);
  EXPECT_THAT(top.out, HasSubstr("explain"));
}

TEST(ExplainCli, BadInput) {
  expect_usage_error("explain", {"acept", "EMFILE"},
                     "unknown operation 'acept' (accepted: accept, connect, read (recv), write (send)");
  expect_usage_error("explain", {"accept", "EMFLIE"}, "unknown errno name 'EMFLIE'");
  expect_usage_error("explain", {"accept", "9999"}, "errno 9999 is out of range (Linux defines 1-133)");
  expect_usage_error("explain", {"accept", "-1"}, "out of range");
  expect_usage_error("explain", {"accept", "0"}, "out of range");
  expect_usage_error("explain", {"accept", "41"}, "Linux defines no errno 41");
  expect_usage_error("explain", {"accept", "12x"}, "'12x' is not an errno name or number");
  expect_usage_error("explain", {"accept"}, "missing ERRNO");
  expect_usage_error("explain", {}, "missing OPERATION and ERRNO");
  expect_usage_error("explain", {"accept", "EMFILE", "extra"}, "too many arguments");
  expect_usage_error("explain", {"accept", "EMFILE", "--jsn"}, "unknown option '--jsn'");
  expect_usage_error("explain", {"--table", "accept"}, "--table takes no other argument");
}

TEST(ExplainCli, UnknownCommand) {
  const command_result r = transient::test::run_command(TRANSIENT_CLI_PATH, {"explian"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("unknown command 'explian'"));
}

}  // namespace
