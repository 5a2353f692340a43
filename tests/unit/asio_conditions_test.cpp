// The error codes of the Asio under test (standalone or Boost, tests/unit/asio_support.hpp),
// converted to std::error_code as the adapter and users do, compare equal to transient's
// conditions: errno values of its system and generic categories, and its end of stream.
#include "support/asio_warnings.hpp"  // first: before any Asio header

#include <gtest/gtest.h>

#include <cerrno>
#include <system_error>

#include "asio_support.hpp"
#include "transient/errors/classify.hpp"
#include "transient/errors/errors.hpp"

namespace {

namespace net = transient::test::net;
using transient::condition;
using transient::test::net_error_code;

// `ec` matches `matched`, and classify() says `what` for it from `op`.
void expect_verdict(const std::error_code& ec, transient::operation op, condition matched, transient::action what) {
  EXPECT_TRUE(ec == matched) << ec.message();
  EXPECT_EQ(transient::classify(op, ec).what, what) << ec.message();
}

TEST(AsioConditions, SystemCategoryErrnoValuesMatchTheirConditions) {
  const std::error_code emfile = net_error_code(EMFILE, net::error::get_system_category());
  expect_verdict(emfile, transient::operation::accept, condition::process_fd_limit, transient::action::back_off);
  EXPECT_TRUE(emfile == condition::fd_exhausted);
  EXPECT_FALSE(emfile == condition::system_fd_limit);
  EXPECT_EQ(transient::errno_of(emfile), EMFILE);
  expect_verdict(net_error_code(net::error::connection_aborted), transient::operation::accept,
                 condition::connection_failed, transient::action::skip);
  const std::error_code reset = net_error_code(net::error::connection_reset);
  EXPECT_TRUE(reset == condition::peer_gone);
  EXPECT_FALSE(reset == condition::fd_exhausted);
}

TEST(AsioConditions, GenericCategoryErrnoValuesMatchTheirConditions) {
  const std::error_code enfile = net_error_code(ENFILE, transient::test::generic_category());
  EXPECT_TRUE(enfile == condition::fd_exhausted);
  EXPECT_TRUE(enfile == condition::system_fd_limit);
  EXPECT_EQ(transient::errno_of(enfile), ENFILE);
}

TEST(AsioConditions, EndOfStreamIsPeerGoneAndOtherMiscCodesAreUnclassified) {
  expect_verdict(net_error_code(net::error::eof), transient::operation::read, condition::peer_gone,
                 transient::action::close);
  const std::error_code not_found = net_error_code(net::error::not_found);
  EXPECT_TRUE(not_found == condition::unclassified);
  EXPECT_FALSE(not_found == condition::peer_gone);
  EXPECT_EQ(transient::errno_of(not_found), 0);
}

}  // namespace
