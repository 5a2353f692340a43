// The syscall seam stays out of the headers users include (issue 23): only
// <transient/testing/syscalls.hpp> defines transient::syscalls, and no other public header
// includes it, so a user of the drivers or of listen() does not get the seam nor, through it,
// <sys/socket.h>, <sys/epoll.h> and <unistd.h>. Read from the sources, and checked at compile
// time in this translation unit, which includes the server's header and no other of the library.
#include <gtest/gtest.h>

#include <filesystem>
#include <sstream>
#include <string>

#include "support/source_tree.hpp"
#include "transient/drivers/server.hpp"

namespace {

namespace fs = std::filesystem;

const fs::path include_dir = fs::path(TRANSIENT_SOURCE_DIR) / "include" / "transient";
const fs::path seam_header = fs::path("testing") / "syscalls.hpp";

// True where T is a complete type at the point of instantiation, here: only this translation
// unit's includes decide it.
template <typename T>
constexpr bool complete = requires {
  sizeof(T);
};

using transient::test::text_of;

// The #include lines of `text` that name the seam's header.
std::string seam_includes(const std::string& text) {
  std::istringstream lines(text);
  std::string found;
  for (std::string line; std::getline(lines, line);) {
    if (line.find("#include") != std::string::npos && line.find(seam_header.string()) != std::string::npos) {
      found += line + '\n';
    }
  }
  return found;
}

TEST(SeamHeader, NoPublicHeaderButTheSeamsOwnIncludesIt) {
  int scanned = 0;
  for (const auto& entry : fs::recursive_directory_iterator(include_dir)) {
    const fs::path relative = fs::relative(entry.path(), include_dir);
    if (!entry.is_regular_file() || entry.path().extension() != ".hpp" || relative == seam_header) {
      continue;
    }
    ++scanned;
    EXPECT_EQ(seam_includes(text_of(entry.path())), "") << relative;
  }
  EXPECT_GT(scanned, 10) << include_dir;
  EXPECT_NE(seam_includes("#include \"transient/testing/syscalls.hpp\"\n"), "") << "the scan finds an include";
}

TEST(SeamHeader, TheServersHeaderLeavesTheTableIncomplete) {
  EXPECT_FALSE(complete<transient::syscalls>) << "drivers/server.hpp defines transient::syscalls";
  EXPECT_TRUE(complete<transient::server_options>);
}

TEST(SeamHeader, TheOptionsHoldTheSeamByPointerDefaultingToTheRealCalls) {
  EXPECT_EQ(transient::server_options{}.sys, nullptr);
  EXPECT_EQ(transient::acceptor_options{}.sys, nullptr);
  EXPECT_EQ(transient::listen_options{}.sys, nullptr);
}

}  // namespace
