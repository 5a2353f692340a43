// The accept queue of serve's listener (see serve_queue.hpp).
#include "serve_queue.hpp"

#include <cstdio>
#include <system_error>

namespace transient::tool {
namespace {

// "1.8": tenths of a second, as an operator reads a wait.
std::string seconds_text(std::chrono::milliseconds d) {
  char text[32];
  const int n = std::snprintf(text, sizeof text, "%.1f", static_cast<double>(d.count()) / 1000.0);
  return std::string(text, static_cast<std::size_t>(n));
}

// "0.5": the threshold as given, without trailing zeros.
std::string fraction_text(double f) {
  char text[32];
  const int n = std::snprintf(text, sizeof text, "%g", f);
  return std::string(text, static_cast<std::size_t>(n));
}

void family(std::string& out, const char* name, const char* type, const char* help) {
  out += std::string("# HELP ") + name + ' ' + help + "\n# TYPE " + name + ' ' + type + '\n';
}

// The reader of the namespace's counters. A failure to open /proc/net/netstat now is not
// fatal: each read then tries to open it.
listen_drops_reader drops_reader() {
  std::error_code ec;
  return listen_drops_reader(ec);
}

}  // namespace

queue_watch::queue_watch(const basic_server& server, double ready_fraction)
    : server_(server),
      address_(server.local_endpoints().front().to_string()),
      fraction_(ready_fraction),
      drops_(drops_reader()) {}

std::optional<listen_drops> queue_watch::drops() const {
  std::error_code ec;
  const listen_drops d = drops_.read(ec);
  return ec ? std::nullopt : std::optional(d);
}

std::optional<queue_reading> queue_watch::read(clock::time_point now) const {
  const std::optional<listen_queue> q = server_.accept_queues().front();
  if (!q) {
    return std::nullopt;
  }
  const std::lock_guard lock(mutex_);
  queue_reading r;
  r.queue = *q;
  r.above = fraction_ > 0 && static_cast<double>(r.queue.length) > fraction_ * static_cast<double>(r.queue.limit);
  if (!r.above) {
    above_since_.reset();
    return r;
  }
  if (!above_since_) {
    above_since_ = now;
  }
  r.above_for = std::chrono::duration_cast<std::chrono::milliseconds>(now - *above_since_);
  return r;
}

std::string describe(const queue_reading& r, double fraction) {
  return std::to_string(r.queue.length) + " of " + std::to_string(r.queue.limit) + " waiting in the accept queue for " +
         seconds_text(r.above_for) + " s (over " + fraction_text(fraction) + " of its limit)";
}

std::string queue_metrics(const std::optional<queue_reading>& r, const std::string& address,
                          const std::optional<listen_drops>& drops) {
  std::string out;
  if (r) {
    const std::string label = "{listener=\"" + address + "\"} ";
    family(out, "transient_listen_queue_length", "gauge",
           "Connections in the listener's accept queue (handshake completed, not yet accepted), read at scrape time.");
    out += "transient_listen_queue_length" + label + std::to_string(r->queue.length) + '\n';
    family(out, "transient_listen_queue_limit", "gauge",
           "The most the listener's accept queue holds: its listen() backlog capped by net.core.somaxconn.");
    out += "transient_listen_queue_limit" + label + std::to_string(r->queue.limit) + '\n';
  }
  if (drops) {
    const listen_drops& d = *drops;
    family(out, "transient_listen_overflows_total", "counter",
           "Handshakes dropped because an accept queue was full (TcpExt ListenOverflows): machine-wide, every "
           "listener of this network namespace, not this one alone.");
    out += "transient_listen_overflows_total " + std::to_string(d.overflows) + '\n';
    family(out, "transient_listen_drops_total", "counter",
           "SYNs and handshakes any listener dropped, overflows included (TcpExt ListenDrops): machine-wide, every "
           "listener of this network namespace, not this one alone.");
    out += "transient_listen_drops_total " + std::to_string(d.drops) + '\n';
  }
  return out;
}

}  // namespace transient::tool
