// docs/errors.md carries the output of `transient explain --table`, unchanged.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>

#include "support/run_command.hpp"

TEST(DocsErrors, TableEqualsExplainTable) {
  std::ifstream in(TRANSIENT_SOURCE_DIR "/docs/errors.md");
  ASSERT_TRUE(in) << "docs/errors.md is missing";
  std::stringstream text;
  text << in.rdbuf();
  const std::string doc = text.str();
  const auto r = transient::test::run_command(TRANSIENT_CLI_PATH, {"explain", "--table"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::size_t table = doc.find("| errno |");
  ASSERT_NE(table, std::string::npos) << "docs/errors.md has no table";
  EXPECT_EQ(doc.substr(table), r.out)
      << "docs/errors.md differs from `transient explain --table`: replace its table with that output";
}
