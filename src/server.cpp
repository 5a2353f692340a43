// The epoll server: each loop runs one accept_policy per listener and does what it decides.
#include "transient/server.hpp"

#include <fcntl.h>
#include <sys/eventfd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <limits>
#include <thread>

#include "transient/classify.hpp"
#include "transient/detail/throw_error.hpp"
#include "transient/diagnostics.hpp"
#include "transient/error.hpp"

namespace transient {
namespace {

using clock = std::chrono::steady_clock;

constexpr std::uint64_t wake_token = std::numeric_limits<std::uint64_t>::max();
constexpr int max_events = 64;
// How often a loop publishes its counters for metrics() and health().
constexpr auto snapshot_interval = std::chrono::milliseconds(100);

std::error_code invalid() { return std::make_error_code(std::errc::invalid_argument); }

// Milliseconds until `until`, rounded up so the loop never wakes a little early and spins.
int timeout_until(clock::time_point now, clock::time_point until) {
  if (until <= now) {
    return 0;
  }
  const auto ms = std::chrono::ceil<std::chrono::milliseconds>(until - now).count();
  return static_cast<int>(std::min<std::int64_t>(ms, std::numeric_limits<int>::max()));
}

stop_reason reason_of(const std::error_code& ec) {
  if (!ec) {
    return stop_reason::clean;
  }
  if (ec == condition::stalled) {
    return stop_reason::stalled;
  }
  if (ec == condition::not_listening) {
    return stop_reason::listener_dead;
  }
  if (ec == condition::programming_error || ec == condition::not_supported) {
    return stop_reason::programming_error;
  }
  return stop_reason::other_error;
}

// Worst first: stopped > degraded > backpressure > accepting.
int severity(health_state s) {
  switch (s) {
    case health_state::accepting: return 0;
    case health_state::backpressure: return 1;
    case health_state::degraded: return 2;
    case health_state::stopped: return 3;
  }
  return 0;
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

// One listener as one loop watches it.
struct server::watch {
  int fd = -1;
  std::size_t index = 0;  // in server::listeners_
  std::unique_ptr<accept_policy> policy;
  bool armed = false;  // in the epoll set
  bool timed = false;  // paused until `until`
  bool done = false;   // the policy stopped
  clock::time_point until{};
};

// stop() and wake-ups may run on any thread (a wake-up: wherever a permit is released, even
// after the server is gone), or in a signal handler, while run() closes the descriptors they
// write to. Each announces itself in `users` before looking at `finished`; run() sets
// `finished`, then waits for `users` to drain before closing. Sequentially consistent order
// on both atomics makes one side see the other.
struct server::shared {
  shared(std::uint64_t max, std::uint64_t fd_limit) : budget(max, fd_limit) {}

  connection_budget budget;
  std::vector<int> wake_fds;  // the loops' eventfds (owned by the loops)
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
  void wake() noexcept {
    if (!enter()) {
      return;
    }
    const std::uint64_t one = 1;
    for (const int fd : wake_fds) {
      // An eventfd write fails only if the counter would overflow: then it is already set.
      [[maybe_unused]] const ssize_t n = ::write(fd, &one, sizeof one);
    }
    leave();
  }
};

struct server::loop {
  unique_fd epoll;
  unique_fd wake;  // eventfd: permit releases while paused, and stop()
  std::vector<watch> watches;
  bool wants_reserve = false;  // emfile_reserve, for a shed mode that is not queue
  unique_fd emfile_reserve;
  std::error_code last_accept_error;  // what exhausted us, for the diagnosis

  mutable std::mutex snapshot_mutex;  // guards the two snapshots
  policy_metrics metrics;
  policy_health health;
  clock::time_point last_snapshot{};

  [[nodiscard]] bool finished() const {
    return std::ranges::all_of(watches, [](const watch& w) { return w.done; });
  }
};

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
    event.data.u64 = wake_token;
    if (::epoll_ctl(l->epoll.get(), EPOLL_CTL_ADD, l->wake.get(), &event) != 0) {
      throw std::system_error(detail::last_error(), "epoll_ctl(eventfd)");
    }
    // Shared listeners: every loop watches each one. Shards: loop t watches its own copies.
    for (std::size_t k = 0; k < given_listeners_; ++k) {
      const std::size_t i = shards ? t * given_listeners_ + k : k;
      watch w;
      w.fd = listeners_[i].native_handle();
      w.index = i;
      w.policy = std::make_unique<accept_policy>(shared_->budget, options_.policy);
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

void server::run_loop_guarded(loop& l) {
  try {
    run_loop(l);
  } catch (...) {
    record_failure(
        {stop_reason::other_error, std::make_error_code(std::errc::operation_canceled), "the connection handler threw"},
        std::current_exception());
    const auto now = clock::now();
    for (watch& w : l.watches) {
      if (!w.done) {
        w.policy->request_stop();
        [[maybe_unused]] const decision d = w.policy->on_stop(now);
        w.done = true;
      }
    }
    publish(l, now, true);
  }
}

void server::arm(loop& l, watch& w, bool on) {
  if (w.armed == on) {
    return;
  }
  epoll_event event{};
  // A listener shared by several loops wakes only one of them per connection.
  const bool shared_listener = loops_.size() > 1 && !options_.reuse_port_shards;
  event.events = EPOLLIN | (shared_listener ? EPOLLEXCLUSIVE : 0U);
  event.data.u64 = static_cast<std::uint64_t>(&w - l.watches.data());
  // EPOLLEXCLUSIVE cannot be modified in place (EPOLL_CTL_MOD gives EINVAL): pausing removes
  // the listener, resuming adds it again.
  if (options_.sys.epoll_ctl(l.epoll.get(), on ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, w.fd, &event) != 0) {
    const std::error_code ec = detail::last_error();
    record_failure({reason_of(ec), ec, "epoll_ctl on a listener failed: " + ec.message()});
    return;
  }
  w.armed = on;
}

void server::shed(int fd, const endpoint& peer, shed_mode mode) {
  if (mode == shed_mode::reset) {
    // SO_LINGER {on, 0 s}: close() sends a reset instead of a FIN.
    const linger abortive{1, 0};
    options_.sys.setsockopt(fd, SOL_SOCKET, SO_LINGER, &abortive, sizeof abortive);
  } else if (mode == shed_mode::respond && options_.refuse) {
    options_.refuse(fd, peer);
  }
  options_.sys.close(fd);
}

// Takes the reserve descriptor if the loop wants one and lacks it. It can fail (EMFILE) only
// when something took the number shed_with_reserve freed; the loop then tries again before
// each accept, so the reserve comes back first when a descriptor is free, as it was first at
// start (a client that would have taken that descriptor is shed instead, as the mode says).
// Any other failure (no /dev/null in a chroot) will not pass: the loop stops asking, rather
// than pay a failing open() before every accept.
void server::take_reserve(loop& l) {
  if (l.wants_reserve && !l.emfile_reserve) {
    l.emfile_reserve.reset(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    if (!l.emfile_reserve && errno != EMFILE && errno != ENFILE) {
      l.wants_reserve = false;
    }
  }
}

// libuv's trick, used only when a shed mode asks for it: under EMFILE no descriptor is free
// for accept, so a queued client would wait for the whole episode. Give up the reserve for a
// moment, accept that one client, shed it, and take the reserve again. With several loops (or
// a handler thread opening files), another thread may grab the freed number first; the
// accept then fails like the one before, and the reserve is taken again later (take_reserve).
void server::shed_with_reserve(loop& l, watch& w) {
  l.emfile_reserve.reset();
  sockaddr_storage address{};
  socklen_t length = sizeof address;
  const int fd =
      options_.sys.accept4(w.fd, reinterpret_cast<sockaddr*>(&address), &length, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (fd >= 0) {
    std::error_code ignored;
    shed(fd, endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&address), length, ignored), options_.policy.shed);
    reserve_sheds_.fetch_add(1, std::memory_order_relaxed);
  }
  take_reserve(l);
}

std::string server::diagnose_failure(const loop& l, const watch& w, const std::error_code& ec) {
  if (ec == condition::stalled) {
    const std::lock_guard lock(diagnostics_mutex_);
    return diagnose({l.last_accept_error, shared_->budget.live(), shared_->budget.max_connections(),
                     options_.policy.stall_timeout},
                    diagnostics_)
        .text;
  }
  const listener& source = listeners_[w.index];
  if (ec == condition::not_listening) {
    const verify_report report = verify(source);
    return "listener " + source.local_endpoint().to_string() + " stopped listening" +
           (report.message.empty() ? std::string() : ": " + report.message);
  }
  return "accept on " + source.local_endpoint().to_string() + " failed: " + ec.message() + " (" +
         std::string(classify(operation::accept, ec).advice) + ")";
}

void server::apply(loop& l, watch& w, decision d, clock::time_point now) {
  for (;;) {
    switch (d.next) {
      case step::accept:
      case step::shed: {
        take_reserve(l);  // a no-op unless a shed under EMFILE lost it
        sockaddr_storage address{};
        socklen_t length = sizeof address;
        const int fd =
            options_.sys.accept4(w.fd, reinterpret_cast<sockaddr*>(&address), &length, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
          const std::error_code ec = detail::last_error();
          l.last_accept_error = ec;
          if (ec.value() == EMFILE && l.emfile_reserve) {
            shed_with_reserve(l, w);
          }
          d = w.policy->on_accept_failed(now, ec);
          continue;
        }
        unique_fd accepted(fd);
        std::error_code ignored;
        const endpoint peer = endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&address), length, ignored);
        permit place;
        d = w.policy->on_accepted(now, place, peer_key_of(reinterpret_cast<sockaddr*>(&address), length));
        if (d.shed_accepted) {
          shed(accepted.release(), peer, d.shed);
        } else {
          handler_(connection(std::move(accepted), std::move(place), peer, shared_));
        }
        continue;
      }
      case step::wait:
        w.timed = false;
        arm(l, w, true);
        return;
      case step::pause_for_release:
        w.timed = false;
        arm(l, w, false);
        return;
      case step::pause_until:
        w.timed = true;
        w.until = d.until;
        arm(l, w, false);
        return;
      case step::stop:
      case step::fail:
        arm(l, w, false);
        w.done = true;
        w.timed = false;
        if (d.next == step::fail) {
          std::string text = diagnose_failure(l, w, d.error);
          w.policy->attach_diagnosis(text);
          record_failure({reason_of(d.error), d.error, std::move(text)});
        }
        return;
    }
  }
}

bool server::publish(loop& l, clock::time_point now, bool force) {
  if (!force && now - l.last_snapshot < snapshot_interval) {
    return false;
  }
  l.last_snapshot = now;
  policy_metrics metrics;
  policy_health worst;
  for (const watch& w : l.watches) {
    metrics += w.policy->metrics();
    const policy_health h = w.policy->health();
    if (severity(h.state) > severity(worst.state)) {
      worst = h;
    }
  }
  const std::lock_guard lock(l.snapshot_mutex);
  l.metrics = metrics;
  l.health = worst;
  return true;
}

void server::run_loop(loop& l) {
  const auto start = clock::now();
  for (watch& w : l.watches) {
    apply(l, w, w.policy->current(), start);
  }
  std::array<epoll_event, max_events> events{};
  std::vector<std::size_t> ready;
  ready.reserve(l.watches.size());
  bool dirty = true;  // counters changed since the last snapshot
  while (!l.finished()) {
    auto now = clock::now();
    int timeout = -1;
    for (const watch& w : l.watches) {
      if (w.timed && !w.done) {
        const int t = timeout_until(now, w.until);
        timeout = timeout < 0 ? t : std::min(timeout, t);
      }
    }
    if (dirty) {  // wake once more to publish the counters, even if nothing else happens
      const int publish_in = timeout_until(now, l.last_snapshot + snapshot_interval);
      timeout = timeout < 0 ? publish_in : std::min(timeout, publish_in);
    }
    const int n = options_.sys.epoll_wait(l.epoll.get(), events.data(), max_events, timeout);
    if (n < 0 && errno != EINTR) {
      const std::error_code ec = detail::last_error();
      record_failure({reason_of(ec), ec, "epoll_wait failed: " + ec.message()});
    }
    now = clock::now();
    bool woken = false;
    ready.clear();
    for (int i = 0; i < n; ++i) {
      if (events[static_cast<std::size_t>(i)].data.u64 == wake_token) {
        std::uint64_t count = 0;
        [[maybe_unused]] const ssize_t r = ::read(l.wake.get(), &count, sizeof count);
        woken = true;
      } else {
        ready.push_back(static_cast<std::size_t>(events[static_cast<std::size_t>(i)].data.u64));
      }
    }
    if (stopping_.load()) {
      for (watch& w : l.watches) {
        if (!w.done) {
          w.policy->request_stop();
          apply(l, w, w.policy->on_stop(now), now);
        }
      }
      break;
    }
    if (woken) {
      for (watch& w : l.watches) {
        if (!w.done && !w.armed) {
          apply(l, w, w.policy->on_release(now), now);
        }
      }
    }
    for (const std::size_t index : ready) {
      watch& w = l.watches[index];
      if (!w.done && w.armed) {
        apply(l, w, w.policy->on_ready(now), now);
      }
    }
    for (watch& w : l.watches) {
      if (!w.done && w.timed && w.until <= now) {
        apply(l, w, w.policy->on_timer(now), now);
      }
    }
    dirty = !publish(l, now, false) && (dirty || n > 0);
  }
  publish(l, clock::now(), true);
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
    if (severity(l->health.state) > severity(worst.state)) {
      worst = l->health;
    }
  }
  return worst;
}

}  // namespace transient
