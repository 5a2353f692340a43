// The repository's own files, for tests that read sources and documents (TRANSIENT_SOURCE_DIR
// is the source tree, set by tests/CMakeLists.txt).
#pragma once

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace transient::test {

/// The root of the source tree.
inline const std::filesystem::path& source_root() {
  static const std::filesystem::path root(TRANSIENT_SOURCE_DIR);
  return root;
}

/// The whole text of `path` (empty if it cannot be read).
inline std::string text_of(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace transient::test
