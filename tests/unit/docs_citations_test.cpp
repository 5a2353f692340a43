// What the docs and the code cite exists, and each story is told once: every path the
// README and docs/ name is in the tree, every section a comment cites ("docs/design.md, "The
// spare descriptor"") is a heading of that document, the spare descriptor's story lives in
// docs/design.md alone, and no API comment quotes a benchmark.
//
// This file reads text with <regex>, whose automaton g++ 12 compiles at -O1 (the sanitizer
// presets) with a false -Wmaybe-uninitialized in <functional> and <regex>, both reached through
// the first include; the warning is off for this file alone, for g++.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <gtest/gtest.h>

#include <filesystem>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "support/source_tree.hpp"

namespace {

namespace fs = std::filesystem;

const fs::path root(TRANSIENT_SOURCE_DIR);

using transient::test::text_of;

// README.md and every document under docs/.
std::vector<fs::path> documents() {
  std::vector<fs::path> found{root / "README.md"};
  for (const auto& entry : fs::directory_iterator(root / "docs")) {
    if (entry.path().extension() == ".md") {
      found.push_back(entry.path());
    }
  }
  return found;
}

// The C++ sources under include/, src/ and tools/.
std::vector<fs::path> sources() {
  std::vector<fs::path> found;
  for (const char* top : {"include", "src", "tools"}) {
    for (const auto& entry : fs::recursive_directory_iterator(root / top)) {
      const auto extension = entry.path().extension();
      if (entry.is_regular_file() && (extension == ".hpp" || extension == ".cpp")) {
        found.push_back(entry.path());
      }
    }
  }
  return found;
}

// Every match of group `group` of `pattern` in `text`.
std::vector<std::string> matches(const std::string& text, const std::regex& pattern, int group) {
  std::vector<std::string> found;
  for (auto it = std::sregex_iterator(text.begin(), text.end(), pattern); it != std::sregex_iterator(); ++it) {
    found.push_back((*it)[group].str());
  }
  return found;
}

// The text of a source with its comments joined: a citation may wrap over comment lines.
std::string joined_comments(const std::string& text) {
  static const std::regex line_break(R"(\n[ \t]*//[/!<]?[ \t]*)");
  return std::regex_replace(text, line_break, " ");
}

// The headings of a document ("The spare descriptor" for "## The spare descriptor").
std::set<std::string> headings(const fs::path& document) {
  static const std::regex heading(R"((^|\n)#+ ([^\n]+))");
  const auto found = matches(text_of(document), heading, 2);
  return {found.begin(), found.end()};
}

// True if `name` begins one of the headings ("Kernel facts" cites "Kernel facts the code relies on").
bool has_heading(const std::set<std::string>& all, const std::string& name) {
  for (const std::string& h : all) {
    if (h.rfind(name, 0) == 0) {
      return true;
    }
  }
  return false;
}

TEST(DocsCitations, EveryPathTheDocsNameExists) {
  static const std::regex path(R"((^|[^\w/.-])((include|src|tools|examples|bench|tests|docs|scripts)/[\w./-]*\w))");
  static const std::regex header(R"(<transient/([\w/]+\.hpp)>)");
  std::size_t checked = 0;
  for (const fs::path& document : documents()) {
    const std::string text = text_of(document);
    std::vector<std::string> cited = matches(text, path, 2);
    for (const std::string& h : matches(text, header, 1)) {
      if (h != "version.hpp") {  // generated in the build tree
        cited.push_back("include/transient/" + h);
      }
    }
    for (const std::string& p : cited) {
      ++checked;
      EXPECT_TRUE(p.find("NAME") != std::string::npos || fs::exists(root / p))
          << document.filename().string() << " names " << p << ", which is not in the tree";
    }
  }
  EXPECT_GT(checked, 50U) << "too few paths found to be reading the docs";
}

// Every source file under the folders the docs cite, as paths relative to the tree.
std::vector<std::string> tree_files() {
  std::vector<std::string> found;
  for (const char* top : {"include", "src", "tools", "tests", "examples", "bench"}) {
    for (const auto& entry : fs::recursive_directory_iterator(root / top)) {
      if (entry.is_regular_file()) {
        found.push_back(entry.path().lexically_relative(root).string());
      }
    }
  }
  return found;
}

// True if some file of the tree ends with "/" + `name` ("server.hpp", "drivers/server.hpp").
bool in_tree(const std::vector<std::string>& files, const std::string& name) {
  const std::string tail = "/" + name;
  for (const std::string& file : files) {
    const std::string f = "/" + file;
    if (f.size() >= tail.size() && f.compare(f.size() - tail.size(), tail.size(), tail) == 0) {
      return true;
    }
  }
  return false;
}

TEST(DocsCitations, EverySourceTheDocsNameByFileNameExists) {
  static const std::regex named(R"(`((\w+/)?\w+\.[ch]pp)`)");
  const std::set<std::string> elsewhere{"version.hpp", "awaitable.hpp"};  // generated; Boost's
  const std::vector<std::string> files = tree_files();
  std::size_t checked = 0;
  for (const fs::path& document : documents()) {
    for (const std::string& name : matches(text_of(document), named, 1)) {
      ++checked;
      EXPECT_TRUE(elsewhere.count(name) != 0 || in_tree(files, name))
          << document.filename().string() << " names `" << name << "`, which is not in the tree";
    }
  }
  EXPECT_GT(checked, 20U) << "too few file names found to be reading the docs";
}

TEST(DocsCitations, EverySectionTheCodeCitesIsAHeading) {
  static const std::regex citation(R"re((docs/(\w+)\.md|README\.md)[,:]? \(?"([^"]+)")re");
  std::size_t checked = 0;
  for (const fs::path& source : sources()) {
    const std::string text = joined_comments(text_of(source));
    for (auto it = std::sregex_iterator(text.begin(), text.end(), citation); it != std::sregex_iterator(); ++it) {
      const fs::path document = (*it)[2].matched ? root / "docs" / ((*it)[2].str() + ".md") : root / "README.md";
      ++checked;
      EXPECT_TRUE(has_heading(headings(document), (*it)[3].str()))
          << source.lexically_relative(root).string() << " cites " << (*it)[0].str() << ": no such heading";
    }
  }
  EXPECT_GT(checked, 15U) << "too few citations found to be reading the sources";
}

TEST(DocsCitations, TheSpareDescriptorsStoryIsToldInDesignMdAlone) {
  EXPECT_NE(text_of(root / "docs" / "design.md").find("## The spare descriptor"), std::string::npos);
  std::vector<fs::path> elsewhere = sources();
  for (const fs::path& document : documents()) {
    if (document.filename() != "design.md") {
      elsewhere.push_back(document);
    }
  }
  for (const fs::path& file : elsewhere) {
    EXPECT_EQ(text_of(file).find("libuv"), std::string::npos)
        << file.lexically_relative(root).string() << " retells the spare descriptor's story: cite docs/design.md";
  }
}

TEST(DocsCitations, NoApiCommentQuotesABenchmark) {
  for (const fs::path& source : sources()) {
    if (source.lexically_relative(root).begin()->string() == "tools") {
      continue;  // the command's texts may name figures; the library's comments may not
    }
    const std::string text = text_of(source);
    EXPECT_EQ(text.find("transient_bench"), std::string::npos) << source.lexically_relative(root).string();
    EXPECT_EQ(text.find("µs"), std::string::npos) << source.lexically_relative(root).string();
  }
}

}  // namespace
