// One run-to-completion loop of `transient serve` (see serve_loop.hpp).
#include "serve_loop.hpp"

#include <algorithm>

namespace transient::tool {
namespace {

// The accept engine's epoll tags start above every descriptor number (connections use those).
constexpr std::uint64_t first_tag = accept_source::first_source_tag;

}  // namespace

serve_loop::serve_loop(connection_limits limits, responder respond, std::shared_ptr<const listener> source,
                       acceptor_options options, std::function<void()> after_accept, serve_engine engine)
    : io_(limits, std::move(respond)),
      acceptor_(make_accept_engine(
          engine, io_.epoll_fd(), first_tag, std::move(source),
          [this, after = std::move(after_accept)](connection c) {
            io_.add(std::move(c));
            if (after) {
              after();
            }
          },
          std::move(options))) {}

void serve_loop::run() {
  next_publish_ = clock::now() + publish_every;
  publish();
  {
    const std::lock_guard lock(mutex_);
    published_.running = true;
  }
  try {
    io_.run(*this);
  } catch (...) {
    publish();
    const std::lock_guard lock(mutex_);
    published_.running = false;
    throw;
  }
  publish();
  const std::lock_guard lock(mutex_);
  published_.running = false;
}

policy_metrics serve_loop::metrics() const {
  const std::lock_guard lock(mutex_);
  return published_.metrics;
}

loop_snapshot serve_loop::snapshot() const {
  const std::lock_guard lock(mutex_);
  return published_;
}

void serve_loop::publish() {
  const policy_metrics now = acceptor_->metrics();
  const policy_health health = acceptor_->health();
  last_state_ = health.state;
  last_open_ = io_.open_connections();
  last_timeouts_ = io_.header_timeouts();
  const std::lock_guard lock(mutex_);
  published_.metrics = now;
  published_.health = health;
  published_.open_connections = last_open_;
  published_.header_timeouts = last_timeouts_;
  changed_ = false;
}

bool serve_loop::handle(const epoll_event& event, clock::time_point now) {
  if (!acceptor_->handle(event, now)) {
    return false;
  }
  changed_ = true;
  return true;
}

void serve_loop::on_time(clock::time_point now) {
  acceptor_->on_time(now);
  if (evict_when_full_ && !acceptor_->done() && acceptor_->health().state == health_state::backpressure) {
    io_.close_idlest();  // its permit's release wakes the acceptor for the client waiting
  }
  if (!ended_ && acceptor_->done()) {
    ended_ = true;
    publish();  // the stop (and a failure's reason) is visible at once
    if (on_accept_end_) {
      on_accept_end_();
    }
  }
  // What the counters do not show: a change of health (a backoff's end), connections closed
  // by the connection loop (timeouts, the drain).
  if (!changed_ && (acceptor_->health().state != last_state_ || io_.open_connections() != last_open_ ||
                    io_.header_timeouts() != last_timeouts_)) {
    changed_ = true;
  }
  if (now >= next_publish_) {
    if (changed_) {
      publish();
    }
    next_publish_ = now + publish_every;
  }
}

int serve_loop::timeout_ms(clock::time_point now) const {
  const int accept_timeout = acceptor_->timeout_ms(now);
  if (!changed_) {
    return accept_timeout;
  }
  const auto until_publish =
      std::max<std::int64_t>(0, std::chrono::ceil<std::chrono::milliseconds>(next_publish_ - now).count());
  const int publish_timeout = static_cast<int>(std::min<std::int64_t>(until_publish, publish_every.count()));
  return accept_timeout < 0 ? publish_timeout : std::min(accept_timeout, publish_timeout);
}

}  // namespace transient::tool
