// A `transient serve` child of `transient drill`: started with a low RLIMIT_NOFILE, its output
// drained by a thread (a child that floods stderr must never block on a full pipe, or its CPU
// figure would lie), its CPU time read from /proc/PID/stat.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "transient/endpoint.hpp"
#include "transient/unique_fd.hpp"

namespace transient::tool {

/// One stderr line with the time it arrived.
struct timed_line {
  std::chrono::steady_clock::time_point at;  ///< When the drill read it.
  std::string text;                          ///< The line, without the newline.
};

/// A running `transient serve` process.
class serve_child {
 public:
  using clock = std::chrono::steady_clock;

  /// Starts `/proc/self/exe serve ARGS...` with RLIMIT_NOFILE soft limit `fd_limit`. Throws
  /// std::system_error if pipe or fork fails.
  serve_child(const std::vector<std::string>& args, std::uint64_t fd_limit);
  /// Kills the child (SIGKILL) if it still runs, reaps it, joins the reader.
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
  /// Bytes written to stderr so far.
  [[nodiscard]] std::uint64_t stderr_bytes() const;
  /// Lines written to stderr so far.
  [[nodiscard]] std::uint64_t stderr_lines() const;
  /// The stderr text kept (the first 256 KiB).
  [[nodiscard]] std::string stderr_text() const;
  /// The first stderr lines (at most 1000) with their arrival times.
  [[nodiscard]] std::vector<timed_line> stderr_timeline() const;
  /// User plus system CPU time of the child so far, in seconds (-1 if it cannot be read).
  [[nodiscard]] double cpu_seconds() const;
  /// Sends `signal`.
  void send(int signal) const noexcept;
  /// Waits for the exit; returns the exit status (128 + signal if killed), nullopt on timeout.
  std::optional<int> wait_exit(std::chrono::milliseconds timeout);
  /// When the exit was observed (valid after wait_exit succeeded).
  [[nodiscard]] clock::time_point exited_at() const noexcept { return exited_at_; }

 private:
  void drain();
  std::optional<endpoint> wait_stdout_line(std::string_view prefix, std::chrono::milliseconds timeout);

  pid_t pid_ = -1;
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
  std::uint64_t stderr_bytes_ = 0;
  std::uint64_t stderr_lines_ = 0;
  std::string partial_line_;
  std::vector<timed_line> lines_;
  bool drained_ = false;
};

}  // namespace transient::tool
