// One naming style for the tests: every GoogleTest suite, fixture, test and instantiation
// prefix in tests/ is PascalCase (GoogleTest reserves underscores in these names, and `ctest -R`
// filters stay guessable when every name is written one way). This test reads the sources and
// lists each name written another way.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

namespace {

// The macros whose first two arguments are names (a suite, then a test, fixture or nothing).
constexpr std::array<std::string_view, 10> naming_macros = {"TEST",
                                                            "TEST_F",
                                                            "TEST_P",
                                                            "TYPED_TEST",
                                                            "TYPED_TEST_P",
                                                            "TYPED_TEST_SUITE",
                                                            "TYPED_TEST_SUITE_P",
                                                            "INSTANTIATE_TEST_SUITE_P",
                                                            "INSTANTIATE_TYPED_TEST_SUITE_P",
                                                            "REGISTER_TYPED_TEST_SUITE_P"};

bool is_pascal_case(std::string_view name) {
  if (name.empty() || std::isupper(static_cast<unsigned char>(name.front())) == 0) {
    return false;
  }
  for (const char c : name) {
    if (std::isalnum(static_cast<unsigned char>(c)) == 0) {
      return false;
    }
  }
  return true;
}

std::string trimmed(std::string_view text) {
  const auto first = text.find_first_not_of(" \t\n");
  const auto last = text.find_last_not_of(" \t\n");
  return first == std::string_view::npos ? std::string() : std::string(text.substr(first, last - first + 1));
}

// The first two comma-separated arguments of a macro call whose '(' is at `open`.
std::vector<std::string> leading_names(std::string_view text, std::size_t open) {
  const auto close = text.find(')', open);
  std::vector<std::string> names;
  std::size_t start = open + 1;
  while (names.size() < 2 && start < close) {
    const auto comma = std::min(text.find(',', start), close);
    names.push_back(trimmed(text.substr(start, comma - start)));
    start = comma + 1;
  }
  return names;
}

// The names a source defines with the macros above, each as "MACRO: name"; only macro calls
// that begin a line count (not the words in comments or strings).
std::vector<std::string> names_in(std::string_view text) {
  std::vector<std::string> found;
  std::size_t line = 0;
  while (line < text.size()) {
    const auto start = text.find_first_not_of(" \t", line);
    for (const std::string_view macro : naming_macros) {
      if (start != std::string_view::npos && text.substr(start, macro.size() + 1) == std::string(macro) + "(") {
        for (const std::string& name : leading_names(text, start + macro.size())) {
          found.push_back(std::string(macro) + ": " + name);
        }
      }
    }
    const auto end = text.find('\n', line);
    line = end == std::string_view::npos ? text.size() : end + 1;
  }
  return found;
}

std::vector<std::string> names_not_pascal_case(std::string_view text) {
  std::vector<std::string> bad;
  for (const std::string& entry : names_in(text)) {
    if (!is_pascal_case(std::string_view(entry).substr(entry.find(": ") + 2))) {
      bad.push_back(entry);
    }
  }
  return bad;
}

std::string contents(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

TEST(TestNames, TheScannerFindsSuiteTestAndInstantiationNames) {
  const std::string source =
      "TEST(Good, AlsoGood) {}\n"
      "  TEST_F(snake_suite, GoodTest) {}\n"
      "TYPED_TEST_P(Cases,\n    snake_test) {}\n"
      "INSTANTIATE_TYPED_TEST_SUITE_P(lower, Cases, int);\n"
      "// TEST(in_a_comment, not_counted)\n";
  EXPECT_EQ(names_in(source), (std::vector<std::string>{
                                  "TEST: Good", "TEST: AlsoGood", "TEST_F: snake_suite", "TEST_F: GoodTest",
                                  "TYPED_TEST_P: Cases", "TYPED_TEST_P: snake_test",
                                  "INSTANTIATE_TYPED_TEST_SUITE_P: lower", "INSTANTIATE_TYPED_TEST_SUITE_P: Cases"}));
  EXPECT_EQ(names_not_pascal_case(source), (std::vector<std::string>{"TEST_F: snake_suite", "TYPED_TEST_P: snake_test",
                                                                     "INSTANTIATE_TYPED_TEST_SUITE_P: lower"}));
  EXPECT_FALSE(is_pascal_case("Has_Underscore"));
  EXPECT_TRUE(is_pascal_case("Ipv6Rows"));
}

TEST(TestNames, EverySuiteAndTestInTestsIsPascalCase) {
  const std::filesystem::path root = std::filesystem::path(TRANSIENT_SOURCE_DIR) / "tests";
  std::size_t names = 0;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(root)) {
    const auto extension = entry.path().extension();
    if (!entry.is_regular_file() || (extension != ".cpp" && extension != ".hpp")) {
      continue;
    }
    const std::string text = contents(entry.path());
    names += names_in(text).size();
    for (const std::string& bad : names_not_pascal_case(text)) {
      ADD_FAILURE() << entry.path().lexically_relative(root).string() << ": " << bad << " is not PascalCase";
    }
  }
  EXPECT_GT(names, 500U) << "the scan found too few test names to be reading tests/unit";
}

}  // namespace
