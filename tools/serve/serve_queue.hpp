// The accept queue of serve's listener as its probes, its metrics and systemd's STATUS= see it:
// read from the server at request time (basic_server::accept_queues(), one getsockopt), so that
// /readyz says 503 within the probe that finds the queue above the threshold instead of at the
// loops' next publication.
#pragma once

#include <chrono>
#include <mutex>
#include <optional>
#include <string>

#include "transient/drivers/server.hpp"
#include "transient/sockets/listen_queue.hpp"

namespace transient::tool {

/// One reading of a listener's accept queue against serve's readiness threshold.
struct queue_reading {
  listen_queue queue;  ///< Length and limit.
  bool above = false;  ///< More than the threshold's fraction of the limit is waiting.
  /// How long readings have found the queue above the threshold: since the first reading that
  /// did (0 when this one does not).
  std::chrono::milliseconds above_for{0};
};

/// Watches the accept queue of a server's first listener from any thread, against serve's
/// readiness threshold.
class queue_watch {
 public:
  /// The clock of the readings.
  using clock = std::chrono::steady_clock;

  /// Watches the first listener of `server` (which must outlive the watch); `ready_fraction`
  /// is the readiness threshold, 0 to 1 (0: never above).
  queue_watch(const basic_server& server, double ready_fraction);

  /// The queue at `now` and whether it is above the threshold, and since when (readings at
  /// any time and on any thread count). nullopt once the server has let go of the listener or
  /// if the queue cannot be read. Thread-safe.
  [[nodiscard]] std::optional<queue_reading> read(clock::time_point now = clock::now()) const;
  /// This network namespace's listen_drops, read through a descriptor of /proc/net/netstat
  /// kept open (so they are there under a descriptor shortage too); nullopt if unreadable.
  [[nodiscard]] std::optional<listen_drops> drops() const;
  /// The listener's address, the metrics' label.
  [[nodiscard]] const std::string& address() const noexcept { return address_; }
  /// The readiness threshold given.
  [[nodiscard]] double ready_fraction() const noexcept { return fraction_; }

 private:
  const basic_server& server_;
  mutable std::mutex mutex_;  // readings from the probes', the metrics' and systemd's threads
  mutable std::optional<clock::time_point> above_since_;  // guarded by mutex_
  std::string address_;
  double fraction_;
  listen_drops_reader drops_;
};

/// One line for the health reason and STATUS=: "412 of 4096 waiting in the accept queue for
/// 1.8 s (over 0.5 of its limit)".
[[nodiscard]] std::string describe(const queue_reading& r, double fraction);

/// Prometheus text: transient_listen_queue_length and transient_listen_queue_limit of the
/// listener at `address` (when `r` holds a reading), and this network namespace's
/// transient_listen_overflows_total and transient_listen_drops_total (when `drops` holds them).
[[nodiscard]] std::string queue_metrics(const std::optional<queue_reading>& r, const std::string& address,
                                        const std::optional<listen_drops>& drops);

}  // namespace transient::tool
