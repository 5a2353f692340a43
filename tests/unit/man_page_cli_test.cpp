// The man page (transient.1) against the command itself: it documents every command that
// `transient --help` lists and every flag each command's --help names, each command's option
// table and its man page entries name the same options, and the page carries the version that
// `transient --version` prints. So a new flag without its man page entry fails here, and so
// does an entry for a flag the command no longer has.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "support/run_command.hpp"
#include "transient/version.hpp"

namespace {

using transient::test::command_result;
using transient::test::run_command;

// No <regex> here: g++ 12 at -O1 (the sanitizer presets) raises a false -Wmaybe-uninitialized
// inside it. The scans below are plain loops.

// The page's source with roff's escaped hyphens ("\\-") made plain.
std::string man_page_text() {
  std::ifstream in(std::string(TRANSIENT_SOURCE_DIR) + "/transient.1");
  std::stringstream source;
  source << in.rdbuf();
  std::string text = source.str();
  for (std::size_t at = text.find("\\-"); at != std::string::npos; at = text.find("\\-", at)) {
    text.erase(at, 1);
  }
  return text;
}

bool is_lower(char c) { return c >= 'a' && c <= 'z'; }

// The commands `transient --help` lists: the lines "  NAME  summary" after "commands:".
std::vector<std::string> listed_commands() {
  const command_result help = run_command(TRANSIENT_CLI_PATH, {"--help"});
  EXPECT_EQ(help.exit_code, 0) << help.err;
  std::vector<std::string> names;
  std::istringstream lines(help.out.substr(help.out.find("commands:")));
  for (std::string line; std::getline(lines, line);) {
    if (line.size() < 3 || line.compare(0, 2, "  ") != 0 || !is_lower(line[2])) {
      continue;
    }
    std::size_t end = 2;
    while (end < line.size() && is_lower(line[end])) {
      ++end;
    }
    if (line.compare(end, 2, "  ") == 0) {
      names.push_back(line.substr(2, end - 2));
    }
  }
  return names;
}

// Every "--flag" in a text (a lowercase word after two dashes, hyphens inside).
std::set<std::string> flags_in(const std::string& text) {
  std::set<std::string> flags;
  for (std::size_t at = text.find("--"); at != std::string::npos; at = text.find("--", at + 2)) {
    std::size_t end = at + 2;
    while (end < text.size() && (is_lower(text[end]) || (text[end] == '-' && end > at + 2))) {
      ++end;
    }
    while (end > at + 2 && text[end - 1] == '-') {
      --end;
    }
    if (end - at > 3) {
      flags.insert(text.substr(at, end - at));
    }
  }
  return flags;
}

TEST(ManPage, DocumentsEveryCommandAndEveryFlag) {
  const std::string page = man_page_text();
  ASSERT_FALSE(page.empty()) << "transient.1 not found in " << TRANSIENT_SOURCE_DIR;
  const std::vector<std::string> commands = listed_commands();
  ASSERT_GE(commands.size(), 4U);
  for (const std::string& command : commands) {
    EXPECT_NE(page.find(".SS \"transient " + command), std::string::npos) << "no section for " << command;
    const command_result help = run_command(TRANSIENT_CLI_PATH, {command, "--help"});
    EXPECT_EQ(help.exit_code, 0) << command << ": " << help.err;
    for (const std::string& flag : flags_in(help.out)) {
      EXPECT_NE(page.find(flag), std::string::npos)
          << "transient " << command << " " << flag << " is not in transient.1";
    }
  }
}

// The options of a command's table, as its --help lists them: the lines of its option groups
// that start with "  -" ("  -h,--help", "  --listen ADDRESS"), less --help, which every
// command takes (the page says so once).
std::set<std::string> table_options(const std::string& command) {
  const command_result help = run_command(TRANSIENT_CLI_PATH, {command, "--help"});
  EXPECT_EQ(help.exit_code, 0) << command << ": " << help.err;
  std::set<std::string> options;
  std::istringstream lines(help.out);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("  -", 0) != 0) {
      continue;
    }
    const std::string names = line.substr(2, line.find(' ', 2) - 2);  // "-h,--help" or "--listen"
    for (std::size_t at = names.find("--"); at != std::string::npos; at = names.find("--", at + 2)) {
      options.insert(names.substr(at, names.find(',', at) - at));
    }
  }
  options.erase("--help");
  return options;
}

// The options that the page's sections for `command` (".SS \"transient COMMAND ...", up to the
// next section) give entries: the flag that starts each line after ".TP" (".BI --listen \"
// ADDRESS\"", roff's "\-" made plain).
std::set<std::string> page_options(const std::string& page, const std::string& command) {
  std::set<std::string> options;
  std::istringstream lines(page);
  bool in_section = false;
  bool after_tp = false;
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind(".SS ", 0) == 0 || line.rfind(".SH ", 0) == 0) {
      in_section = line.rfind(".SS \"transient " + command + " ", 0) == 0;
    } else if (in_section && after_tp && line.rfind(".B", 0) == 0 && line.find(" --") != std::string::npos) {
      const std::size_t at = line.find(" --") + 1;
      std::size_t end = at + 2;
      while (end < line.size() && (is_lower(line[end]) || line[end] == '-')) {
        ++end;
      }
      options.insert(line.substr(at, end - at));
    }
    after_tp = line == ".TP";
  }
  return options;
}

TEST(ManPage, ListsEachCommandsOptionsAndNoOther) {
  const std::string page = man_page_text();
  ASSERT_FALSE(page.empty()) << "transient.1 not found in " << TRANSIENT_SOURCE_DIR;
  for (const std::string& command : listed_commands()) {
    const std::set<std::string> table = table_options(command);
    const std::set<std::string> documented = page_options(page, command);
    EXPECT_FALSE(table.empty()) << command;
    for (const std::string& option : table) {
      EXPECT_TRUE(documented.count(option) == 1)
          << "transient " << command << " " << option << " has no entry in transient.1";
    }
    for (const std::string& option : documented) {
      EXPECT_TRUE(table.count(option) == 1) << "transient.1 has an entry for transient " << command << " " << option
                                            << ", which the command does not take";
    }
  }
}

TEST(ManPage, CarriesTheVersionTheCommandPrints) {
  const command_result version = run_command(TRANSIENT_CLI_PATH, {"--version"});
  EXPECT_EQ(version.exit_code, 0);
  EXPECT_EQ(version.out, std::string("transient ") + TRANSIENT_VERSION_STRING + "\n");
  EXPECT_THAT(man_page_text(), testing::HasSubstr(std::string("\"transient ") + TRANSIENT_VERSION_STRING + "\""));
}

}  // namespace
