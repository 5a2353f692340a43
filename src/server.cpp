// The epoll server: set-up, stop, run and the counters. What each loop does is in
// server_loop.cpp; the parts both share are in detail/server_parts.hpp.
#include "transient/server.hpp"

#include <sys/epoll.h>
#include <sys/eventfd.h>

#include <algorithm>
#include <thread>

#include "detail/server_parts.hpp"
#include "transient/budget_fit.hpp"
#include "transient/detail/throw_error.hpp"

namespace transient {
namespace {

std::error_code invalid() { return std::make_error_code(std::errc::invalid_argument); }

// The policy settings of loop `t` of `loops` on `where`: its lines name the address, and the
// loop when there are several (else three loops give three identical lines).
accept_policy_config labelled(accept_policy_config config, const endpoint& where, unsigned t, unsigned loops) {
  std::string label = config.label.empty() ? where.to_string() : config.label + " " + where.to_string();
  if (loops > 1) {
    label += " loop " + std::to_string(t + 1) + "/" + std::to_string(loops);
  }
  config.label = std::move(label);
  return config;
}

}  // namespace

std::string_view to_string(stop_reason r) noexcept {
  switch (r) {
    case stop_reason::clean: return "clean";
    case stop_reason::listener_dead: return "listener_dead";
    case stop_reason::stalled: return "stalled";
    case stop_reason::programming_error: return "programming_error";
    case stop_reason::other_error: return "other_error";
  }
  return "unknown";
}

server::server(std::vector<listener> listeners, connection_handler handler, server_options options)
    : listeners_(std::move(listeners)), handler_(std::move(handler)), options_(std::move(options)) {
  if (listeners_.empty() || !std::ranges::all_of(listeners_, [](const listener& l) { return l.is_open(); })) {
    throw std::system_error(invalid(), "transient::server needs at least one open listener");
  }
  if (options_.threads == 0) {
    throw std::system_error(invalid(), "transient::server needs threads >= 1");
  }
  if (!handler_) {
    throw std::system_error(invalid(), "transient::server needs a connection handler");
  }
  if (options_.policy.shed == shed_mode::respond && !options_.refuse) {
    throw std::system_error(invalid(), "shed_mode::respond needs server_options::refuse");
  }
  detail::throw_if(validate(options_.policy), "invalid accept policy configuration");
  std::error_code ec;
  const std::uint64_t fd_limit = fd_soft_limit(ec);
  std::uint64_t max = options_.max_connections;
  if (max == 0) {
    max = default_max_connections(ec);
    detail::throw_if(ec, "cannot size the connection budget from RLIMIT_NOFILE");
  }
  shared_ = std::make_shared<shared>(max, fd_limit);

  given_listeners_ = listeners_.size();
  const bool shards = options_.reuse_port_shards && options_.threads > 1;
  if (shards) {
    for (std::size_t i = 0; i < given_listeners_; ++i) {
      if (!listeners_[i].reuse_port()) {
        throw std::system_error(invalid(), "reuse_port_shards needs listeners opened with SO_REUSEPORT (" +
                                               listeners_[i].local_endpoint().to_string() + " was not)");
      }
    }
    listen_options shard_options;
    shard_options.reuse_port = true;
    for (unsigned t = 1; t < options_.threads; ++t) {
      for (std::size_t i = 0; i < given_listeners_; ++i) {
        listeners_.push_back(listen(listeners_[i].local_endpoint(), shard_options));
      }
    }
  }

  for (unsigned t = 0; t < options_.threads; ++t) {
    auto l = std::make_unique<loop>();
    l->epoll.reset(::epoll_create1(EPOLL_CLOEXEC));
    if (!l->epoll) {
      throw std::system_error(detail::last_error(), "epoll_create1");
    }
    l->wake.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!l->wake) {
      throw std::system_error(detail::last_error(), "eventfd");
    }
    epoll_event event{};
    event.events = EPOLLIN;
    event.data.u64 = detail::wake_token;
    if (::epoll_ctl(l->epoll.get(), EPOLL_CTL_ADD, l->wake.get(), &event) != 0) {
      throw std::system_error(detail::last_error(), "epoll_ctl(eventfd)");
    }
    // Shared listeners: every loop watches each one. Shards: loop t watches its own copies.
    for (std::size_t k = 0; k < given_listeners_; ++k) {
      const std::size_t i = shards ? t * given_listeners_ + k : k;
      watch w;
      w.fd = listeners_[i].native_handle();
      w.index = i;
      w.policy = std::make_unique<accept_policy>(
          shared_->budget, labelled(options_.policy, listeners_[i].local_endpoint(), t, options_.threads));
      l->watches.push_back(std::move(w));
    }
    l->wants_reserve = options_.emfile_reserve && options_.policy.shed != shed_mode::queue;
    take_reserve(*l);
    shared_->wake_fds.push_back(l->wake.get());
    loops_.push_back(std::move(l));
  }
  if (options_.diagnostics_reserve) {
    diagnostics_ = diagnostics_reserve::open(ec);  // without it the census degrades and says so
  }
  shared_->budget.set_waker({&server::wake_loops, shared_.get()});
  // Last, so that the descriptors the server itself holds count as open.
  static_cast<void>(warn_if_budget_does_not_fit(max, options_.policy.sink));
}

server::~server() {
  stop();
  shared_->finish();
}

const connection_budget& server::budget() const noexcept { return shared_->budget; }

std::vector<endpoint> server::local_endpoints() const {
  std::vector<endpoint> out;
  for (std::size_t i = 0; i < given_listeners_ && i < listeners_.size(); ++i) {
    out.push_back(listeners_[i].local_endpoint());
  }
  return out;
}

void server::wake_loops(void* context) noexcept { static_cast<shared*>(context)->wake(); }

void server::stop() noexcept {
  if (!shared_->enter()) {
    return;
  }
  stopping_.store(true);
  // Before the listeners are shut down: the EINVAL that accept then returns is a clean stop.
  for (const auto& l : loops_) {
    for (const watch& w : l->watches) {
      w.policy->request_stop();
    }
  }
  // shutdown(SHUT_RD) wakes a thread blocked in accept (close() does not; ERRORS.md). Our
  // loops never block in accept, but users may share the listener; and it ends listening.
  for (const listener& l : listeners_) {
    [[maybe_unused]] const std::error_code ec = l.shutdown_read();
  }
  shared_->leave();
  shared_->wake();
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
  // Close what run() opened, and the listeners; keep the budget: live connections hold permits.
  for (const auto& l : loops_) {
    const std::lock_guard lock(l->snapshot_mutex);
    l->epoll.reset();
    l->wake.reset();
    l->emfile_reserve.reset();
  }
  diagnostics_ = diagnostics_reserve{};
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
  total.shed[static_cast<std::size_t>(shed_reason::budget)] += reserve_sheds_.load(std::memory_order_relaxed);
  total.live = shared_->budget.live();
  total.peak = shared_->budget.peak();
  total.max_connections = shared_->budget.max_connections();
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
