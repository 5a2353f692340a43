// condition: `ec == transient::condition::X` for system, generic, Asio and transient codes.
#include <gtest/gtest.h>

#include <asio/error.hpp>
#include <cerrno>
#include <future>
#include <set>
#include <system_error>
#include <utility>
#include <vector>

#include "transient/errors/errors.hpp"

namespace {

using transient::condition;

// The exact set of conditions a code matches, to compare with a written-out expectation.
std::set<condition> matched(const std::error_code& ec) {
  std::set<condition> found;
  for (const condition c : transient::all_conditions) {
    if (ec == c) {
      found.insert(c);
    }
  }
  return found;
}

std::error_code sys(int e) { return {e, std::system_category()}; }
std::error_code gen(int e) { return {e, std::generic_category()}; }

TEST(Condition, CategoryName) {
  EXPECT_STREQ(transient::condition_category().name(), "transient");
  EXPECT_STREQ(transient::error_category().name(), "transient.error");
  const std::error_condition c = condition::fd_exhausted;
  EXPECT_EQ(&c.category(), &transient::condition_category());
  EXPECT_FALSE(c.message().empty());
}

TEST(Condition, OneCodeMatchesSeveralConditions) {
  EXPECT_EQ(matched(sys(ENFILE)),
            (std::set{condition::fd_exhausted, condition::system_fd_limit, condition::resource_exhausted}));
  EXPECT_EQ(matched(sys(EMFILE)),
            (std::set{condition::fd_exhausted, condition::process_fd_limit, condition::resource_exhausted}));
  EXPECT_EQ(matched(sys(ENOBUFS)), (std::set{condition::memory_exhausted, condition::resource_exhausted}));
  EXPECT_EQ(matched(sys(ENOMEM)), (std::set{condition::memory_exhausted, condition::resource_exhausted}));
  EXPECT_EQ(matched(sys(EHOSTUNREACH)), (std::set{condition::connection_failed, condition::network_unreachable}));
}

TEST(Condition, ConditionsOfEveryErrorsMdRow) {
  // Each row of docs/errors.md: its errnos, and the exact set of conditions each matches.
  const std::vector<std::pair<std::vector<int>, std::set<condition>>> rows = {
      {{EAGAIN, EWOULDBLOCK}, {condition::would_block}},
      {{EINTR}, {condition::interrupted}},
      {{EINPROGRESS, EALREADY}, {condition::in_progress}},
      {{EISCONN}, {condition::already_connected}},
      {{ECONNABORTED, EPROTO, ENOPROTOOPT}, {condition::connection_failed}},
      {{ENETDOWN, ENETUNREACH, EHOSTDOWN, EHOSTUNREACH, ENONET},
       {condition::connection_failed, condition::network_unreachable}},
      {{ECONNREFUSED}, {condition::refused}},
      {{ETIMEDOUT}, {condition::timed_out}},
      {{ECONNRESET, EPIPE, ESHUTDOWN}, {condition::peer_gone}},
      {{ENOTCONN}, {condition::not_connected}},
      {{EADDRINUSE}, {condition::address_in_use}},
      {{EADDRNOTAVAIL}, {condition::address_unavailable}},
      {{EPERM, EACCES}, {condition::permission_denied}},
      {{EINVAL}, {condition::invalid_argument}},
      {{EOPNOTSUPP}, {condition::not_supported}},
      {{EBADF, ENOTSOCK, EFAULT, EAFNOSUPPORT}, {condition::programming_error}},
  };
  for (const auto& [errnos, conditions] : rows) {
    for (const int e : errnos) {
      EXPECT_EQ(matched(sys(e)), conditions) << e;
    }
  }
}

TEST(Condition, GenericCategoryIsEquivalentToSystemCategory) {
  for (int e = 1; e <= 140; ++e) {
    EXPECT_EQ(matched(gen(e)), matched(sys(e))) << "errno " << e;
  }
  EXPECT_TRUE(std::make_error_code(std::errc::too_many_files_open) == condition::process_fd_limit);
  EXPECT_TRUE(std::make_error_code(std::errc::too_many_files_open_in_system) == condition::system_fd_limit);
  EXPECT_TRUE(std::make_error_code(std::errc::connection_reset) == condition::peer_gone);
}

TEST(Condition, AsioErrorCodes) {
  // Standalone Asio 1.22's error codes are std::error_codes in its own "asio.system"
  // category (errno values that it does not map to the generic category) and "asio.misc".
  const std::error_code no_descriptors = asio::error::no_descriptors;
  EXPECT_TRUE(no_descriptors == condition::fd_exhausted);
  EXPECT_TRUE(no_descriptors == condition::process_fd_limit);
  EXPECT_FALSE(no_descriptors == condition::system_fd_limit);
  EXPECT_TRUE(std::error_code(asio::error::would_block) == condition::would_block);
  EXPECT_TRUE(std::error_code(asio::error::connection_aborted) == condition::connection_failed);
  EXPECT_TRUE(std::error_code(asio::error::connection_reset) == condition::peer_gone);
  EXPECT_TRUE(std::error_code(asio::error::no_buffer_space) == condition::memory_exhausted);
  EXPECT_TRUE(std::error_code(asio::error::address_in_use) == condition::address_in_use);
  EXPECT_TRUE(std::error_code(asio::error::interrupted) == condition::interrupted);
  EXPECT_TRUE(std::error_code(asio::error::eof) == condition::peer_gone);
  EXPECT_FALSE(std::error_code(asio::error::eof) == condition::fd_exhausted);
  EXPECT_EQ(matched(asio::error::already_open), std::set{condition::unclassified});
}

TEST(Condition, TransientErrors) {
  EXPECT_EQ(matched(transient::error::stalled), std::set{condition::stalled});
  EXPECT_EQ(matched(transient::error::duplicate_listener), std::set{condition::duplicate_listener});
  EXPECT_EQ(matched(transient::error::not_listening), std::set{condition::not_listening});
  EXPECT_EQ(matched(transient::error::port_range_exhausted), std::set{condition::address_in_use});
  EXPECT_EQ(matched(transient::error::invalid_endpoint), std::set{condition::invalid_argument});
  const std::error_code ec = transient::error::stalled;
  EXPECT_FALSE(ec.message().empty());
  EXPECT_EQ(transient::to_string(transient::error::port_range_exhausted), "port_range_exhausted");
}

TEST(Condition, CodeOutsideEveryConditionComparesFalse) {
  EXPECT_TRUE(matched(std::error_code{}).empty());  // success
  EXPECT_TRUE(matched(std::error_code(0, std::generic_category())).empty());
  // A known errno outside the table matches only `unclassified`, nothing that invites a retry.
  EXPECT_EQ(matched(sys(ENOENT)), std::set{condition::unclassified});
  EXPECT_FALSE(sys(ENOENT) == condition::fd_exhausted);
  EXPECT_FALSE(sys(EMFILE) == condition::system_fd_limit);
  EXPECT_FALSE(sys(ECONNRESET) == condition::connection_failed);
  EXPECT_EQ(matched(std::make_error_code(std::future_errc::broken_promise)), std::set{condition::unclassified});
}

TEST(Condition, PredicatesCompose) {
  const auto retry_later = [](const std::error_code& ec) {
    return ec == condition::fd_exhausted || ec == condition::memory_exhausted;
  };
  EXPECT_TRUE(retry_later(sys(EMFILE)));
  EXPECT_TRUE(retry_later(gen(ENOBUFS)));
  EXPECT_TRUE(retry_later(asio::error::no_memory));
  EXPECT_FALSE(retry_later(sys(ECONNRESET)));
  EXPECT_TRUE(transient::matches(sys(ENFILE), condition::resource_exhausted));
}

TEST(Condition, NamesRoundTrip) {
  for (const condition c : transient::all_conditions) {
    condition parsed{};
    ASSERT_TRUE(transient::from_string(to_string(c), parsed)) << to_string(c);
    EXPECT_EQ(parsed, c);
  }
  condition parsed{};
  EXPECT_FALSE(transient::from_string("fd_exhaustion", parsed));
  EXPECT_EQ(to_string(static_cast<condition>(999)), "unknown");
  EXPECT_EQ(to_string(condition::fd_exhausted), "fd_exhausted");
  EXPECT_EQ(to_string(condition::unclassified), "unclassified");
}

TEST(Condition, ErrnoOf) {
  EXPECT_EQ(transient::errno_of(sys(EMFILE)), EMFILE);
  EXPECT_EQ(transient::errno_of(gen(EMFILE)), EMFILE);
  EXPECT_EQ(transient::errno_of(asio::error::no_descriptors), EMFILE);
  EXPECT_EQ(transient::errno_of(std::error_code{}), 0);
  EXPECT_EQ(transient::errno_of(transient::error::stalled), 0);
}

}  // namespace
