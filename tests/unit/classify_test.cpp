// classify(): one test per row of docs/errors.md, for every operation. The expected verdicts are
// written out here, independently of src/errors/classify.cpp's rules, so a wrong rule fails a test.
// Cells where the operation does not return the errno expect the operation's "anything else" rule: accept backs off,
// every other operation fails, and the reason is `unclassified`.
#include <gtest/gtest.h>

#include <cerrno>
#include <future>
#include <initializer_list>
#include <system_error>

#include "transient/errors/classify.hpp"
#include "transient/errors/errors.hpp"

namespace {

using transient::action;
using transient::condition;
using transient::operation;

struct cell {
  action what;
  condition why;
};

// Expected verdicts for one row of that table; read and write share a column, bind and listen too.
struct row {
  std::initializer_list<int> errnos;
  cell accept, connect, transfer, setup;
};

const cell accept_unexpected{action::back_off, condition::unclassified};
const cell other_unexpected{action::fail, condition::unclassified};

void expect_row(const row& r) {
  for (const int e : r.errnos) {
    const std::error_code ec(e, std::system_category());
    const auto check = [&](operation op, cell expected) {
      const transient::verdict v = transient::classify(op, ec);
      EXPECT_EQ(v.what, expected.what) << to_string(op) << ' ' << transient::errno_name(e) << " action is "
                                       << to_string(v.what);
      EXPECT_EQ(v.why, expected.why) << to_string(op) << ' ' << transient::errno_name(e) << " reason is "
                                     << to_string(v.why);
      EXPECT_FALSE(v.advice.empty()) << to_string(op) << ' ' << transient::errno_name(e);
    };
    check(operation::accept, r.accept);
    check(operation::connect, r.connect);
    check(operation::read, r.transfer);
    check(operation::write, r.transfer);
    check(operation::bind, r.setup);
    check(operation::listen, r.setup);
  }
}

// A row of a failure on an established or connecting socket: connect, read and write close
// the socket for `why`; bind and listen do not return these errnos.
void expect_closing_row(std::initializer_list<int> errnos, cell accept, condition why) {
  expect_row({errnos, accept, {action::close, why}, {action::close, why}, other_unexpected});
}

TEST(Classify, WouldBlock) {
  expect_row({{EAGAIN, EWOULDBLOCK},
              {action::wait, condition::would_block},
              {action::back_off, condition::would_block},  // AF_UNIX backlog full
              {action::wait, condition::would_block},
              other_unexpected});
}

TEST(Classify, Interrupted) {
  expect_row({{EINTR},
              {action::retry, condition::interrupted},
              {action::wait, condition::interrupted},  // calling connect again is wrong
              {action::retry, condition::interrupted},
              {action::retry, condition::interrupted}});
}

TEST(Classify, InProgress) {
  expect_row({{EINPROGRESS, EALREADY},
              accept_unexpected,
              {action::wait, condition::in_progress},
              other_unexpected,
              other_unexpected});
}

TEST(Classify, AlreadyConnectedIsDoneForConnect) {
  expect_row(
      {{EISCONN}, accept_unexpected, {action::done, condition::already_connected}, other_unexpected, other_unexpected});
}

TEST(Classify, ConnectionFailed) {
  expect_closing_row({ECONNABORTED, EPROTO, ENOPROTOOPT}, {action::skip, condition::connection_failed},
                     condition::connection_failed);
}

TEST(Classify, NetworkUnreachable) {
  expect_closing_row({ENETDOWN, ENETUNREACH, EHOSTDOWN, EHOSTUNREACH, ENONET},
                     {action::skip, condition::connection_failed}, condition::network_unreachable);
}

TEST(Classify, Refused) { expect_closing_row({ECONNREFUSED}, accept_unexpected, condition::refused); }

TEST(Classify, TimedOut) { expect_closing_row({ETIMEDOUT}, accept_unexpected, condition::timed_out); }

TEST(Classify, PeerGone) {
  expect_closing_row({ECONNRESET, EPIPE, ESHUTDOWN}, {action::skip, condition::peer_gone}, condition::peer_gone);
}

TEST(Classify, NotConnected) {
  expect_row(
      {{ENOTCONN}, accept_unexpected, other_unexpected, {action::close, condition::not_connected}, other_unexpected});
}

TEST(Classify, ProcessDescriptorLimit) {
  expect_row({{EMFILE},
              {action::back_off, condition::process_fd_limit},
              {action::back_off, condition::process_fd_limit},
              other_unexpected,
              {action::back_off, condition::process_fd_limit}});  // from socket()
}

TEST(Classify, SystemDescriptorLimit) {
  expect_row({{ENFILE},
              {action::back_off, condition::system_fd_limit},
              {action::back_off, condition::system_fd_limit},
              other_unexpected,
              {action::back_off, condition::system_fd_limit}});
}

TEST(Classify, MemoryExhausted) {
  const cell back_off{action::back_off, condition::memory_exhausted};
  expect_row({{ENOBUFS, ENOMEM}, back_off, back_off, back_off, back_off});
}

TEST(Classify, AddressInUse) {
  expect_row({{EADDRINUSE},
              accept_unexpected,
              {action::retry, condition::address_in_use},  // 4-tuple clash: a new socket
              other_unexpected,
              {action::fail, condition::address_in_use}});
}

TEST(Classify, AddressUnavailable) {
  expect_row({{EADDRNOTAVAIL},
              accept_unexpected,
              {action::back_off, condition::address_unavailable},  // ephemeral ports exhausted
              other_unexpected,
              {action::fail, condition::address_unavailable}});
}

TEST(Classify, PermissionDenied) {
  const cell fail{action::fail, condition::permission_denied};
  expect_row({{EPERM, EACCES}, {action::skip, condition::permission_denied}, fail, fail, fail});
}

TEST(Classify, InvalidArgumentDependsOnTheOperation) {
  const cell bug{action::fail, condition::invalid_argument};
  expect_row({{EINVAL}, {action::fail, condition::not_listening}, bug, bug, bug});
}

TEST(Classify, NotSupported) {
  const cell fail{action::fail, condition::not_supported};
  expect_row({{EOPNOTSUPP}, fail, fail, fail, fail});
}

TEST(Classify, ProgrammingErrors) {
  const cell bug{action::fail, condition::programming_error};
  expect_row({{EBADF, ENOTSOCK, EFAULT, EAFNOSUPPORT}, bug, bug, bug, bug});
}

TEST(Classify, AnythingElse) {
  expect_row(
      {{ENOENT, EIO, ENOSPC, EHWPOISON}, accept_unexpected, other_unexpected, other_unexpected, other_unexpected});
}

TEST(Classify, GenericCategoryGivesTheSameVerdicts) {
  for (const int e : {EMFILE, EINVAL, ECONNRESET, EAGAIN}) {
    for (const auto op : {operation::accept, operation::connect, operation::read, operation::bind}) {
      EXPECT_EQ(transient::classify(op, std::error_code(e, std::generic_category())),
                transient::classify(op, std::error_code(e, std::system_category())));
    }
  }
  EXPECT_EQ(transient::classify(operation::accept, std::make_error_code(std::errc::too_many_files_open)).what,
            action::back_off);
}

TEST(Classify, SuccessIsNothingToClassify) {
  const transient::verdict v = transient::classify(operation::accept, std::error_code{});
  EXPECT_EQ(v.what, action::retry);
  EXPECT_EQ(v.why, condition::unclassified);
}

TEST(Classify, ErrnoBeyondLinuxTableFollowsAnythingElse) {
  EXPECT_EQ(transient::classify(operation::accept, std::error_code(4000, std::system_category())).what,
            action::back_off);
  EXPECT_EQ(transient::classify(operation::read, std::error_code(-1, std::system_category())).what, action::fail);
}

TEST(Classify, TransientOwnErrorsFail) {
  const auto stalled = transient::classify(operation::accept, transient::error::stalled);
  EXPECT_EQ(stalled.what, action::fail);
  EXPECT_EQ(stalled.why, condition::stalled);
  const auto dup = transient::classify(operation::listen, transient::error::duplicate_listener);
  EXPECT_EQ(dup.what, action::fail);
  EXPECT_EQ(dup.why, condition::duplicate_listener);
  EXPECT_EQ(transient::classify(operation::accept, transient::error::not_listening).why, condition::not_listening);
}

TEST(Classify, ForeignCategoryFollowsAnythingElse) {
  const auto ec = std::make_error_code(std::future_errc::broken_promise);
  EXPECT_EQ(transient::classify(operation::accept, ec).what, action::back_off);
  EXPECT_EQ(transient::classify(operation::write, ec).what, action::fail);
}

TEST(Classify, Names) {
  EXPECT_EQ(to_string(operation::listen), "listen");
  EXPECT_EQ(to_string(action::back_off), "back_off");
  EXPECT_EQ(transient::parse_operation("ACCEPT"), operation::accept);
  EXPECT_EQ(transient::parse_operation("Write"), operation::write);
  EXPECT_EQ(transient::parse_operation("accepts"), std::nullopt);
  EXPECT_EQ(transient::parse_operation("recv"), operation::read);
  EXPECT_EQ(transient::parse_operation("RecvMsg"), operation::read);
  EXPECT_EQ(transient::parse_operation("send"), operation::write);
  EXPECT_EQ(transient::parse_operation("accept4"), operation::accept);
  EXPECT_EQ(transient::parse_operation(""), std::nullopt);
}

}  // namespace
