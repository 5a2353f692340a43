// transient::supervisor_notifier (systemd.hpp) against a datagram socket standing in for
// systemd's NOTIFY_SOCKET: STATUS= once per change, STOPPING=1 once, WATCHDOG=1 only while the
// probe says the server is healthy or made progress, and never after a failure.
// ctest-labels: threads
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "support/loopback.hpp"
#include "transient/drivers/systemd.hpp"

namespace {

using namespace std::chrono_literals;
using transient::supervision;
using transient::supervisor_notifier;
using transient::unique_fd;

// A bound datagram socket named in NOTIFY_SOCKET (and WATCHDOG_USEC set) while it lives.
class fake_systemd {
 public:
  explicit fake_systemd(const char* watchdog_usec) : path_("/tmp/transient-notify-unit-" + std::to_string(::getpid())) {
    ::unlink(path_.c_str());
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    path_.copy(address.sun_path, path_.size());
    EXPECT_EQ(::bind(socket_.get(), reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
    ::setenv("NOTIFY_SOCKET", path_.c_str(), 1);
    ::setenv("WATCHDOG_USEC", watchdog_usec, 1);
    ::unsetenv("WATCHDOG_PID");
  }
  ~fake_systemd() {
    ::unsetenv("NOTIFY_SOCKET");
    ::unsetenv("WATCHDOG_USEC");
    ::unlink(path_.c_str());
  }
  fake_systemd(const fake_systemd&) = delete;
  fake_systemd& operator=(const fake_systemd&) = delete;

  // The messages that arrive within `window` (and those waiting already).
  std::vector<std::string> messages(std::chrono::milliseconds window) {
    std::vector<std::string> out;
    const auto until = std::chrono::steady_clock::now() + window;
    for (auto now = std::chrono::steady_clock::now(); now < until; now = std::chrono::steady_clock::now()) {
      std::string m =
          transient::test::read_some(socket_.get(), std::chrono::ceil<std::chrono::milliseconds>(until - now));
      if (!m.empty()) {
        out.push_back(std::move(m));
      }
    }
    return out;
  }

 private:
  std::string path_;
  unique_fd socket_{::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)};
};

// A probe the test sets from its thread.
struct probe {
  std::mutex mutex;
  supervision now;
  supervision operator()() {
    const std::lock_guard lock(mutex);
    return now;
  }
  void set(const supervision& s) {
    const std::lock_guard lock(mutex);
    now = s;
  }
};

std::size_t count(const std::vector<std::string>& messages, const std::string& m) {
  return static_cast<std::size_t>(std::count(messages.begin(), messages.end(), m));
}

TEST(SupervisorNotifier, SaysEachStatusOncePingsWhileHealthyAndFallsSilentAfterAFailure) {
  fake_systemd systemd("40000");  // a ping every 20 ms
  probe p;
  p.set({"accepting", false, false, true, 0});
  std::error_code ec;
  std::vector<std::string> healthy;
  std::vector<std::string> failed;
  {
    const supervisor_notifier notifier([&p] { return p(); }, ec);
    ASSERT_FALSE(ec);
    healthy = systemd.messages(300ms);
    p.set({"stalled: descriptors exhausted", true, true, false, 0});
    std::this_thread::sleep_for(200ms);
    failed = systemd.messages(200ms);
  }
  EXPECT_EQ(count(healthy, "STATUS=accepting"), 1U);
  EXPECT_GE(count(healthy, "WATCHDOG=1"), 5U) << "pings while healthy and idle";
  EXPECT_EQ(count(failed, "STATUS=stalled: descriptors exhausted"), 1U);
  EXPECT_EQ(count(failed, "STOPPING=1"), 1U);
  const auto last_ping = std::find(failed.rbegin(), failed.rend(), "WATCHDOG=1");
  const auto stalled = std::find(failed.rbegin(), failed.rend(), "STATUS=stalled: descriptors exhausted");
  EXPECT_TRUE(last_ping == failed.rend() || last_ping.base() < stalled.base()) << "a ping after the failure";
}

TEST(SupervisorNotifier, AnUnhealthyServerIsPingedOnlyWhileItMakesProgress) {
  fake_systemd systemd("40000");
  probe p;
  p.set({"degraded", false, false, false, 1});
  std::error_code ec;
  const supervisor_notifier notifier([&p] { return p(); }, ec);
  ASSERT_FALSE(ec);
  std::this_thread::sleep_for(100ms);
  const std::vector<std::string> stuck = systemd.messages(150ms);
  EXPECT_EQ(count(stuck, "WATCHDOG=1"), 0U) << "no progress, not healthy: no ping";
  for (std::uint64_t progress = 2; progress < 40; ++progress) {
    p.set({"degraded", false, false, false, progress});
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_GE(count(systemd.messages(150ms), "WATCHDOG=1"), 3U) << "progress earns pings";
}

TEST(SupervisorNotifier, WithoutNotifySocketItDoesNothing) {
  ::unsetenv("NOTIFY_SOCKET");
  std::atomic<int> probes{0};
  std::error_code ec;
  {
    const supervisor_notifier notifier(
        [&probes] {
          ++probes;
          return supervision{};
        },
        ec);
    std::this_thread::sleep_for(50ms);
  }
  EXPECT_FALSE(ec);
  EXPECT_EQ(probes.load(), 0);
}

}  // namespace
