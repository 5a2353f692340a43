// The other platforms' tables, looked up on Linux: names and numbers both ways, and the
// verdicts their codes get through their Linux equivalents.
#include "transient/errors/classify.hpp"

#include <gtest/gtest.h>

#include <cerrno>
#include <set>
#include <string>

#include "support/run_command.hpp"

namespace {

using transient::action;
using transient::condition;
using transient::operation;
using transient::platform;

TEST(PlatformErrors, WindowsAcceptCodesFromAcceptEx) {
  const auto emfile = transient::find_platform_error(platform::windows, "wsaemfile");
  ASSERT_TRUE(emfile);
  EXPECT_EQ(emfile->value, 10024);
  EXPECT_EQ(emfile->linux_errno, EMFILE);
  const transient::verdict v = transient::classify(platform::windows, operation::accept, 10024);
  EXPECT_EQ(v.what, action::back_off);
  EXPECT_EQ(v.why, condition::process_fd_limit);
  EXPECT_EQ(transient::classify(platform::windows, operation::accept, 10055).why, condition::memory_exhausted);
  EXPECT_EQ(transient::classify(platform::windows, operation::accept, 10054).what, action::skip);  // WSAECONNRESET
  EXPECT_EQ(transient::classify(platform::windows, operation::accept, 64).what, action::skip);     // NETNAME_DELETED
  EXPECT_EQ(transient::classify(platform::windows, operation::read, 10035).what, action::wait);    // WSAEWOULDBLOCK
  EXPECT_EQ(transient::classify(platform::windows, operation::connect, 10061).what, action::close);
  EXPECT_EQ(transient::classify(platform::windows, operation::bind, 10048).why, condition::address_in_use);
}

TEST(PlatformErrors, BsdNumbersDifferFromLinuxAndMeanTheSame) {
  EXPECT_EQ(transient::find_platform_error(platform::freebsd, "ECONNABORTED")->value, 53);
  EXPECT_EQ(transient::classify(platform::freebsd, operation::accept, 53).what, action::skip);
  EXPECT_EQ(transient::classify(platform::macos, operation::accept, 53).what, action::skip);
  EXPECT_EQ(transient::classify(platform::freebsd, operation::accept, 35).what, action::wait);  // EAGAIN
  EXPECT_EQ(transient::find_platform_error(platform::macos, "EWOULDBLOCK")->value, 35);
  EXPECT_EQ(transient::classify(platform::macos, operation::accept, 24).why, condition::process_fd_limit);
  EXPECT_EQ(transient::find_platform_error(platform::macos, "EPROTO")->value, 100);
  EXPECT_EQ(transient::find_platform_error(platform::freebsd, "EPROTO")->value, 92);
  // 104 is ECONNRESET on Linux and nothing here on FreeBSD: the rule for anything else.
  EXPECT_EQ(transient::classify(platform::freebsd, operation::accept, 104).why, condition::unclassified);
  EXPECT_EQ(transient::classify(platform::linux_os, operation::accept, 104).why, condition::peer_gone);
}

TEST(PlatformErrors, TablesAreAscendingWithUniqueNamesAndValues) {
  for (const platform p : {platform::linux_os, platform::freebsd, platform::macos, platform::windows}) {
    std::set<std::string> names;
    int last = 0;
    for (const transient::platform_error& e : transient::platform_errors(p)) {
      EXPECT_GT(e.value, last) << to_string(p) << ' ' << e.name;
      last = e.value;
      EXPECT_TRUE(names.insert(std::string(e.name)).second) << to_string(p) << ' ' << e.name;
      EXPECT_GT(e.linux_errno, 0) << e.name;
      EXPECT_EQ(transient::find_platform_error(p, e.value)->name, e.name);
      EXPECT_EQ(transient::find_platform_error(p, e.name)->value, e.value);
    }
    EXPECT_GT(names.size(), 30U) << to_string(p);
    EXPECT_EQ(transient::parse_platform(to_string(p)), p);
  }
  EXPECT_FALSE(transient::parse_platform("plan9"));
  EXPECT_EQ(transient::native_platform, platform::linux_os);
}

TEST(PlatformErrors, ExplainNamesAndNumbers) {
  const auto by_name =
      transient::test::run_command(TRANSIENT_CLI_PATH, {"explain", "--platform", "windows", "accept", "WSAEMFILE"});
  EXPECT_EQ(by_name.exit_code, 0) << by_name.err;
  EXPECT_EQ(by_name.out.rfind("accept WSAEMFILE (10024 on windows): back_off\n", 0), 0U) << by_name.out;
  const auto by_number =
      transient::test::run_command(TRANSIENT_CLI_PATH, {"explain", "--platform=windows", "accept", "10024"});
  EXPECT_EQ(by_number.out, by_name.out);
  const auto unknown =
      transient::test::run_command(TRANSIENT_CLI_PATH, {"explain", "--platform", "windows", "accept", "EMFILE"});
  EXPECT_EQ(unknown.exit_code, 2);
  const auto bad = transient::test::run_command(TRANSIENT_CLI_PATH, {"explain", "--platform", "beos", "accept", "1"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("unknown platform"), std::string::npos) << bad.err;
}

}  // namespace
