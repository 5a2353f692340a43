// `transient drill --target COMMAND`: the drill's questions put to any server's accept loop.
// The drill starts the target itself (a free loopback port in place of `{port}`, RLIMIT_NOFILE
// low in soft and hard limit, a process group of its own), runs seven scenarios against it,
// each with a fresh target, and judges each against the named thresholds below.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "drill_child.hpp"
#include "drill_report.hpp"
#include "transient/sockets/endpoint.hpp"
#include "transient/sockets/unique_fd.hpp"

namespace transient::tool {

/// What the drill expects of the target on its port.
enum class target_protocol : unsigned char {
  http,  ///< Answers HTTP/1.1 `GET /` (any status) on a keep-alive connection.
  tcp,   ///< Just accepts; "served" means the listen queue drained (from /proc/net/tcp).
};

/// The thresholds behind the verdicts; the report prints them, so a verdict can be checked.
namespace target_threshold {
/// Spin: the target's threads are runnable (on a CPU or waiting for one, schedstat) more than
/// this % of the time while exhausted. A loop that spins is near 100 whatever the load; one that
/// sleeps is runnable only after its wake-ups, which a loaded machine stretches, but never most
/// of the time.
inline constexpr double spin_runnable_percent = 50;
/// Spin too: the target's threads are on a CPU more than this % of the time (load can only
/// lower that share, never raise it).
inline constexpr double spin_cpu_percent = 20;
/// Flood: the target writes more log lines a second than this while exhausted.
inline constexpr double flood_lines_per_s = 20;
/// Late: the slowest recovery (a waiting client served after one release), less the time the
/// target and the drill waited for a CPU meanwhile, takes longer.
inline constexpr std::chrono::milliseconds late_recovery{100};
/// Stuck: no client served this long after a release.
inline constexpr std::chrono::milliseconds stuck_after_release{2500};
/// Clean stop: every connection closed and the process exited within this of SIGTERM.
inline constexpr std::chrono::milliseconds stop_within{2000};
/// Slow clients: a client from another address is served within this.
inline constexpr std::chrono::milliseconds other_address_within{1000};
}  // namespace target_threshold

/// The thresholds as lines of text for the report ("spin: ...").
[[nodiscard]] std::vector<std::pair<std::string, std::string>> target_threshold_lines();

/// How the target is started and drilled.
struct target_settings {
  std::vector<std::string> command;                  ///< Its words; `{port}` is replaced.
  std::string label;                                 ///< Name in the report.
  target_protocol protocol = target_protocol::http;  ///< --protocol.
  std::uint64_t fd_limit = 64;                       ///< --fd-limit: RLIMIT_NOFILE soft and hard.
  std::chrono::milliseconds ready_timeout{5000};     ///< --ready-timeout.
  std::vector<std::string> log_files;                ///< --log FILE, counted with its output.
  bool quick = false;                                ///< Shorter waits, fewer trials.
  std::function<void(std::string_view)> progress;    ///< Progress notes (may be empty).
  /// --restart: the words of the command that restarts the server (scenario 7), `{pid}` and
  /// `{port}` replaced; empty: no --restart, the scenario is skipped.
  std::vector<std::string> restart;
  /// When the scenario must end its work (set per scenario: now + target_scenario_bound).
  std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
};

/// How long one scenario of `drill --target` may work (quick or full run); its stops and
/// clean-up add at most a few seconds.
[[nodiscard]] std::chrono::seconds target_scenario_bound(bool quick);

/// One line of what to change in the target for a failed `verdict` ("SPIN", "LATE", ...).
[[nodiscard]] std::string target_fix(const std::string& verdict);

/// Splits `text` into words as a POSIX shell does, without a shell: blanks separate words;
/// single quotes keep everything literally; double quotes keep everything but `\"`, `\\`, `\$`
/// and `` \` `` escapes; a backslash outside quotes keeps the next character. No expansion of
/// any kind. Returns nullopt with `problem` set on an unterminated quote or trailing backslash.
[[nodiscard]] std::optional<std::vector<std::string>> split_words(std::string_view text, std::string& problem);

/// `program` resolved as execvp would (a name without '/' is searched in PATH); "" if not found.
[[nodiscard]] std::string resolve_program(const std::string& program);

/// A free TCP port on 127.0.0.1 (bound to port 0 and released; another process may take it
/// before the target binds it, which the target then reports as a start failure).
[[nodiscard]] std::uint16_t pick_free_port();

/// A server the drill's scenarios run against, started for one scenario and awaited until it
/// answers: the command of --target, or `transient serve` or the fixture (reference_target).
/// Start (the constructor), port, pid, signal, stop; process() for what the drill measures.
class target_server {
 public:
  /// Starts the target on a free port; throws nothing: problem() says what went wrong.
  explicit target_server(const target_settings& s);
  /// Stops the whole process group (SIGKILL) if it still runs.
  ~target_server() = default;
  target_server(const target_server&) = delete;
  target_server& operator=(const target_server&) = delete;

  /// Empty when the target is up and answering; otherwise why not (one line).
  [[nodiscard]] const std::string& problem() const noexcept { return problem_; }
  /// Where it listens (127.0.0.1 and the picked port).
  [[nodiscard]] const endpoint& at() const noexcept { return at_; }
  /// The port it listens on.
  [[nodiscard]] std::uint16_t port() const noexcept { return at_.port(); }
  /// The process the drill started (-1 if none).
  [[nodiscard]] pid_t pid() const noexcept { return child_ ? child_->pid() : -1; }
  /// Sends `signal` to the process the drill started (not its group).
  void signal(int number) const noexcept {
    if (child_) {
      child_->send(number);
    }
  }
  /// Ends its whole process group: SIGTERM, then SIGKILL after `grace`; returns what still
  /// runs (see serve_child::stop_group).
  std::vector<pid_t> stop(std::chrono::milliseconds grace) {
    return child_ ? child_->stop_group(grace) : std::vector<pid_t>{};
  }
  /// The process (valid when started, even if problem() is set).
  [[nodiscard]] serve_child* process() const noexcept { return child_.get(); }
  /// The exit status if the target exited (reaping it); nullopt while it runs.
  [[nodiscard]] std::optional<int> exited() const;
  /// Log lines and bytes so far: stdout, stderr and the --log files' growth since the start.
  [[nodiscard]] std::pair<std::uint64_t, std::uint64_t> log_volume() const;
  /// The process group's CPU time so far, in seconds.
  [[nodiscard]] double cpu_seconds() const;

 private:
  bool wait_ready(const target_settings& s);

  std::unique_ptr<serve_child> child_;
  endpoint at_;
  std::string problem_;
  std::vector<std::pair<std::string, std::uint64_t>> log_offsets_;  // file, size at start
};

/// What became of a client the drill waits on.
enum class probe_outcome : unsigned char { served, reset, closed, waiting };

/// The word for an outcome ("served", "reset", "closed", "still waiting").
[[nodiscard]] std::string_view outcome_name(probe_outcome o);

/// A connection to `to` (from `source` if given) whose connect is bounded by `timeout`, with
/// one keep-alive GET sent if `request`; empty on failure.
unique_fd connect_bounded(const endpoint& to, std::chrono::milliseconds timeout, const std::optional<endpoint>& source,
                          bool request);

/// Waits at most `timeout` for what the target does with the client on `fd`: for HTTP, a
/// response; for TCP, the listen queue of `to` draining (the client accepted).
probe_outcome await_outcome(int fd, const endpoint& to, target_protocol protocol, std::chrono::milliseconds timeout);

/// The number of connections waiting in the accept queues of the listeners that take connections
/// to `to` (LISTEN entries on its port, at its address or a wildcard); -1 if none is listed.
int listen_queue_length(const endpoint& to);

/// 1. Descriptors exhausted; a probe waits; one release after a short and after a long wait.
scenario_result run_target_exhaustion(const target_settings& s);
/// 2. CPU of the process group and log volume while exhausted.
scenario_result run_target_exhausted_cost(const target_settings& s);
/// 3. Many more clients than the descriptor limit, all at once: none lost.
scenario_result run_target_backpressure(const target_settings& s);
/// 4. SIGTERM with connections open: closed, exited, nothing left behind, in time.
scenario_result run_target_clean_stop(const target_settings& s);
/// 5. Idle, half-sent requests from one address: a client from another address is served.
scenario_result run_target_slow_clients(const target_settings& s);
/// 6. Overload: 1,000 clients (--quick 300) at once, each with a 1 s deadline: answered in
/// time, answered after the client had gone (waste), connect dropped, no answer.
scenario_result run_target_overload(const target_settings& s);
/// 7. Restart under load: short and keep-alive requests while s.restart runs 20 times (--quick
/// 5): refused, reset and unanswered requests, and the descriptors of the processes listening
/// on the port before and after. Skipped without s.restart.
scenario_result run_target_restart(const target_settings& s);

/// What `transient drill --target ...` asks (drill's option table, drill.cpp, fills it).
struct target_options {
  target_settings settings;                         ///< settings.command is filled from command_text.
  std::string command_text;                         ///< --target COMMAND, as given.
  std::string restart_text;                         ///< --restart CMD, as given ("": none).
  bool reference = true;                            ///< Without --no-reference: drill `transient serve` too.
  bool json = false;                                ///< --json.
  std::string svg_path;                             ///< --svg FILE ("": none).
  std::vector<int> scenarios{1, 2, 3, 4, 5, 6, 7};  ///< --scenarios, each once.
};

/// `transient drill --target ...` as `o` asks. Returns the exit status (2: the command cannot
/// be run).
int drill_target(target_options o);

}  // namespace transient::tool
