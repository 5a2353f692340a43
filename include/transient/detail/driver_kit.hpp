// transient/detail/driver_kit.hpp: what every accept driver needs besides its I/O API, written
// once. Not included directly: the drivers' headers include it. The policy decides every step; a
// driver does what the decision says, with this kit for the spare descriptor, shedding, the
// option checks and the failure texts (docs/design.md, "Layers"; docs/acceptor.md).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

#include "transient/diagnosis/diagnostics.hpp"
#include "transient/policy/accept_policy.hpp"
#include "transient/policy/budget.hpp"
#include "transient/sockets/endpoint.hpp"
#include "transient/sockets/listen_queue.hpp"
#include "transient/sockets/unique_fd.hpp"

namespace transient {

struct syscalls;  // testing/syscalls.hpp

/// The spare descriptor (/dev/null, O_CLOEXEC) that a drain gives up to accept and shed waiting
/// clients under EMFILE, and that the driver takes back before each step that is not a drain.
/// The trick and its caveat (another thread may take the freed number): docs/design.md, "The
/// spare descriptor".
class spare_fd {
 public:
  /// Holds nothing and wants nothing (take() does nothing).
  spare_fd() noexcept = default;
  /// Wants a spare descriptor if `wanted` (the driver's spare_fd option and a shed mode that is
  /// not queue), and tries to take it now.
  explicit spare_fd(bool wanted) noexcept : wanted_(wanted) { take(); }

  /// Takes the descriptor if it is wanted and missing; true if it is held afterwards. A failure
  /// other than a descriptor shortage (no /dev/null in a chroot) makes it unwanted.
  bool take() noexcept { return (!wanted_ || fd_) ? held() : reopen(); }
  /// Closes the descriptor so that its number is free for the next accept (a drain).
  void give_up() noexcept { fd_.reset(); }
  /// Closes the descriptor and stops wanting it (the driver stops).
  void clear() noexcept {
    fd_.reset();
    wanted_ = false;
  }
  /// True if the descriptor is held: the driver may tell the policy it can drain.
  [[nodiscard]] bool held() const noexcept { return static_cast<bool>(fd_); }
  /// True if the spare descriptor is wanted (held, or to be taken back).
  [[nodiscard]] bool wanted() const noexcept { return wanted_; }

 private:
  // take() when the descriptor is wanted and missing (out of line: the rare case).
  bool reopen() noexcept;

  bool wanted_ = false;
  unique_fd fd_;
};

/// Runs a refusal writer under the kit's one rule: an exception is caught and reported as
/// false (the caller sheds the connection anyway and counts the failure).
template <typename Write>
[[nodiscard]] bool write_refusal(Write&& write) noexcept {
  try {
    std::forward<Write>(write)();
    return true;
  } catch (...) {
    return false;
  }
}

/// Sheds the connection on `fd` as `mode` says, all but the close, which the caller does with
/// its own socket type: reset sets SO_LINGER {1, 0} (the close sends a reset); respond calls
/// `refuse` (if set) under write_refusal's rule. Returns false only if the refusal writer threw.
bool shed_as(shed_mode mode, int fd, const std::function<void()>& refuse);
/// As above, through the test seam `sys` (<transient/testing/syscalls.hpp>) instead of the real calls.
bool shed_as(shed_mode mode, int fd, const std::function<void()>& refuse, const syscalls& sys);

/// Sheds an accepted connection as `mode` says (shed_as, with `refuse` given the descriptor
/// and `peer`), then closes the descriptor. Returns false only if the refusal writer threw.
bool shed(unique_fd fd, const endpoint& peer, shed_mode mode, const refusal_writer& refuse);
/// As above, through the test seam `sys` (<transient/testing/syscalls.hpp>) instead of the real calls.
bool shed(unique_fd fd, const endpoint& peer, shed_mode mode, const refusal_writer& refuse, const syscalls& sys);

/// How long the connection on `fd`, just accepted at `now`, waited in the accept queue: what a
/// driver passes to the policy (on_accepted's and on_accept_result's `waited`). The rule, for
/// every driver: without a bound (max_queue_wait 0) nothing is measured and the answer is 0,
/// with no system call; when the policy saw the queue empty at most queue_wait_floor ago (and
/// no longer ago than max_queue_wait), that bound, rounded up, with no system call either;
/// otherwise queue_wait_of(fd) through `sys.getsockopt`, one system call. A failed getsockopt
/// means "unknown": 0, so a connection is never shed for it.
[[nodiscard]] std::chrono::milliseconds queue_wait(const accept_policy& policy, accept_policy::time_point now, int fd,
                                                   const syscalls& sys) noexcept;
/// As above through the real calls.
[[nodiscard]] std::chrono::milliseconds queue_wait(const accept_policy& policy, accept_policy::time_point now,
                                                   int fd) noexcept;
/// queue_wait() at the current time, which is read only when the policy bounds the wait.
[[nodiscard]] inline std::chrono::milliseconds queue_wait(const accept_policy& policy, int fd,
                                                          const syscalls& sys) noexcept {
  return policy.measures_queue_wait() ? queue_wait(policy, accept_policy::clock::now(), fd, sys)
                                      : std::chrono::milliseconds::zero();
}
/// As above through the real calls.
[[nodiscard]] inline std::chrono::milliseconds queue_wait(const accept_policy& policy, int fd) noexcept {
  return policy.measures_queue_wait() ? queue_wait(policy, accept_policy::clock::now(), fd)
                                      : std::chrono::milliseconds::zero();
}

/// The checks every driver makes at construction: throws std::system_error(invalid_argument)
/// naming `driver` for an invalid policy config, or for shed_mode::respond (as `shed`, or as
/// `stale_shed` with max_queue_wait set) without a refusal writer (`has_refuse` false).
void check_driver_options(std::string_view driver, const accept_policy_config& policy, bool has_refuse);

/// `config` as a driver runs it: without a sink, its events go to stderr (write_to_stderr).
/// The policy itself writes nowhere; the drivers give users the lines by default.
[[nodiscard]] accept_policy_config with_default_sink(accept_policy_config config);

/// The diagnosis text of a handler exception ("the connection handler threw").
[[nodiscard]] std::string_view handler_threw_text() noexcept;

/// What a driver knows when its policy fails, for failure_text().
struct failure_context {
  std::string where;                           ///< The listener's address ("127.0.0.1:8080").
  std::string listener_state;                  ///< not_listening: what verify() or the driver found ("" if nothing).
  std::error_code last_accept_error;           ///< stalled: the last error accept returned (what exhausted us).
  std::uint64_t live = 0;                      ///< stalled: the budget's live places.
  std::uint64_t max_connections = 0;           ///< stalled: the budget.
  std::chrono::milliseconds stall_timeout{0};  ///< stalled: how long nothing progressed.
  /// The listener's accept queue at the failure (queue_of); empty if it could not be read (a
  /// listener that no longer listens).
  std::optional<listen_queue> queue;
};

/// The context of a driver's failure: the listener (`where`, and what the driver found about it,
/// `listener_state`), the last accept error, the load (`budget`'s live places and maximum, and
/// `stall_timeout`) and, if `listener_fd` is a listening socket, its accept queue now.
[[nodiscard]] failure_context failure_context_of(std::string where, std::string listener_state,
                                                 const std::error_code& last_accept_error,
                                                 const connection_budget& budget,
                                                 std::chrono::milliseconds stall_timeout, int listener_fd = -1);

/// The diagnosis of a policy's fail decision `ec`: for a stall, the descriptor census (through
/// `fds`, which need no free descriptor) and what to change; for a dead listener, which
/// one and why; otherwise the failed accept and classify()'s advice. With the listener's queue
/// known, it says how many clients were waiting ("412 clients were waiting in the accept
/// queue (limit 4096)").
[[nodiscard]] std::string failure_text(const std::error_code& ec, const failure_context& context,
                                       const diagnosis_fds& fds = {});

/// What a driver reports when its policy's last decision `d` (stop or fail) comes: for fail,
/// failure_text of `context` (through `fds`), also attached to `policy` so that its sink
/// reports it; for stop, a clean stop_info.
[[nodiscard]] stop_info stop_info_of(accept_policy& policy, const decision& d, const failure_context& context,
                                     const diagnosis_fds& fds = {});

}  // namespace transient
