// The accept queue of serve's listener as its probes, its metrics and systemd's STATUS= see it:
// read at request time (one getsockopt), so that /readyz says 503 within the probe that finds
// the queue above the threshold instead of at the loops' next publication.
#pragma once

#include <chrono>
#include <mutex>
#include <optional>
#include <string>

#include "transient/sockets/listen_queue.hpp"
#include "transient/sockets/listener.hpp"
#include "transient/sockets/unique_fd.hpp"

namespace transient::tool {

/// One reading of a listener's accept queue against serve's readiness threshold.
struct queue_reading {
  listen_queue queue;  ///< Length and limit.
  bool above = false;  ///< More than the threshold's fraction of the limit is waiting.
  /// How long readings have found the queue above the threshold: since the first reading that
  /// did (0 when this one does not).
  std::chrono::milliseconds above_for{0};
};

/// Watches a listener's accept queue from any thread. It reads through a duplicate of the
/// listener's descriptor, because the server lets go of its own when it stops accepting; the
/// duplicate is closed then too (stop_watching(), from the loop), so that the socket still
/// closes with the server's last hold on it and the drain refuses new clients at once.
class queue_watch {
 public:
  /// The clock of the readings.
  using clock = std::chrono::steady_clock;

  /// Watches `l` (open); `ready_fraction` is the readiness threshold, 0 to 1 (0: never above).
  /// Throws std::system_error if the descriptor cannot be duplicated.
  queue_watch(const listener& l, double ready_fraction);

  /// The queue at `now` and whether it is above the threshold, and since when (readings at
  /// any time and on any thread count). nullopt once stop_watching() ran or if the queue
  /// cannot be read. Thread-safe.
  [[nodiscard]] std::optional<queue_reading> read(clock::time_point now = clock::now()) const;
  /// Closes the duplicate; read() returns nullopt from then on. Thread-safe; idempotent.
  void stop_watching() noexcept;
  /// The listener's address, the metrics' label.
  [[nodiscard]] const std::string& address() const noexcept { return address_; }
  /// The readiness threshold given.
  [[nodiscard]] double ready_fraction() const noexcept { return fraction_; }

 private:
  mutable std::mutex mutex_;  // a read never meets a closing (or reused) descriptor
  unique_fd fd_;
  mutable std::optional<clock::time_point> above_since_;  // guarded by mutex_
  std::string address_;
  double fraction_;
};

/// One line for the health reason and STATUS=: "412 of 4096 waiting in the accept queue for
/// 1.8 s (over 0.5 of its limit)".
[[nodiscard]] std::string describe(const queue_reading& r, double fraction);

/// Prometheus text: transient_listen_queue_length and transient_listen_queue_limit of the
/// listener at `address` (when `r` holds a reading), and this network namespace's
/// transient_listen_overflows_total and transient_listen_drops_total (when /proc/net/netstat
/// can be read).
[[nodiscard]] std::string queue_metrics(const std::optional<queue_reading>& r, const std::string& address);

}  // namespace transient::tool
