// transient/drivers/systemd.hpp: telling systemd how a server is doing (sd_notify(3), without
// libsystemd): READY=1 once it really listens, STATUS= at every change of health, WATCHDOG=1
// while it makes progress or is healthy and idle, STOPPING=1 once it stops. Include it to run
// under Type=notify with WatchdogSec=. The ping follows progress, not liveness, so a server
// whose descriptors leak stops pinging and systemd restarts it (docs/design.md, "Principles").
//
//   transient::notify_supervisor("READY=1", ec);   // after listen() verified the listener
//   transient::supervisor_notifier notifier([&] { return transient::supervision_of(srv); });
//   srv.run();
#pragma once

#include <sys/socket.h>
#include <sys/un.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>

#include "transient/drivers/server.hpp"
#include "transient/sockets/unique_fd.hpp"

namespace transient {

/// A datagram socket for NOTIFY_SOCKET, opened once: messages then still go out when the
/// process has no descriptor to spare (a watchdog that opened a socket per ping would fall
/// silent when descriptors run out, for the wrong reason).
class supervisor_socket {
 public:
  /// Opens the socket if NOTIFY_SOCKET is set: a path, or an abstract name written with a
  /// leading '@'. Sets `ec` when it is set but cannot be used.
  explicit supervisor_socket(std::error_code& ec);
  /// True if NOTIFY_SOCKET is set and the socket is open.
  explicit operator bool() const noexcept { return static_cast<bool>(fd_); }
  /// Sends `state`; sets `ec` on failure.
  void send(std::string_view state, std::error_code& ec) const;

 private:
  unique_fd fd_;
  sockaddr_un address_{};
  socklen_t length_ = 0;
};

/// Sends `state` (e.g. "READY=1") to the socket named by NOTIFY_SOCKET through a socket of
/// its own. Returns false (and leaves `ec` clear) when the variable is not set; sets `ec`
/// when it is set but the message could not be sent.
bool notify_supervisor(std::string_view state, std::error_code& ec);

/// What a supervisor_notifier reports, as its probe reads it.
struct supervision {
  /// The STATUS= text (after "STATUS="), sent whenever it changes.
  std::string status;
  /// The server has begun to stop: STOPPING=1, once.
  bool stopping = false;
  /// The server failed (a stall, a dead listener): no WATCHDOG=1 any more.
  bool failed = false;
  /// The server is healthy, so a ping is due even without progress (accepting, a full budget,
  /// a clean stop).
  bool healthy = true;
  /// A number that grows while the server works; a ping is due when it moved.
  std::uint64_t progress = 0;
};

/// The supervision of `server` from its health and counters: its state [": " its error];
/// progress counts accepts, sheds and the budget's live count moving.
[[nodiscard]] supervision supervision_of(const basic_server& server);

/// Reports a server to systemd on a thread of its own while it lives (see the file comment):
/// STATUS= and STOPPING=1 when they change, and, when WATCHDOG_USEC is set for this process,
/// WATCHDOG=1 every half interval while the probe says the server is healthy or made progress.
/// Does nothing when NOTIFY_SOCKET is unset. Not copyable or movable.
class supervisor_notifier {
 public:
  /// Starts reporting what `probe` says (it runs on the notifier's thread, at least every
  /// 100 ms). Sets `ec` when NOTIFY_SOCKET is set but unusable, and reports nothing then.
  supervisor_notifier(std::function<supervision()> probe, std::error_code& ec);
  /// Sends the final state (a stop, a failure) and joins the thread.
  ~supervisor_notifier();
  supervisor_notifier(const supervisor_notifier&) = delete;
  supervisor_notifier& operator=(const supervisor_notifier&) = delete;

 private:
  using clock = std::chrono::steady_clock;
  void run();
  void report(bool ping);
  void send(const std::string& message) const;

  std::function<supervision()> probe_;
  supervisor_socket socket_;
  std::chrono::microseconds interval_{0};  // half of WATCHDOG_USEC; 0: no watchdog
  std::mutex mutex_;                       // guards done_
  std::condition_variable wake_;
  bool done_ = false;
  // The notifier thread's own state.
  clock::time_point next_ping_{};
  std::uint64_t last_progress_ = 0;
  std::string last_status_;
  bool stopping_sent_ = false;
  std::thread thread_;  // last: started when everything above is initialized
};

}  // namespace transient
