// The epoll server: set-up, stop, run and the counters. What each loop does is in
// server_loop.cpp; the parts both share are in detail/server_parts.hpp.
#include "transient/server.hpp"

#include <sys/epoll.h>

#include <algorithm>
#include <thread>

#include "detail/server_parts.hpp"
#include "transient/detail/throw_error.hpp"

namespace transient {
namespace {

std::error_code invalid() { return std::make_error_code(std::errc::invalid_argument); }

// The policy settings of loop `t` of `loops`: with several, its lines name the loop (the
// acceptor puts the listener's address first), else three loops give three identical lines.
accept_policy_config labelled(accept_policy_config config, unsigned t, unsigned loops) {
  if (loops > 1) {
    config.label += (config.label.empty() ? "loop " : " loop ") + std::to_string(t + 1) + "/" + std::to_string(loops);
  }
  return config;
}

}  // namespace

server::server(std::vector<listener> listeners, connection_handler handler, server_options options)
    : handler_(std::move(handler)), options_(std::move(options)), shared_(std::make_shared<shared>()) {
  if (listeners.empty() || !std::ranges::all_of(listeners, [](const listener& l) { return l.is_open(); })) {
    throw std::system_error(invalid(), "transient::server needs at least one open listener");
  }
  if (options_.threads == 0) {
    throw std::system_error(invalid(), "transient::server needs threads >= 1");
  }
  if (!handler_) {
    throw std::system_error(invalid(), "transient::server needs a connection handler");
  }
  check_driver_options("transient::server", options_.policy, static_cast<bool>(options_.refuse));
  budget_ = shared_budget::create(options_.max_connections);

  given_listeners_ = listeners.size();
  const bool shards = options_.reuse_port_shards && options_.threads > 1;
  if (shards) {
    for (const listener& l : listeners) {
      if (!l.reuse_port()) {
        throw std::system_error(invalid(), "reuse_port_shards needs listeners opened with SO_REUSEPORT (" +
                                               l.local_endpoint().to_string() + " was not)");
      }
    }
  }
  for (listener& l : listeners) {
    listeners_.push_back(std::make_shared<const listener>(std::move(l)));
  }
  if (shards) {
    listen_options shard_options;
    shard_options.reuse_port = true;
    for (unsigned t = 1; t < options_.threads; ++t) {
      for (std::size_t i = 0; i < given_listeners_; ++i) {
        listeners_.push_back(std::make_shared<const listener>(listen(listeners_[i]->local_endpoint(), shard_options)));
      }
    }
  }

  acceptor_options settings;
  settings.budget = budget_;
  settings.refuse = options_.refuse;
  settings.emfile_reserve = options_.emfile_reserve;
  // A listener shared by several loops wakes only one of them per connection.
  settings.exclusive = options_.threads > 1 && !shards;
  settings.open_diagnostics_reserve = false;
  if (options_.diagnostics_reserve) {
    std::error_code ignored;  // without it the census degrades, and says so
    settings.diagnostics = std::make_shared<const diagnostics_reserve>(diagnostics_reserve::open(ignored));
  }
  settings.sys = options_.sys;
  for (unsigned t = 0; t < options_.threads; ++t) {
    auto l = std::make_unique<loop>();
    l->epoll.reset(::epoll_create1(EPOLL_CLOEXEC));
    if (!l->epoll) {
      throw std::system_error(detail::last_error(), "epoll_create1");
    }
    // Shared listeners: every loop watches each one. Shards: loop t watches its own copies.
    for (std::size_t k = 0; k < given_listeners_; ++k) {
      const std::size_t i = shards ? t * given_listeners_ + k : k;
      settings.policy = labelled(options_.policy, t, options_.threads);
      l->acceptors.emplace_back(l->epoll.get(), listeners_[i], detail::tags_of(k), handler_, settings);
    }
    loops_.push_back(std::move(l));
  }
}

server::~server() {
  stop();
  shared_->finish();
}

const connection_budget& server::budget() const noexcept { return budget_->budget(); }

std::vector<endpoint> server::local_endpoints() const {
  std::vector<endpoint> out;
  for (std::size_t i = 0; i < given_listeners_ && i < listeners_.size(); ++i) {
    out.push_back(listeners_[i]->local_endpoint());
  }
  return out;
}

void server::stop() noexcept {
  if (!shared_->enter()) {
    return;
  }
  stopping_.store(true);
  // Before the listeners are shut down: the EINVAL that accept then returns is a clean stop.
  for (const auto& l : loops_) {
    for (acceptor& a : l->acceptors) {
      a.request_stop();
    }
  }
  // shutdown(SHUT_RD) wakes a thread blocked in accept (close() does not; docs/errors.md). Our
  // loops never block in accept, but users may share the listener; and it ends listening.
  for (const auto& l : listeners_) {
    [[maybe_unused]] const std::error_code ec = l->shutdown_read();
  }
  // The loops are woken last: run() cannot return before this call leaves, so a loop woken
  // earlier would finish first and wait for the shutdowns above (on a loaded machine, for
  // this thread to be scheduled again).
  for (const auto& l : loops_) {
    for (acceptor& a : l->acceptors) {
      a.stop();
    }
  }
  shared_->leave();
}

void server::record_failure(stop_info info, std::exception_ptr exception) {
  {
    const std::lock_guard lock(mutex_);
    if (!failure_.error && !handler_exception_) {
      failure_ = std::move(info);
      handler_exception_ = std::move(exception);
    }
  }
  stop();
}

stop_info server::run() {
  std::error_code ec;
  stop_info info = run(ec);
  if (ec) {
    throw std::system_error(ec, info.diagnosis.empty() ? std::string(to_string(info.reason)) : info.diagnosis);
  }
  return info;
}

stop_info server::run(std::error_code& ec) {
  if (ran_.exchange(true)) {
    ec = invalid();
    return {stop_reason::programming_error, ec, "transient::server::run() called twice"};
  }
  std::vector<std::thread> threads;
  for (std::size_t i = 1; i < loops_.size(); ++i) {
    threads.emplace_back([this, i] { run_loop_guarded(*loops_[i]); });
  }
  run_loop_guarded(*loops_[0]);
  for (std::thread& t : threads) {
    t.join();
  }
  shared_->finish();
  // A policy failure (stall, dead listener) is the first acceptor's result that is not clean.
  for (const auto& l : loops_) {
    for (const acceptor& a : l->acceptors) {
      if (a.result().error) {
        record_failure(a.result());
      }
    }
  }
  // Close what run() opened, and the listeners; keep the budget: live connections hold permits.
  for (const auto& l : loops_) {
    const std::lock_guard lock(l->snapshot_mutex);
    l->acceptors.clear();
    l->epoll.reset();
  }
  listeners_.clear();

  const std::lock_guard lock(mutex_);
  if (handler_exception_) {
    std::rethrow_exception(handler_exception_);
  }
  ec = failure_.error;
  return failure_;
}

policy_metrics server::metrics() const {
  policy_metrics total;
  for (const auto& l : loops_) {
    const std::lock_guard lock(l->snapshot_mutex);
    total += l->metrics;
  }
  total.live = budget_->budget().live();
  total.peak = budget_->budget().peak();
  total.max_connections = budget_->budget().max_connections();
  return total;
}

policy_health server::health() const {
  policy_health worst;
  for (const auto& l : loops_) {
    const std::lock_guard lock(l->snapshot_mutex);
    if (detail::severity(l->health.state) > detail::severity(worst.state)) {
      worst = l->health;
    }
  }
  return worst;
}

}  // namespace transient
