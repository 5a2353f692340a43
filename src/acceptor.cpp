// The acceptor: one listener's accept policy in an epoll loop the user owns. One small
// function per event (readiness, wake-up, timer, stop), and apply(), which does what the
// policy decided with epoll and accept4; every decision is the policy's.
#include "transient/acceptor.hpp"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <limits>

#include "transient/detail/throw_error.hpp"

namespace transient {

// The state is shared: the budget's wake-up registry holds it weakly and, while it wakes it,
// strongly, possibly on another thread. The wake-up eventfd therefore closes with the state,
// never before, so such a write cannot reach a reused descriptor number.
namespace {

// The policy's lines name the listener first, then what the driver adds ("loop 2/3").
accept_policy_config labelled(accept_policy_config config, const endpoint& where) {
  config.label = config.label.empty() ? where.to_string() : where.to_string() + " " + config.label;
  return config;
}

}  // namespace

struct acceptor::state final : release_listener {
  state(int epfd, std::shared_ptr<const listener> l, acceptor_tags t, connection_handler h, acceptor_options o)
      : epoll_fd(epfd),
        source(std::move(l)),
        tags(t),
        handler(std::move(h)),
        options(std::move(o)),
        budget(options.budget ? options.budget : shared_budget::create(options.max_connections)),
        policy(budget->budget(), labelled(options.policy, source->local_endpoint())),
        reserve(options.emfile_reserve && options.policy.shed != shed_mode::queue) {}

  state(const state&) = delete;
  state& operator=(const state&) = delete;
  ~state() override = default;

  int epoll_fd;
  std::shared_ptr<const listener> source;
  acceptor_tags tags;
  connection_handler handler;
  acceptor_options options;
  std::shared_ptr<shared_budget> budget;  // before policy: the policy refers to its budget
  accept_policy policy;
  emfile_reserve reserve;
  std::shared_ptr<const diagnostics_reserve> diagnostics;
  unique_fd wake;
  std::atomic<bool> wake_pending{false};    // any thread: a wake-up is written and not yet taken
  std::atomic<bool> stop_requested{false};  // any thread
  bool armed = false;                       // the listener is in the epoll set
  bool timed = false;                       // on_timer is due at `until` (a pause ends, a quiet period ends)
  bool done = false;
  time_point until{};
  std::error_code last_accept_error;  // what exhausted us, for a stall diagnosis
  std::uint64_t refusals_failed = 0;
  stop_info result;

  // Any thread, a signal handler: at most one eventfd write until the loop takes it (see
  // take_wake for why the flag cannot lose a wake-up).
  void signal() noexcept {
    if (!wake_pending.exchange(true, std::memory_order_acq_rel)) {
      const std::uint64_t one = 1;
      // Fails only if the counter would overflow: then it is readable already.
      [[maybe_unused]] const ssize_t n = ::write(wake.get(), &one, sizeof one);
    }
  }
  void on_permit_released() noexcept override { signal(); }

  // The wake-up is level-triggered and read here. mio's alternative (EPOLLET, written once,
  // never read) saves this read, but an edge is lost for good if the counter ever fills or
  // the loop misses it; wake-ups come only while paused, so the read costs nothing on a busy
  // server. Read first, then clear the flag with an exchange: a signal() in between is either
  // after the exchange (it writes again: readable again) or before it (the exchange reads its
  // store, so what it published is visible to the handling that follows).
  void take_wake(time_point now) {
    std::uint64_t count = 0;
    [[maybe_unused]] const ssize_t r = ::read(wake.get(), &count, sizeof count);
    wake_pending.exchange(false, std::memory_order_acq_rel);
    if (stopping()) {
      return;
    }
    if (!done && !armed) {
      apply(policy.on_release(now), now);
    }
  }

  void ready(time_point now) {
    if (!stopping() && !done && armed) {
      apply(policy.on_ready(now), now);
    }
  }

  void timer(time_point now) {
    if (!stopping() && !done && timed && until <= now) {
      apply(policy.on_timer(now), now);
    }
  }

  // True (and the acceptor stopped) once stop() was called.
  bool stopping() {
    if (!stop_requested.load(std::memory_order_acquire)) {
      return false;
    }
    if (!done) {
      policy.request_stop();
      apply(policy.on_stop(time_point::clock::now()), time_point::clock::now());
    }
    return true;
  }

  void apply(decision d, time_point now) {
    for (;;) {
      if (d.next != step::drain) {
        reserve.take();  // a no-op unless a drain gave it up or another thread took its number
      }
      switch (d.next) {
        case step::drain: reserve.give_up(); [[fallthrough]];
        case step::accept:
        case step::shed: d = accept_one(now); continue;
        case step::wait:
          timed = d.until != time_point{};  // an episode's `recovered` line may fall due while waiting
          until = d.until;
          arm(true);
          return;
        case step::pause_for_release:
          timed = false;
          arm(false);
          return;
        case step::pause_until:
          timed = true;
          until = d.until;
          arm(false);
          return;
        case step::stop:
        case step::fail: finish(d); return;
      }
    }
  }

  decision accept_one(time_point now) {
    sockaddr_storage address;  // NOLINT(cppcoreguidelines-pro-type-member-init): accept4 fills `length` bytes
    socklen_t length = sizeof address;
    auto* const sa = reinterpret_cast<sockaddr*>(&address);
    const int fd = options.sys.accept4(source->native_handle(), sa, &length, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      const std::error_code ec = detail::last_error();
      if (ec != condition::would_block) {
        last_accept_error = ec;
      }
      return policy.on_accept_failed(now, ec, reserve.held());
    }
    unique_fd accepted(fd);
    std::error_code ignored;
    const endpoint peer = endpoint::from_sockaddr(sa, length, ignored);
    permit place;
    // The key is for the per-peer cap only: without one, the policy never reads it.
    const peer_key key = options.policy.peers != nullptr ? peer_key_of(sa, length) : peer_key{};
    const decision d = policy.on_accepted(now, place, key);
    if (d.shed_accepted) {
      if (!shed(std::move(accepted), peer, d.shed, options.refuse, options.sys)) {
        ++refusals_failed;
      }
    } else {
      handler(connection(std::move(accepted), std::move(place), peer, budget));
    }
    return d;
  }

  // EPOLLEXCLUSIVE cannot be modified in place (EPOLL_CTL_MOD gives EINVAL): pausing removes
  // the listener, resuming adds it again.
  void arm(bool on) {
    if (armed == on) {
      return;
    }
    epoll_event event{};
    event.events = EPOLLIN | (options.exclusive ? EPOLLEXCLUSIVE : 0U);
    event.data.u64 = tags.listener;
    if (options.sys.epoll_ctl(epoll_fd, on ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, source->native_handle(), &event) != 0) {
      const std::error_code ec = detail::last_error();
      if (!done) {
        policy.request_stop();
        finish(policy.on_stop(time_point::clock::now()));
        result = {stop_reason_of(ec), ec, "epoll_ctl on a listener failed: " + ec.message()};
      }
      return;
    }
    armed = on;
  }

  void finish(const decision& d) {
    if (done) {
      return;
    }
    done = true;
    timed = false;
    arm(false);
    unregister();
    reserve.clear();
    if (d.next == step::fail) {
      failure_context context;
      context.where = source->local_endpoint().to_string();
      if (d.error == condition::not_listening) {
        context.listener_state = verify(*source).message;
      }
      context.last_accept_error = last_accept_error;
      context.live = budget->budget().live();
      context.max_connections = budget->budget().max_connections();
      context.stall_timeout = options.policy.stall_timeout;
      const diagnostics_reserve none;
      std::string text = failure_text(d.error, context, diagnostics ? *diagnostics : none);
      policy.attach_diagnosis(text);
      result = {stop_reason_of(d.error), d.error, std::move(text)};
    }
  }

  // The wake-up leaves the epoll set and the budget's registry (its descriptor stays open
  // until the state is gone; see above).
  void unregister() noexcept {
    budget->remove(this);
    if (wake) {
      epoll_event event{};
      options.sys.epoll_ctl(epoll_fd, EPOLL_CTL_DEL, wake.get(), &event);
    }
  }

  // The handler threw: stop, and let the exception go on to the user's loop.
  void abandon() noexcept {
    if (!done) {
      policy.request_stop();
      finish(policy.on_stop(time_point::clock::now()));
      result = {stop_reason::other_error, std::make_error_code(std::errc::operation_canceled),
                std::string(handler_threw_text())};
    }
  }
};

namespace {

std::shared_ptr<const listener> owned(listener source) {
  if (!source.is_open()) {
    throw std::system_error(std::make_error_code(std::errc::invalid_argument),
                            "transient::acceptor needs an open listener");
  }
  return std::make_shared<const listener>(std::move(source));
}

}  // namespace

acceptor::acceptor(int epoll_fd, listener source, acceptor_tags tags, connection_handler handler,
                   acceptor_options options)
    : acceptor(epoll_fd, owned(std::move(source)), tags, std::move(handler), std::move(options)) {}

acceptor::acceptor(int epoll_fd, std::shared_ptr<const listener> source, acceptor_tags tags, connection_handler handler,
                   acceptor_options options) {
  const auto invalid = std::make_error_code(std::errc::invalid_argument);
  if (!source || !source->is_open()) {
    throw std::system_error(invalid, "transient::acceptor needs an open listener");
  }
  if (!handler) {
    throw std::system_error(invalid, "transient::acceptor needs a connection handler");
  }
  if (tags.listener == tags.wake) {
    throw std::system_error(invalid, "transient::acceptor needs two different epoll tags");
  }
  check_driver_options("transient::acceptor", options.policy, static_cast<bool>(options.refuse));
  auto s = std::make_shared<state>(epoll_fd, std::move(source), tags, std::move(handler), std::move(options));
  if (s->options.diagnostics) {
    s->diagnostics = s->options.diagnostics;
  } else if (s->options.open_diagnostics_reserve) {
    std::error_code ignored;  // without it the census degrades, and says so
    s->diagnostics = std::make_shared<const diagnostics_reserve>(diagnostics_reserve::open(ignored));
  }
  s->wake.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!s->wake) {
    throw std::system_error(detail::last_error(), "transient::acceptor: eventfd");
  }
  epoll_event event{};
  event.events = EPOLLIN;
  event.data.u64 = tags.wake;
  if (s->options.sys.epoll_ctl(epoll_fd, EPOLL_CTL_ADD, s->wake.get(), &event) != 0) {
    throw std::system_error(detail::last_error(), "transient::acceptor: epoll_ctl(eventfd)");
  }
  try {
    s->budget->add(s.get(), s);
  } catch (...) {
    s->options.sys.epoll_ctl(epoll_fd, EPOLL_CTL_DEL, s->wake.get(), &event);
    throw;
  }
  state_ = std::move(s);
  state_->apply(state_->policy.current(), clock::now());  // wait: adds the listener
  // Once per budget (server, serve, a user's loops): say so if it cannot fit the descriptors left.
  state_->budget->check_fit_once(state_->options.policy.sink);
}

acceptor::~acceptor() {
  if (state_) {
    state_->done = true;
    state_->arm(false);
    state_->unregister();
  }
}

acceptor::acceptor(acceptor&& other) noexcept = default;

acceptor& acceptor::operator=(acceptor&& other) noexcept {
  if (this != &other) {
    acceptor gone(std::move(*this));
    state_ = std::move(other.state_);
  }
  return *this;
}

bool acceptor::handle(const epoll_event& event, time_point now) {
  state& s = *state_;
  const bool wake = event.data.u64 == s.tags.wake;
  if (!wake && event.data.u64 != s.tags.listener) {
    return false;
  }
  try {
    if (wake) {
      s.take_wake(now);
    } else {
      s.ready(now);
    }
  } catch (...) {
    s.abandon();
    throw;
  }
  return true;
}

void acceptor::on_time(time_point now) {
  state& s = *state_;
  try {
    s.timer(now);
  } catch (...) {
    s.abandon();
    throw;
  }
}

acceptor::time_point acceptor::next_timer() const noexcept {
  return state_->timed && !state_->done ? state_->until : time_point::max();
}

int acceptor::timeout_ms(time_point now) const noexcept {
  const time_point when = next_timer();
  if (when == time_point::max()) {
    return -1;
  }
  if (when <= now) {
    return 0;
  }
  // Rounded up, so the loop never wakes a little early and spins.
  const auto ms = std::chrono::ceil<std::chrono::milliseconds>(when - now).count();
  return static_cast<int>(std::min<std::int64_t>(ms, std::numeric_limits<int>::max()));
}

void acceptor::stop() noexcept {
  request_stop();
  state_->signal();
}

void acceptor::request_stop() noexcept {
  state& s = *state_;
  s.stop_requested.store(true, std::memory_order_release);
  s.policy.request_stop();  // before the listener may be shut down: EINVAL then is a clean stop
}

bool acceptor::done() const noexcept { return state_->done; }
const stop_info& acceptor::result() const noexcept { return state_->result; }
bool acceptor::armed() const noexcept { return state_->armed; }

policy_metrics acceptor::metrics() const noexcept {
  policy_metrics m = state_->policy.metrics();
  m.refusals_failed += state_->refusals_failed;
  return m;
}

policy_health acceptor::health() const noexcept { return state_->policy.health(); }
const std::shared_ptr<shared_budget>& acceptor::budget() const noexcept { return state_->budget; }
const endpoint& acceptor::local_endpoint() const noexcept { return state_->source->local_endpoint(); }
acceptor_tags acceptor::tags() const noexcept { return state_->tags; }

}  // namespace transient
