// `transient serve`'s upgrade in place (SIGHUP, SIGUSR2): the old process starts the binary on
// disk with the same arguments, hands it the listeners (sockets/handover.hpp) and, once the
// successor reports that it serves them, drains as on SIGTERM. The successor finds the channel
// in its environment (TRANSIENT_HANDOVER_FD) and takes the listeners over instead of opening
// them. Any failure leaves the old process serving, with one line that says why.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "transient/drivers/server.hpp"
#include "transient/sockets/handover.hpp"
#include "transient/sockets/unique_fd.hpp"

namespace transient::tool {

/// What starts the successor, read once at start-up: the binary (/proc/self/exe, so that a
/// binary replaced on disk is the one started: afterwards the link says "... (deleted)") and
/// the arguments (/proc/self/cmdline, argv[0] included).
struct upgrade_image {
  std::string exe;                ///< The path of the binary (empty if unreadable: upgrades then fail).
  std::vector<std::string> argv;  ///< The arguments this process was started with.
};

/// Reads this process's upgrade_image.
[[nodiscard]] upgrade_image read_upgrade_image();

/// The monotonic clock (CLOCK_MONOTONIC) in nanoseconds; async-signal-safe.
[[nodiscard]] std::int64_t monotonic_ns() noexcept;

/// The successor's side, from its environment: the channel to the old process, the signal's
/// time and the old process's pid.
struct handover_origin {
  unique_fd channel;                  ///< TRANSIENT_HANDOVER_FD.
  std::int64_t signal_ns = 0;         ///< TRANSIENT_UPGRADE_SIGNAL_NS (0 if absent).
  int old_pid = 0;                    ///< The old process: this one's parent.
  std::atomic<bool> accepted{false};  ///< Its first connection was logged.
  std::atomic<bool> reported{false};  ///< report_ready() was sent (the channel is then closed).
};

/// The handover this process was started for (TRANSIENT_HANDOVER_FD set), or null. Removes
/// both variables from the environment at once, so that no child of ours inherits them.
/// A malformed variable sets `problem`.
[[nodiscard]] std::unique_ptr<handover_origin> handover_from_environment(std::string& problem);

/// The handler of one loop of a successor: `inner`, and on the first connection any of its
/// loops accepts, one line "upgrade: first accept X ms after the signal to PID N" (the drill
/// reads it for the handover's time).
[[nodiscard]] std::unique_ptr<loop_handler> logging_first_accept(std::unique_ptr<loop_handler> inner,
                                                                 handover_origin& origin,
                                                                 std::function<void(const std::string&)> log);

/// What an upgrade_watch needs from serve.
struct upgrade_hooks {
  /// The listeners to hand over ("http", and "metrics" with --metrics), read when the upgrade
  /// runs.
  std::function<std::vector<listener_offer>()> offers;
  /// True once serve stops (an upgrade then is pointless).
  std::function<bool()> stopping;
  /// The successor serves: drain as on SIGTERM.
  std::function<void()> drain;
  /// Writes one line to serve's log.
  std::function<void(const std::string&)> log;
};

/// The upgrades of one serving process: request() (from a signal handler) wakes a thread of its
/// own, which starts the successor, hands it the listeners and waits for it; one upgrade at a
/// time.
class upgrade_watch {
 public:
  /// Watches for requests until destroyed; `timeout` bounds each upgrade (--upgrade-timeout).
  upgrade_watch(upgrade_image image, std::chrono::milliseconds timeout, upgrade_hooks hooks);
  /// Stops the thread; an upgrade under way ends first (within its timeout).
  ~upgrade_watch();
  upgrade_watch(const upgrade_watch&) = delete;
  upgrade_watch& operator=(const upgrade_watch&) = delete;

  /// Asks for an upgrade, for the signal `signal` that came at `signal_ns`; while one is under
  /// way (or done) the request is ignored with a line. Async-signal-safe.
  void request(int signal, std::int64_t signal_ns) noexcept;

 private:
  void run();
  void upgrade();
  int hand_over(std::int64_t signal_ns, std::string& why);

  upgrade_image image_;
  std::chrono::milliseconds timeout_;
  upgrade_hooks hooks_;
  unique_fd wake_;  // eventfd: written by request()
  unique_fd quit_;  // eventfd: written by the destructor
  std::atomic<bool> busy_{false};
  std::atomic<std::int64_t> signal_ns_{0};
  std::thread thread_;
};

}  // namespace transient::tool
