// The acceptor: one listener's accept policy in an epoll loop the user owns. One small
// function per event (readiness, wake-up, timer, stop), and apply(), which does what the
// policy decided with epoll and accept4; every decision is the policy's.
#include "transient/drivers/acceptor.hpp"

#include <sys/epoll.h>

#include "drivers/acceptor_core.hpp"
#include "transient/detail/throw_error.hpp"

namespace transient {
namespace {

constexpr std::string_view driver_name = "transient::acceptor";

}  // namespace

// The state: what every acceptor keeps (detail/acceptor_core.hpp) and the epoll set's part.
struct acceptor::state final : detail::acceptor_core<state> {
  state(int epfd, std::shared_ptr<const listener> l, acceptor_tags t, connection_handler h, acceptor_options o)
      : acceptor_core(std::move(l), std::move(h), std::move(o)), epoll_fd(epfd), tags(t) {}

  int epoll_fd;
  acceptor_tags tags;
  bool armed = false;  // the listener is in the epoll set

  // The wake-up is level-triggered (see take_wake).
  void woken(time_point now) {
    take_wake();
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

  void apply(decision d, time_point now) {
    for (;;) {
      if (d.next != step::drain) {
        spare.take();  // a no-op unless a drain gave it up or another thread took its number
      }
      switch (d.next) {
        case step::drain: spare.give_up(); [[fallthrough]];
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
        case step::fail: finish(d, now); return;
      }
    }
  }

  decision accept_one(time_point now) {
    sockaddr_storage address;  // NOLINT(cppcoreguidelines-pro-type-member-init): accept4 fills `length` bytes
    socklen_t length = sizeof address;
    auto* const sa = reinterpret_cast<sockaddr*>(&address);
    const bool with_peer = reads_peer_addresses();
    const int fd = sys.accept4(source->native_handle(), with_peer ? sa : nullptr, with_peer ? &length : nullptr,
                               SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      const std::error_code ec = detail::last_error();
      note_accept_error(ec);
      return policy.on_accept_failed(now, ec, spare.held());
    }
    if (!with_peer) {
      return deliver(now, unique_fd(fd), endpoint{}, peer_key{});
    }
    std::error_code ignored;
    const endpoint peer = endpoint::from_sockaddr(sa, length, ignored);
    // The key is for the per-peer cap only: without one, the policy never reads it.
    const peer_key key = options.policy.peers != nullptr ? peer_key_of(sa, length) : peer_key{};
    return deliver(now, unique_fd(fd), peer, key);
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
    if (sys.epoll_ctl(epoll_fd, on ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, source->native_handle(), &event) != 0) {
      fail(detail::last_error(), "epoll_ctl on a listener");
      return;
    }
    armed = on;
  }

  void finish(const decision& d, time_point /*now*/) {
    if (conclude(d)) {
      arm(false);
      unwatch_wake();
      let_go();
    }
  }

  // The wake-up leaves the epoll set (its descriptor stays open until the state is gone; see
  // acceptor_core).
  void unwatch_wake() noexcept {
    if (wake) {
      epoll_event event{};
      sys.epoll_ctl(epoll_fd, EPOLL_CTL_DEL, wake.get(), &event);
    }
  }
};

acceptor::acceptor(int epoll_fd, listener source, acceptor_tags tags, connection_handler handler,
                   acceptor_options options)
    : acceptor(epoll_fd, detail::owned(driver_name, std::move(source)), tags, std::move(handler), std::move(options)) {}

acceptor::acceptor(int epoll_fd, std::shared_ptr<const listener> source, acceptor_tags tags, connection_handler handler,
                   acceptor_options options) {
  detail::check_acceptor(driver_name, source, handler);
  if (tags.listener == tags.wake) {
    throw std::system_error(std::make_error_code(std::errc::invalid_argument),
                            "transient::acceptor needs two different epoll tags");
  }
  check_driver_options(driver_name, options.policy, static_cast<bool>(options.refuse));
  auto s = std::make_shared<state>(epoll_fd, std::move(source), tags, std::move(handler), std::move(options));
  s->open(driver_name);
  epoll_event event{};
  event.events = EPOLLIN;
  event.data.u64 = tags.wake;
  if (s->sys.epoll_ctl(epoll_fd, EPOLL_CTL_ADD, s->wake.get(), &event) != 0) {
    throw std::system_error(detail::last_error(), "transient::acceptor: epoll_ctl(eventfd)");
  }
  try {
    s->budget->add(s.get(), s);
  } catch (...) {
    s->unwatch_wake();
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
    state_->budget->remove(state_.get());
    state_->unwatch_wake();
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
  s.guarded([&] { wake ? s.woken(now) : s.ready(now); });
  return true;
}

void acceptor::on_time(time_point now) {
  state& s = *state_;
  s.guarded([&] { s.timer(now); });
}

void acceptor::set_loop_handler(loop_handler* handler) noexcept { state_->loop_target = handler; }

acceptor::time_point acceptor::next_timer() const noexcept { return state_->next_timer(); }
int acceptor::timeout_ms(time_point now) const noexcept { return state_->timeout_ms(now); }

void acceptor::stop() noexcept {
  request_stop();
  state_->signal();
}

void acceptor::request_stop() noexcept { state_->request_stop(); }
bool acceptor::done() const noexcept { return state_->done; }
const stop_info& acceptor::result() const noexcept { return state_->result; }
bool acceptor::armed() const noexcept { return state_->armed; }
policy_metrics acceptor::metrics() const noexcept { return state_->metrics(); }
policy_health acceptor::health() const noexcept { return state_->policy.health(); }
const std::shared_ptr<shared_budget>& acceptor::budget() const noexcept { return state_->budget; }
const endpoint& acceptor::local_endpoint() const noexcept { return state_->where; }
acceptor_tags acceptor::tags() const noexcept { return state_->tags; }

}  // namespace transient
