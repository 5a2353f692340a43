// Another process's command line reaches human output escaped: a holder whose argv carries
// an escape sequence or a newline can neither break a line nor colour a terminal, in `who`'s
// table and in serve's "held by" message; `who --json` carries it as it is, JSON-escaped.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <string>

#include "support/loopback.hpp"
#include "support/run_command.hpp"
#include "support/spawned_process.hpp"
#include "transient/sockets/listener.hpp"

namespace {

using namespace std::chrono_literals;
using testing::HasSubstr;
using testing::Not;
using transient::test::spawned_process;

TEST(Printable, EscapesControlCharactersAndTheBackslashOnly) {
  EXPECT_EQ(transient::printable("plain text: /usr/bin/x --a=1"), "plain text: /usr/bin/x --a=1");
  EXPECT_EQ(transient::printable("a\nb\tc\rd"), "a\\nb\\tc\\rd");
  EXPECT_EQ(transient::printable("\x1b[31mred\x7f"), "\\x1b[31mred\\x7f");
  EXPECT_EQ(transient::printable("back\\slash"), "back\\\\slash");
  EXPECT_EQ(transient::printable(std::string("nul\0byte", 8)), "nul\\x00byte");
  EXPECT_EQ(transient::printable("caf\xc3\xa9"), "caf\xc3\xa9") << "UTF-8 text is printable as it is";
}

// A `transient serve` whose argv[0] is `name` (bash's exec -a), listening on a port of the
// kernel's choice; the port.
class disguised_holder {
 public:
  explicit disguised_holder(const std::string& name)
      : process_("/bin/bash", {"-c", "exec -a \"$1\" \"$0\" serve --listen 127.0.0.1:0", TRANSIENT_CLI_PATH, name}) {
    const std::string line = process_.read_line(spawned_process::stream::out, 5s);
    const std::size_t colon = line.rfind(':');
    if (line.rfind("listening on 127.0.0.1:", 0) == 0 && colon != std::string::npos) {
      port_ = std::stoi(line.substr(colon + 1));
    }
  }
  [[nodiscard]] int port() const { return port_; }

 private:
  spawned_process process_;
  int port_ = 0;
};

const std::string evil = "evil\x1b[31m\nFAKE LINE\x07";
const std::string evil_escaped = "evil\\x1b[31m\\nFAKE LINE\\x07";

TEST(Printable, WhoEscapesAHoldersCommandLineInItsTableNotInJson) {
  const disguised_holder holder(evil);
  ASSERT_NE(holder.port(), 0);
  const auto table = transient::test::run_command(TRANSIENT_CLI_PATH, {"who", std::to_string(holder.port())}, 10s);
  EXPECT_EQ(table.exit_code, 0) << table.err;
  EXPECT_THAT(table.out, HasSubstr(evil_escaped));
  EXPECT_THAT(table.out, Not(HasSubstr("\x1b"))) << "a raw escape reached the terminal";
  EXPECT_THAT(table.out, Not(HasSubstr("\nFAKE LINE"))) << "the command line broke the table's line";
  const auto json =
      transient::test::run_command(TRANSIENT_CLI_PATH, {"who", std::to_string(holder.port()), "--json"}, 10s);
  EXPECT_THAT(json.out, HasSubstr("evil\\u001b[31m\\nFAKE LINE\\u0007"));
}

TEST(Printable, ServeEscapesTheHolderInItsAddressInUseMessage) {
  const disguised_holder holder(evil);
  ASSERT_NE(holder.port(), 0);
  const auto r = transient::test::run_command(TRANSIENT_CLI_PATH,
                                              {"serve", "--listen", "127.0.0.1:" + std::to_string(holder.port())}, 10s);
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_THAT(r.err, HasSubstr("held by pid "));
  EXPECT_THAT(r.err, HasSubstr(evil_escaped));
  EXPECT_THAT(r.err, Not(HasSubstr("\x1b")));
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
}

}  // namespace
