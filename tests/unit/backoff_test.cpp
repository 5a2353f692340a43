// Exponential backoff: growth, cap, reset, and the bounds of each jitter mode.
#include "transient/policy/accept_policy.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <set>

namespace transient {
namespace {

using namespace std::chrono_literals;

TEST(Backoff, WithoutJitterDoublesFrom1msUpTo1s) {
  backoff b({.initial = 1ms, .factor = 2.0, .cap = 1s, .mode = jitter::none});
  const std::chrono::nanoseconds expected[] = {1ms, 2ms, 4ms, 8ms, 16ms, 32ms, 64ms, 128ms, 256ms, 512ms, 1s, 1s};
  for (const auto delay : expected) {
    EXPECT_EQ(b.next(), delay);
  }
  EXPECT_EQ(b.failures(), 12U);
}

TEST(Backoff, ResetStartsAgainFromInitial) {
  backoff b({.initial = 5ms, .factor = 3.0, .cap = 1s, .mode = jitter::none});
  EXPECT_EQ(b.next(), 5ms);
  EXPECT_EQ(b.next(), 15ms);
  b.reset();
  EXPECT_EQ(b.failures(), 0U);
  EXPECT_EQ(b.next(), 5ms);
}

TEST(Backoff, FullJitterStaysBetweenInitialAndTheDelay) {
  backoff b({.initial = 1ms, .factor = 2.0, .cap = 64ms, .mode = jitter::full}, 12345);
  std::chrono::nanoseconds base = 1ms;
  std::set<std::int64_t> seen;
  for (int i = 0; i < 200; ++i) {
    const auto d = b.next();
    EXPECT_GE(d, 1ms);
    EXPECT_LE(d, base);
    seen.insert(d.count());
    base = std::min<std::chrono::nanoseconds>(base * 2, 64ms);
  }
  EXPECT_GT(seen.size(), 150U) << "the delays are spread, not constant";
}

TEST(Backoff, EqualJitterKeepsAtLeastHalfOfTheDelay) {
  backoff b({.initial = 2ms, .factor = 2.0, .cap = 32ms, .mode = jitter::equal}, 99);
  std::chrono::nanoseconds base = 2ms;
  for (int i = 0; i < 200; ++i) {
    const auto d = b.next();
    EXPECT_GE(d, base / 2);
    EXPECT_LE(d, base);
    base = std::min<std::chrono::nanoseconds>(base * 2, 32ms);
  }
}

TEST(Backoff, TheSameSeedGivesTheSameDelays) {
  backoff a({}, 7);
  backoff b({}, 7);
  backoff c({}, 8);
  bool differs = false;
  for (int i = 0; i < 20; ++i) {
    const auto x = a.next();
    EXPECT_EQ(x, b.next());
    differs = differs || x != c.next();
  }
  EXPECT_TRUE(differs);
}

TEST(Backoff, AFractionalFactorGrowsSlowly) {
  backoff b({.initial = 100ms, .factor = 1.5, .cap = 1s, .mode = jitter::none});
  EXPECT_EQ(b.next(), 100ms);
  EXPECT_EQ(b.next(), 150ms);
  EXPECT_EQ(b.next(), 225ms);
}

TEST(Backoff, InvalidSettingsAreRefused) {
  EXPECT_EQ(validate(backoff_config{.initial = 0ms}), std::errc::invalid_argument);
  EXPECT_EQ(validate(backoff_config{.factor = 0.5}), std::errc::invalid_argument);
  EXPECT_EQ(validate(backoff_config{.initial = 2s, .cap = 1s}), std::errc::invalid_argument);
  EXPECT_FALSE(validate(backoff_config{}));
  EXPECT_THROW(backoff(backoff_config{.initial = -1ms}), std::system_error);
}

}  // namespace
}  // namespace transient
