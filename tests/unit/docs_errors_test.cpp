// docs/errors.md carries the output of `transient explain --table [--platform P]`, unchanged:
// each table follows a line "<!-- transient explain ARGS -->" naming the command that prints it.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "support/run_command.hpp"

namespace {

std::string errors_md() {
  std::ifstream in(TRANSIENT_SOURCE_DIR "/docs/errors.md");
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// The table after the marker line of `args`: up to the next blank line or the end.
std::string table_after(const std::string& doc, const std::string& args) {
  const std::string marker = "<!-- transient " + args + " -->\n";
  const std::size_t at = doc.find(marker);
  if (at == std::string::npos) {
    return "(no line '" + marker + "')";
  }
  const std::size_t start = at + marker.size();
  const std::size_t end = doc.find("\n\n", start);
  return doc.substr(start, end == std::string::npos ? std::string::npos : end + 1 - start);
}

TEST(DocsErrors, EachTableEqualsItsExplainTable) {
  const std::string doc = errors_md();
  ASSERT_FALSE(doc.empty()) << "docs/errors.md is missing";
  const std::vector<std::vector<std::string>> commands{{"explain", "--table"},
                                                       {"explain", "--table", "--platform", "freebsd"},
                                                       {"explain", "--table", "--platform", "macos"},
                                                       {"explain", "--table", "--platform", "windows"}};
  for (const auto& command : commands) {
    std::string args;
    for (const auto& word : command) {
      args += (args.empty() ? "" : " ") + word;
    }
    const auto r = transient::test::run_command(TRANSIENT_CLI_PATH, command);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    ASSERT_GT(r.out.size(), 200U) << args << " printed no table";
    EXPECT_EQ(table_after(doc, args), r.out)
        << "docs/errors.md differs from `transient " << args << "`: replace its table with that output";
  }
}

TEST(DocsErrors, LinuxTableIsTheDefault) {
  const auto plain = transient::test::run_command(TRANSIENT_CLI_PATH, {"explain", "--table"});
  const auto linux_table =
      transient::test::run_command(TRANSIENT_CLI_PATH, {"explain", "--table", "--platform", "linux"});
  EXPECT_EQ(plain.out, linux_table.out);
}

}  // namespace
