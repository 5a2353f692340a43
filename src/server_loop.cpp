// One loop of the epoll server: it waits on epoll, runs one accept_policy per listener it
// watches and does what each decides (accept, pause, resume, shed, stop).
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <limits>

#include "detail/server_parts.hpp"
#include "transient/classify.hpp"
#include "transient/detail/throw_error.hpp"
#include "transient/error.hpp"

namespace transient {
namespace {

using clock = std::chrono::steady_clock;

constexpr int max_events = 64;
// How often a loop publishes its counters for metrics() and health().
constexpr auto snapshot_interval = std::chrono::milliseconds(100);

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

}  // namespace

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
// for accept, so queued clients would wait for the whole episode. Give up the reserve for a
// moment, accept and shed the queued clients (each shed frees the number the next accept
// takes), up to accepts_per_ready so that one listener cannot hold the loop, and take the
// reserve again. Draining stops at the first failure: EAGAIN (the queue is empty) or, with
// several loops (or a handler thread opening files), EMFILE because another thread grabbed
// the freed number; the reserve is then taken again later (take_reserve).
void server::shed_with_reserve(loop& l, watch& w) {
  l.emfile_reserve.reset();
  for (std::uint32_t i = 0; i < options_.policy.accepts_per_ready; ++i) {
    sockaddr_storage address{};
    socklen_t length = sizeof address;
    const int fd =
        options_.sys.accept4(w.fd, reinterpret_cast<sockaddr*>(&address), &length, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      break;
    }
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
      case step::shed:
      case step::drain: {
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
    if (detail::severity(h.state) > detail::severity(worst.state)) {
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
      if (events[static_cast<std::size_t>(i)].data.u64 == detail::wake_token) {
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

}  // namespace transient
