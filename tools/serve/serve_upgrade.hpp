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

/// The upgrades of one serving process: request() (from a signal handler) writes an eventfd
/// that the first serving loop watches (watching_upgrades); the loop then starts the upgrade on
/// a thread of its own, which starts the successor, hands it the listeners and waits for it.
/// One upgrade at a time. Until a signal asks for one, serve runs no thread for upgrades: a
/// process with one loop stays single-threaded, and the kernel's descriptor lookups stay cheap.
class upgrade_watch {
 public:
  /// Takes requests until destroyed; `timeout` bounds each upgrade (--upgrade-timeout).
  upgrade_watch(upgrade_image image, std::chrono::milliseconds timeout, upgrade_hooks hooks);
  /// Waits for an upgrade under way (within its timeout); a request no loop took gets its line.
  ~upgrade_watch();
  upgrade_watch(const upgrade_watch&) = delete;
  upgrade_watch& operator=(const upgrade_watch&) = delete;

  /// Asks for an upgrade, for the signal `signal` that came at `signal_ns`; while one is under
  /// way (or done) the request is ignored with a line. Async-signal-safe.
  void request(int signal, std::int64_t signal_ns) noexcept;
  /// The descriptor a loop watches for requests (readable: one waits).
  [[nodiscard]] int requests() const noexcept { return requests_.get(); }
  /// On the watching loop, once requests() is readable: starts the upgrade asked for.
  void take_request();

 private:
  void upgrade();
  int hand_over(std::int64_t signal_ns, std::string& why);
  bool unread_request() const noexcept;

  upgrade_image image_;
  std::chrono::milliseconds timeout_;
  upgrade_hooks hooks_;
  unique_fd requests_;  // eventfd: written by request(), read by take_request()
  std::atomic<bool> busy_{false};
  std::atomic<std::int64_t> signal_ns_{0};
  std::thread thread_;  // the last upgrade's
};

/// The handler of the first loop of a serving process: `inner`, with `watch`'s requests
/// watched on that loop while it accepts.
[[nodiscard]] std::unique_ptr<loop_handler> watching_upgrades(std::unique_ptr<loop_handler> inner, loop& l,
                                                              upgrade_watch& watch);

}  // namespace transient::tool
