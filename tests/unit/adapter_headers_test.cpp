// The Asio adapter's public surface (issue 23): two public headers, one per flavour of Asio,
// over one template source with no macro instantiation, read from the sources; and the names
// of the standalone flavour (the Boost.Asio twins of the asio_* suites use Boost's: the two
// Asios cannot share a translation unit).
#include <gtest/gtest.h>

#include <filesystem>
#include <set>
#include <string>
#include <type_traits>
#include <utility>

#include "support/source_tree.hpp"
#include "transient/adapters/asio.hpp"

namespace {

namespace fs = std::filesystem;

const fs::path include_dir = fs::path(TRANSIENT_SOURCE_DIR) / "include" / "transient";

using transient::test::text_of;

// The headers under include/transient, relative to it ("adapters/asio.hpp").
std::set<std::string> headers() {
  std::set<std::string> found;
  for (const auto& entry : fs::recursive_directory_iterator(include_dir)) {
    if (entry.is_regular_file() && entry.path().extension() == ".hpp") {
      found.insert(fs::relative(entry.path(), include_dir).string());
    }
  }
  return found;
}

TEST(AdapterHeaders, EveryHeaderHasAnIncludeGuard) {
  const auto all = headers();
  ASSERT_FALSE(all.empty()) << include_dir;
  for (const auto& header : all) {
    EXPECT_NE(text_of(include_dir / header).find("#pragma once"), std::string::npos) << header;
  }
}

TEST(AdapterHeaders, TheAsioAdapterIsTwoPublicHeadersAndOneTemplateSource) {
  std::set<std::string> asio_headers;
  for (const auto& header : headers()) {
    if (header.find("asio") != std::string::npos) {
      asio_headers.insert(header);
    }
  }
  const std::set<std::string> expected{"adapters/asio.hpp", "adapters/boost_asio.hpp", "detail/asio_adapter.hpp"};
  EXPECT_EQ(asio_headers, expected);
}

TEST(AdapterHeaders, NoHeaderInstantiatesTheAdapterByMacros) {
  for (const auto& header : headers()) {
    EXPECT_EQ(text_of(include_dir / header).find("#define TRANSIENT_ASIO_"), std::string::npos) << header;
  }
}

// "reserve" names too many things (the spare descriptor, the budget's place for an accept in
// flight, the diagnosis descriptors, headroom): the loop's members say which one they hold.
TEST(AdapterHeaders, TheLoopNamesItsSpareDescriptorAndItsDiagnosisDescriptors) {
  const std::string loop = text_of(include_dir / "detail" / "asio_adapter.hpp");
  EXPECT_EQ(loop.find("reserve_"), std::string::npos) << "a member named reserve_ or diagnosis_fds_";
  EXPECT_NE(loop.find("spare_fd spare_fd_;"), std::string::npos);
  EXPECT_NE(loop.find("diagnosis_fds diagnosis_fds_;"), std::string::npos);
}

TEST(AdapterHeaders, TheStandaloneFlavourNamesStandaloneAsio) {
  static_assert(
      std::is_same_v<decltype(std::declval<transient::asio::accepted_socket&>().socket), ::asio::ip::tcp::socket>);
  static_assert(std::is_same_v<transient::asio::error_code, std::error_code>);
  static_assert(std::is_invocable_r_v<void, transient::asio::refusal_writer, ::asio::ip::tcp::socket&,
                                      const ::asio::ip::tcp::endpoint&>);
  SUCCEED();
}

}  // namespace
