// The io_uring server: N loops, each with a uring_acceptor per listener it watches, all
// drawing on one budget. It only waits, publishes counters and turns an acceptor's failure
// into the server's stop; accepting is the acceptors' (uring_acceptor.cpp).
#include <sys/epoll.h>

#include <algorithm>
#include <array>
#include <thread>

#include "detail/server_parts.hpp"
#include "transient/detail/throw_error.hpp"
#include "transient/uring.hpp"

namespace transient {
namespace {

using clock = std::chrono::steady_clock;
constexpr auto snapshot_interval = std::chrono::milliseconds(100);

std::error_code invalid() { return std::make_error_code(std::errc::invalid_argument); }

accept_policy_config labelled(accept_policy_config config, unsigned t, unsigned loops) {
  if (loops > 1) {
    config.label += (config.label.empty() ? "loop " : " loop ") + std::to_string(t + 1) + "/" + std::to_string(loops);
  }
  return config;
}

}  // namespace

// stop() may run on any thread or in a signal handler while run() destroys the acceptors:
// the same protocol as the epoll server's (server_parts.hpp).
struct uring_server::shared {
  std::atomic<bool> finished{false};
  std::atomic<int> users{0};

  bool enter() noexcept {
    users.fetch_add(1);
    if (finished.load()) {
      users.fetch_sub(1);
      return false;
    }
    return true;
  }
  void leave() noexcept { users.fetch_sub(1); }
  void finish() noexcept {
    finished.store(true);
    while (users.load() != 0) {
      std::this_thread::yield();
    }
  }
};

// One loop: its acceptors (a ring each) and, with several, an epoll set over their rings.
struct uring_server::loop {
  std::vector<uring_acceptor> acceptors;
  unique_fd epoll;

  mutable std::mutex snapshot_mutex;  // guards the snapshots
  policy_metrics metrics;
  policy_health health;
  std::uint64_t submissions = 0;
  clock::time_point last_snapshot{};

  [[nodiscard]] bool finished() const {
    return std::ranges::all_of(acceptors, [](const uring_acceptor& a) { return a.done(); });
  }

  void publish(clock::time_point now, bool force) {
    if (!force && now - last_snapshot < snapshot_interval) {
      return;
    }
    last_snapshot = now;
    policy_metrics m;
    policy_health worst;
    std::uint64_t sqes = 0;
    for (const uring_acceptor& a : acceptors) {
      m += a.metrics();
      sqes += a.submissions();
      const policy_health h = a.health();
      if (detail::severity(h.state) > detail::severity(worst.state)) {
        worst = h;
      }
    }
    const std::lock_guard lock(snapshot_mutex);
    metrics = m;
    health = worst;
    submissions = sqes;
  }
};

uring_server::uring_server(std::vector<listener> listeners, connection_handler handler, server_options options,
                           uring_options ring)
    : handler_(std::move(handler)), options_(std::move(options)), shared_(std::make_shared<shared>()) {
  if (listeners.empty() || !std::ranges::all_of(listeners, [](const listener& l) { return l.is_open(); })) {
    throw std::system_error(invalid(), "transient::uring_server needs at least one open listener");
  }
  if (options_.threads == 0) {
    throw std::system_error(invalid(), "transient::uring_server needs threads >= 1");
  }
  if (!handler_) {
    throw std::system_error(invalid(), "transient::uring_server needs a connection handler");
  }
  check_driver_options("transient::uring_server", options_.policy, static_cast<bool>(options_.refuse));
  if (std::string why; !uring_available(why)) {
    throw std::system_error(std::make_error_code(std::errc::not_supported), "transient::uring_server: " + why);
  }
  budget_ = shared_budget::create(options_.max_connections);

  given_listeners_ = listeners.size();
  const bool shards = options_.reuse_port_shards && options_.threads > 1;
  for (const listener& l : listeners) {
    if (shards && !l.reuse_port()) {
      throw std::system_error(invalid(), "reuse_port_shards needs listeners opened with SO_REUSEPORT (" +
                                             l.local_endpoint().to_string() + " was not)");
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
  settings.open_diagnostics_reserve = false;
  if (options_.diagnostics_reserve) {
    std::error_code ignored;  // without it the census degrades, and says so
    settings.diagnostics = std::make_shared<const diagnostics_reserve>(diagnostics_reserve::open(ignored));
  }
  settings.sys = options_.sys;
  for (unsigned t = 0; t < options_.threads; ++t) {
    auto l = std::make_unique<loop>();
    for (std::size_t k = 0; k < given_listeners_; ++k) {
      const std::size_t i = shards ? t * given_listeners_ + k : k;
      settings.policy = labelled(options_.policy, t, options_.threads);
      l->acceptors.emplace_back(listeners_[i], handler_, settings, ring);
    }
    if (l->acceptors.size() > 1) {  // one wait over several rings
      l->epoll.reset(::epoll_create1(EPOLL_CLOEXEC));
      if (!l->epoll) {
        throw std::system_error(detail::last_error(), "epoll_create1");
      }
      for (std::size_t k = 0; k < l->acceptors.size(); ++k) {
        epoll_event event{};
        event.events = EPOLLIN;
        event.data.u64 = k;
        if (::epoll_ctl(l->epoll.get(), EPOLL_CTL_ADD, l->acceptors[k].native_handle(), &event) != 0) {
          throw std::system_error(detail::last_error(), "epoll_ctl(io_uring)");
        }
      }
    }
    loops_.push_back(std::move(l));
  }
}

uring_server::~uring_server() {
  stop();
  shared_->finish();
}

const connection_budget& uring_server::budget() const noexcept { return budget_->budget(); }

std::vector<endpoint> uring_server::local_endpoints() const {
  std::vector<endpoint> out;
  for (std::size_t i = 0; i < given_listeners_ && i < listeners_.size(); ++i) {
    out.push_back(listeners_[i]->local_endpoint());
  }
  return out;
}

void uring_server::stop() noexcept {
  if (!shared_->enter()) {
    return;
  }
  for (const auto& l : loops_) {
    for (uring_acceptor& a : l->acceptors) {
      a.stop();
    }
  }
  for (const auto& l : listeners_) {
    [[maybe_unused]] const std::error_code ec = l->shutdown_read();
  }
  shared_->leave();
}

void uring_server::record_failure(stop_info info, std::exception_ptr exception) {
  {
    const std::lock_guard lock(mutex_);
    if (!failure_.error && !handler_exception_) {
      failure_ = std::move(info);
      handler_exception_ = std::move(exception);
    }
  }
  stop();
}

stop_info uring_server::run() {
  std::error_code ec;
  stop_info info = run(ec);
  if (ec) {
    throw std::system_error(ec, info.diagnosis.empty() ? std::string(to_string(info.reason)) : info.diagnosis);
  }
  return info;
}

void uring_server::run_loop(loop& l) {
  try {
    std::array<epoll_event, 16> events{};
    while (!l.finished()) {
      auto now = clock::now();
      int timeout = -1;
      for (const uring_acceptor& a : l.acceptors) {
        const int t = a.timeout_ms(now);
        timeout = t < 0 ? timeout : (timeout < 0 ? t : std::min(timeout, t));
      }
      // Wake to publish the counters at least every snapshot interval while running.
      const int publish_in = static_cast<int>(snapshot_interval.count());
      timeout = timeout < 0 ? publish_in : std::min(timeout, publish_in);
      if (!l.epoll) {
        l.acceptors.front().wait(std::chrono::milliseconds(timeout));
      } else {
        const int n = ::epoll_wait(l.epoll.get(), events.data(), static_cast<int>(events.size()), timeout);
        now = clock::now();
        for (int i = 0; i < n; ++i) {
          l.acceptors[events[static_cast<std::size_t>(i)].data.u64].handle(now);
        }
        for (uring_acceptor& a : l.acceptors) {
          a.on_time(now);
        }
      }
      for (const uring_acceptor& a : l.acceptors) {
        if (a.done() && a.result().error) {
          record_failure(a.result());
        }
      }
      l.publish(clock::now(), false);
    }
  } catch (...) {
    record_failure({stop_reason::other_error, std::make_error_code(std::errc::operation_canceled),
                    std::string(handler_threw_text())},
                   std::current_exception());
    for (uring_acceptor& a : l.acceptors) {
      a.stop();
      try {
        a.handle(clock::now());  // takes the stop request
      } catch (...) {            // a stopping acceptor calls no handler
      }
    }
  }
  l.publish(clock::now(), true);
}

stop_info uring_server::run(std::error_code& ec) {
  if (ran_.exchange(true)) {
    ec = invalid();
    return {stop_reason::programming_error, ec, "transient::uring_server::run() called twice"};
  }
  std::vector<std::thread> threads;
  for (std::size_t i = 1; i < loops_.size(); ++i) {
    threads.emplace_back([this, i] { run_loop(*loops_[i]); });
  }
  run_loop(*loops_[0]);
  for (std::thread& t : threads) {
    t.join();
  }
  shared_->finish();
  for (const auto& l : loops_) {
    for (const uring_acceptor& a : l->acceptors) {
      if (a.result().error) {
        record_failure(a.result());
      }
    }
  }
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

policy_metrics uring_server::metrics() const {
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

policy_health uring_server::health() const {
  policy_health worst;
  for (const auto& l : loops_) {
    const std::lock_guard lock(l->snapshot_mutex);
    if (detail::severity(l->health.state) > detail::severity(worst.state)) {
      worst = l->health;
    }
  }
  return worst;
}

std::uint64_t uring_server::submissions() const {
  std::uint64_t total = 0;
  for (const auto& l : loops_) {
    const std::lock_guard lock(l->snapshot_mutex);
    total += l->submissions;
  }
  return total;
}

}  // namespace transient
