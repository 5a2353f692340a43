// A child of `transient drill` (a `transient serve`, or with --target any server): started
// with a low RLIMIT_NOFILE, its output drained by a thread (a child that floods stdout or
// stderr must never block on a full pipe, or its CPU figure would lie), its CPU time read from
// /proc/PID/stat. A target runs in a process group of its own, so that everything it forks is
// measured and stopped with it.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "transient/sockets/endpoint.hpp"
#include "transient/sockets/unique_fd.hpp"

namespace transient::tool {

/// One stderr line with the time it arrived.
struct timed_line {
  std::chrono::steady_clock::time_point at;  ///< When the drill read it.
  std::string text;                          ///< The line, without the newline.
};

/// Where a process's threads spent their time, from /proc/PID/task/TID/schedstat: on a CPU, and
/// runnable but waiting for one. Their sum (the time it was runnable) is what a spinning loop
/// keeps near 100 % of the wall clock however busy the machine is, while its CPU share shrinks.
struct sched_time {
  double on_cpu = 0;   ///< Seconds on a CPU.
  double waiting = 0;  ///< Seconds runnable but waiting for a CPU.
  /// Seconds runnable: on a CPU or waiting for one.
  [[nodiscard]] double runnable() const noexcept { return on_cpu + waiting; }
};

/// The calling thread's sched_time (/proc/thread-self/schedstat).
[[nodiscard]] sched_time this_thread_sched();

/// How much a child wrote to its stdout and stderr.
struct output_volume {
  std::uint64_t stdout_bytes = 0;  ///< Bytes written to stdout.
  std::uint64_t stdout_lines = 0;  ///< Lines written to stdout.
  std::uint64_t stderr_bytes = 0;  ///< Bytes written to stderr.
  std::uint64_t stderr_lines = 0;  ///< Lines written to stderr.
};

/// How to start a child that is not `transient serve` itself (a drill target).
struct child_launch {
  std::string program;            ///< Absolute or relative path of the executable (no PATH search).
  std::vector<std::string> argv;  ///< Its arguments, argv[0] first.
  std::uint64_t fd_limit = 64;    ///< RLIMIT_NOFILE, soft and hard: runtimes raise soft to hard.
};

/// The accept engine of every serve child started after this (`serve --engine ENGINE`, e.g.
/// "io_uring"); "" or "epoll": serve's default. The fixture's naive loop (epoll only) keeps
/// its own.
void set_serve_engine(std::string engine);

/// Appends `--engine ENGINE` to a serve command line when set_serve_engine chose one other than
/// serve's default.
void append_serve_engine(std::vector<std::string>& argv);

/// The path of this executable (/proc/self/exe resolved; that link itself if unreadable).
[[nodiscard]] std::string self_path();

/// What a serve child runs.
enum class serve_program : unsigned char {
  serve,          ///< `transient serve`: this executable.
  fixture_serve,  ///< `transient-fixture serve`: serve with the test knobs (leak, slow response).
  fixture_naive,  ///< `transient-fixture naive`: serve's responder on the naive loop.
};

/// The test fixture is not where the drill looks for it (fixture_path()).
class fixture_missing : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// The test fixture transient-fixture: in ../libexec/transient/ from this executable's folder
/// (installed: /usr/bin and /usr/libexec/transient), else beside this executable (a build
/// tree). Throws fixture_missing, naming both places, if it is in neither.
[[nodiscard]] std::string fixture_path();

/// A running child process of the drill.
class serve_child {
 public:
  using clock = std::chrono::steady_clock;

  /// Starts `program` (`/proc/self/exe serve ARGS...`, or the fixture's `serve ARGS...` or
  /// `naive ARGS...`) with RLIMIT_NOFILE `fd_limit` (soft and hard). Throws std::system_error
  /// if pipe or fork fails, fixture_missing if the program is the fixture and it is missing.
  serve_child(const std::vector<std::string>& args, std::uint64_t fd_limit,
              serve_program program = serve_program::serve);
  /// Starts `launch` in a new process group (its id is the child's pid) with RLIMIT_NOFILE soft
  /// and hard limits `launch.fd_limit`. Throws std::system_error if pipe or fork fails.
  explicit serve_child(const child_launch& launch);
  /// Kills the child (SIGKILL; the whole group if it has one) if it still runs, reaps it,
  /// joins the reader.
  ~serve_child();
  serve_child(const serve_child&) = delete;
  serve_child& operator=(const serve_child&) = delete;

  /// The process id.
  [[nodiscard]] pid_t pid() const noexcept { return pid_; }
  /// Waits for "listening on ADDRESS (verified)" on stdout; nullopt on timeout or exit.
  std::optional<endpoint> wait_listening(std::chrono::milliseconds timeout);
  /// The first stdout line "metrics on http://ADDRESS/metrics", if printed within `timeout`.
  std::optional<endpoint> wait_metrics(std::chrono::milliseconds timeout);
  /// Waits until stderr contains `text`; false on timeout.
  bool wait_stderr(std::string_view text, std::chrono::milliseconds timeout);
  /// What the child wrote so far, read as one snapshot.
  [[nodiscard]] output_volume written() const;
  /// The stderr text kept (the first 256 KiB).
  [[nodiscard]] std::string stderr_text() const;
  /// The first stderr lines (at most 1000) with their arrival times.
  [[nodiscard]] std::vector<timed_line> stderr_timeline() const;
  /// User plus system CPU time of the child so far, in seconds (-1 if it cannot be read); of
  /// its whole group if it has one of its own.
  [[nodiscard]] double cpu_seconds() const;
  /// sched_time summed over every thread of the child (of every live process in its group if it
  /// has one of its own).
  [[nodiscard]] sched_time sched() const;
  /// Threads of the child (its group) that are runnable now (state R: on a CPU or waiting for one).
  [[nodiscard]] int runnable_threads() const;
  /// The most descriptors any process of the child (its group) has open now (-1 if none readable).
  [[nodiscard]] int max_open_descriptors() const;
  /// Sends `signal` (to the child only, not its group).
  void send(int signal) const noexcept;
  /// True if the child runs in a process group of its own (started from a child_launch).
  [[nodiscard]] bool own_group() const noexcept { return own_group_; }
  /// The processes of the child's group still alive (not zombies), the child included.
  [[nodiscard]] std::vector<pid_t> group_members() const;
  /// User plus system CPU time of every live process in the child's group, in seconds.
  [[nodiscard]] double group_cpu_seconds() const;
  /// Ends the whole group: SIGTERM, then SIGKILL to what is left after `grace`, reaping what
  /// it can; bounded (grace + 2 s at most). Returns the group's processes still alive after
  /// it (empty when the stop worked).
  std::vector<pid_t> stop_group(std::chrono::milliseconds grace);
  /// Waits for the exit; returns the exit status (128 + signal if killed), nullopt on timeout.
  std::optional<int> wait_exit(std::chrono::milliseconds timeout);
  /// Waits for the exit as wait_exit does, but not for the output's last bytes: a successor
  /// that inherited the child's stdout and stderr (serve's in-place upgrade) keeps them open.
  std::optional<int> reap(std::chrono::milliseconds timeout);
  /// When the exit was observed (valid after wait_exit or reap succeeded).
  [[nodiscard]] clock::time_point exited_at() const noexcept { return exited_at_; }

 private:
  void start(const std::string& program, std::vector<std::string> storage, std::uint64_t fd_limit);
  void drain();
  void count_lines(std::string_view chunk, clock::time_point now);
  void reap_group();
  std::vector<pid_t> processes() const;
  std::optional<endpoint> wait_stdout_line(std::string_view prefix, std::chrono::milliseconds timeout);

  pid_t pid_ = -1;
  bool own_group_ = false;
  unique_fd pidfd_;
  std::optional<int> status_;
  clock::time_point exited_at_{};
  unique_fd out_;
  unique_fd err_;
  std::thread reader_;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::string stdout_;
  std::string stderr_;
  output_volume written_;
  std::string partial_line_;
  std::vector<timed_line> lines_;
  bool drained_ = false;
  std::atomic<bool> stop_reading_{false};
};

}  // namespace transient::tool
