// The io_uring acceptor: one listener's accept policy on a ring it owns. One small function
// per completion (an accept, a wake-up), apply(), which does what the policy decided with
// the ring (arm a multishot or single-shot accept, cancel it, finish), and pump(), which
// submits and takes completions until nothing is left to do. Every decision is the policy's,
// multishot or not too (accept_policy::batch()); the ring reports what it saw: each accept's result
// (on_accept_result, which implies readiness) and a request parked in the kernel.
#include <liburing.h>
#include <poll.h>
#include <sys/epoll.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <optional>

#include "drivers/acceptor_core.hpp"
#include "transient/detail/throw_error.hpp"
#include "transient/drivers/uring.hpp"

namespace transient {
namespace {

using clock = std::chrono::steady_clock;
constexpr std::string_view driver_name = "transient::uring_acceptor";

// A completion's user_data: what it completes and, for accepts, which request (a cancelled
// request's last completions are told from the current one's by their generation).
enum class kind : std::uint64_t { accept = 1, wake = 2, cancel = 3 };
constexpr std::uint64_t tag(kind k, std::uint64_t generation) noexcept {
  return generation << 2U | static_cast<std::uint64_t>(k);
}
constexpr kind kind_of(std::uint64_t data) noexcept { return static_cast<kind>(data & 3U); }
constexpr std::uint64_t generation_of(std::uint64_t data) noexcept { return data >> 2U; }

constexpr int accept_flags = SOCK_NONBLOCK | SOCK_CLOEXEC;
// How long a stopping acceptor waits for its cancelled accept's last completion, whose
// descriptors (connections the ring took meanwhile) it must shed rather than leak.
constexpr auto settle_limit = std::chrono::seconds(1);
// The most a stopping acceptor takes from the backlog after its last completion (sweep()).
constexpr std::uint32_t sweep_limit = 16;

std::string disabled_setting() {
  std::ifstream in("/proc/sys/kernel/io_uring_disabled");
  std::string value;
  if (!(in >> value)) {
    return "";
  }
  return " (/proc/sys/kernel/io_uring_disabled = " + value + ")";
}

// Opens `ring`, or says why io_uring cannot serve here (not_supported) or failed.
std::error_code open_ring(io_uring& ring, unsigned entries, std::string& why) {
  io_uring_params params{};
  params.flags = IORING_SETUP_CQSIZE;
  params.cq_entries = 2 * std::max(entries, 2U);
  const int r = io_uring_queue_init_params(std::max(entries, 2U), &ring, &params);
  if (r < 0) {
    why = std::string("io_uring_setup failed: ") + std::strerror(-r) + disabled_setting();
    if (r == -ENOSYS || r == -EPERM || r == -EACCES) {
      return std::make_error_code(std::errc::not_supported);
    }
    return {-r, std::system_category()};
  }
  std::string missing;
  if ((params.features & IORING_FEAT_EXT_ARG) == 0) {
    missing = "io_uring without timed waits (IORING_FEAT_EXT_ARG, Linux 5.11)";
  } else {
    io_uring_probe* probe = io_uring_get_probe_ring(&ring);
    // IORING_OP_SOCKET came with multishot accept (Linux 5.19); the probe has no flag for the latter.
    if (probe == nullptr || io_uring_opcode_supported(probe, IORING_OP_SOCKET) == 0) {
      missing = "io_uring without multishot accept (Linux 5.19)";
    }
    if (probe != nullptr) {
      io_uring_free_probe(probe);
    }
  }
  if (!missing.empty()) {
    io_uring_queue_exit(&ring);
    why = missing;
    return std::make_error_code(std::errc::not_supported);
  }
  return {};
}

bool takes_accept(step s) noexcept { return s == step::accept || s == step::shed || s == step::drain; }

}  // namespace

bool uring_available(std::string& why) {
  io_uring ring{};
  if (open_ring(ring, 2, why)) {
    return false;
  }
  io_uring_queue_exit(&ring);
  why.clear();
  return true;
}

// The state: what every acceptor keeps (detail/acceptor_core.hpp) and the ring's part.
struct uring_acceptor::state final : detail::acceptor_core<state> {
  state(std::shared_ptr<const listener> l, connection_handler h, acceptor_options o)
      : acceptor_core(std::move(l), std::move(h), std::move(o)) {}

  state(const state&) = delete;
  state& operator=(const state&) = delete;
  ~state() override {
    if (ring_open) {
      io_uring_queue_exit(&ring);
    }
  }

  io_uring ring{};
  std::optional<std::uint64_t> epoll_tag;  // the ring's epoll tag, when the acceptor registered it
  bool ring_open = false;
  bool accept_armed = false;         // the request of `generation` is in the ring (or queued for it)
  bool accept_multishot = false;     // ... and it is a multishot one
  unsigned accepts_outstanding = 0;  // accept requests whose last completion has not come
  bool arm_deferred = false;         // an accept is wanted once the cancelled requests are gone
  bool deferred_multishot = false;   // ... and whether multishot
  std::uint64_t generation = 0;
  bool wake_armed = false;
  std::uint64_t submitted = 0;

  // ---- the ring -------------------------------------------------------------------------

  io_uring_sqe* sqe() {
    io_uring_sqe* e = io_uring_get_sqe(&ring);
    if (e == nullptr) {  // full: submit what is queued and take a free entry
      submit();
      e = io_uring_get_sqe(&ring);
    }
    if (e == nullptr) {
      throw std::system_error(std::make_error_code(std::errc::resource_unavailable_try_again),
                              "transient::uring_acceptor: no free submission queue entry");
    }
    return e;
  }

  void submit() {
    if (io_uring_sq_ready(&ring) == 0) {
      return;
    }
    const int n = io_uring_submit(&ring);
    if (n > 0) {
      submitted += static_cast<std::uint64_t>(n);
    } else if (n < 0 && n != -EINTR && n != -EAGAIN && n != -EBUSY && !done) {
      fail({-n, std::system_category()}, "io_uring_submit");
    }
  }

  // The next completion, flushing an overflowed completion queue into the ring when needed
  // (io_uring_peek_batch_cqe enters the kernel for that; io_uring_peek_cqe does not).
  bool next_completion(io_uring_cqe*& cqe) { return io_uring_peek_batch_cqe(&ring, &cqe, 1) == 1; }

  void arm_wake() {
    if (wake_armed || done) {
      return;
    }
    io_uring_sqe* e = sqe();
    io_uring_prep_poll_add(e, wake.get(), POLLIN);
    io_uring_sqe_set_data64(e, tag(kind::wake, 0));
    wake_armed = true;
  }

  // Accept requests cancelled or replaced whose last completion has not come.
  [[nodiscard]] unsigned stale_requests() const noexcept { return accepts_outstanding - (accept_armed ? 1U : 0U); }

  void arm_accept(bool multishot) {
    if (accept_armed && (!accept_multishot || multishot)) {
      return;  // the request in the ring suits: its next completion is the answer
    }
    cancel_accept();  // a multishot where only one accept fits
    if (stale_requests() > 0) {
      // A cancelled request leaves the listener's wait queue only in its submitter's task work.
      // Until then a client can wake it instead of a new request (an accept's poll wakes one
      // waiter) and wait unseen in the backlog; a request armed after the old one's last
      // completion looks at the backlog first.
      arm_deferred = true;
      deferred_multishot = multishot;
      return;
    }
    io_uring_sqe* e = sqe();
    if (multishot) {
      io_uring_prep_multishot_accept(e, source->native_handle(), nullptr, nullptr, accept_flags);
    } else {
      io_uring_prep_accept(e, source->native_handle(), nullptr, nullptr, accept_flags);
    }
    ++generation;
    io_uring_sqe_set_data64(e, tag(kind::accept, generation));
    accept_armed = true;
    accept_multishot = multishot;
    ++accepts_outstanding;
  }

  // Arms the accept that waited for the cancelled requests, once they are all gone.
  void arm_if_deferred() {
    if (arm_deferred && !done && stale_requests() == 0) {
      arm_deferred = false;
      arm_accept(deferred_multishot);
    }
  }

  void cancel_accept() {
    arm_deferred = false;  // a pause or a stop: no accept is wanted now
    if (!accept_armed) {
      return;
    }
    io_uring_sqe* e = sqe();
    io_uring_prep_cancel64(e, tag(kind::accept, generation), 0);
    io_uring_sqe_set_data64(e, tag(kind::cancel, generation));
    accept_armed = false;
    ++generation;  // its last completions are no longer the current request's
  }

  // ---- events -----------------------------------------------------------------------------

  void on_completion(time_point now, std::uint64_t data, int res, unsigned flags) {
    switch (kind_of(data)) {
      case kind::accept:
        on_accept_completion(now, generation_of(data), res, flags);
        arm_if_deferred();
        return;
      case kind::wake: on_wake(now); return;
      case kind::cancel: return;
    }
  }

  void on_accept_completion(time_point now, std::uint64_t gen, int res, unsigned flags) {
    bool more = (flags & IORING_CQE_F_MORE) != 0;
    const bool current = gen == generation && accept_armed;
    if (res != -ECANCELED) {
      res = sys.uring_accept_result(res);
    }
    if (res < 0 && more) {
      // A seam's failure while the kernel's request goes on: the completion is handled as
      // the kernel's own failure, which ends a multishot accept (no IORING_CQE_F_MORE).
      detach(gen);
      more = false;
    }
    if (!more) {
      --accepts_outstanding;
      if (current) {
        accept_armed = false;  // ended: by a failure, a CQ overflow, or a single-shot's one result
      }
    }
    if (res >= 0) {
      accepted(now, unique_fd(res));
      return;
    }
    if (res == -ECANCELED || !current || done) {
      return;  // our own cancel, or a request already replaced
    }
    failed(now, {-res, std::system_category()});
  }

  // Lets the kernel's request `gen` go on apart from the one the driver tracks, which has just
  // ended: it is cancelled (if current; a replaced one already was), its later completions
  // are another generation's, and its own last completion is still awaited (outstanding).
  void detach(std::uint64_t gen) {
    ++accepts_outstanding;
    if (gen != generation || !accept_armed) {
      return;
    }
    io_uring_sqe* e = sqe();
    io_uring_prep_cancel64(e, tag(kind::accept, gen), 0);
    io_uring_sqe_set_data64(e, tag(kind::cancel, gen));
    ++generation;
  }

  void accepted(time_point now, unique_fd fd) {
    if (quiet) {
      return;  // a failure's stop, or the destructor's (the handler may be gone with its owner)
    }
    sockaddr_storage address{};
    socklen_t length = sizeof address;
    auto* const sa = reinterpret_cast<sockaddr*>(&address);
    std::error_code ignored;
    endpoint peer;
    peer_key key;
    if (reads_peer_addresses() && ::getpeername(fd.get(), sa, &length) == 0) {
      peer = endpoint::from_sockaddr(sa, length, ignored);
      key = peer_key_of(sa, length);
    }
    apply(deliver(now, std::move(fd), peer, key, true), now);
  }

  void failed(time_point now, std::error_code ec) {
    note_accept_error(ec);
    apply(policy.on_accept_result(now, ec, spare.held()), now);
  }

  void on_wake(time_point now) {
    wake_armed = false;
    take_wake();
    if (stopping()) {
      return;
    }
    if (!done) {
      apply(policy.on_release(now), now);
      arm_wake();
    }
  }

  void apply(decision d, time_point now) {
    if (done && d.next != step::stop && d.next != step::fail) {
      return;
    }
    if (d.next != step::drain) {
      spare.take();
    }
    switch (d.next) {
      case step::drain: spare.give_up(); [[fallthrough]];
      case step::accept:
      case step::shed:
        timed = false;
        arm_accept(policy.batch() > 1);
        return;
      case step::wait:
        timed = d.until != time_point{};
        until = d.until;
        arm_accept(policy.batch() > 1);
        return;
      case step::pause_for_release:
        timed = false;
        cancel_accept();
        return;
      case step::pause_until:
        timed = true;
        until = d.until;
        cancel_accept();
        return;
      case step::stop:
      case step::fail: finish(d, now); return;
    }
  }

  // After the completions of one submission: the policy waits for an accept's answer, the
  // request is in the ring and nothing came: it is parked in the kernel, which the policy
  // hears (on_accept_parked); its result comes later, as a completion.
  bool found_parked(time_point now) {
    if (done || !accept_armed || io_uring_sq_ready(&ring) != 0 || io_uring_cq_ready(&ring) != 0 ||
        !takes_accept(policy.current().next)) {
      return false;
    }
    apply(policy.on_accept_parked(now), now);
    return true;
  }

  // Submits and takes completions until nothing is left to do. Each round takes completions
  // or changes the policy's state, so it ends; the bound is a guard, not a timing.
  void pump(time_point now) {
    for (int round = 0; round < 4096; ++round) {
      submit();
      bool took = false;
      io_uring_cqe* cqe = nullptr;
      while (next_completion(cqe)) {
        const std::uint64_t data = cqe->user_data;
        const int res = cqe->res;
        const unsigned flags = cqe->flags;
        io_uring_cqe_seen(&ring, cqe);
        took = true;
        on_completion(now, data, res, flags);
      }
      if (io_uring_sq_ready(&ring) != 0) {
        continue;
      }
      if (!took && !found_parked(now)) {
        return;
      }
    }
  }

  void finish(const decision& d, time_point now) {
    if (conclude(d)) {
      cancel_accept();
      settle(now);
      if (d.next == step::stop) {
        sweep(now);  // a clean stop: the clients a failure leaves are the next holder's
      }
      let_go();
    }
  }

  // An accept request waits for its client as an exclusive waiter on the listener: a client
  // wakes one request. One that a cancel reaches after its wake-up takes no client, and the
  // client waits in the backlog unseen by every other request already armed on the socket,
  // until the next client wakes one: a successor that took the listener over, or another
  // ring sharing it, whose request is older than the cancel. (A request armed after the last
  // completion looks at the backlog first: arm_accept defers to that.) So the stopping
  // acceptor looks at the backlog once more, while the stopped policy would serve what it
  // takes, up to a burst; what is left there is the next holder's, and a client wakes it.
  void sweep(time_point now) {
    for (std::uint32_t i = 0; i < sweep_limit && source && !quiet && policy.serves_late(); ++i) {
      unique_fd fd(sys.accept4(source->native_handle(), nullptr, nullptr, accept_flags));
      if (!fd) {
        return;  // EAGAIN: nothing waits; any other error: the listener is no longer ours to read
      }
      accepted(now, std::move(fd));
    }
  }

  // Waits (bounded) for the last completion of every accept request: a multishot accept
  // may have taken connections before the cancel reached it, and their descriptors are ours
  // to shed (the stopped policy sheds them), not to leak when the ring closes.
  void settle(time_point now) {
    const auto limit = clock::now() + settle_limit;
    while (accepts_outstanding > 0 && clock::now() < limit) {
      submit();
      __kernel_timespec ts{0, 10'000'000};
      io_uring_cqe* cqe = nullptr;
      const int r = io_uring_wait_cqes(&ring, &cqe, 1, &ts, nullptr);
      if (r < 0 && r != -ETIME && r != -EINTR) {
        return;
      }
      while (next_completion(cqe)) {
        const std::uint64_t data = cqe->user_data;
        const int res = cqe->res;
        const unsigned flags = cqe->flags;
        io_uring_cqe_seen(&ring, cqe);
        if (kind_of(data) == kind::accept) {
          on_accept_completion(now, generation_of(data), res, flags);
        }
      }
    }
  }
};

uring_acceptor::uring_acceptor(listener source, connection_handler handler, acceptor_options options,
                               uring_options ring)
    : uring_acceptor(detail::owned(driver_name, std::move(source)), std::move(handler), std::move(options), ring) {}

uring_acceptor::uring_acceptor(std::shared_ptr<const listener> source, connection_handler handler,
                               acceptor_options options, uring_options ring) {
  detail::check_acceptor(driver_name, source, handler);
  check_driver_options(driver_name, options.policy, static_cast<bool>(options.refuse));
  auto s = std::make_shared<state>(std::move(source), std::move(handler), std::move(options));
  std::string why;
  if (const std::error_code ec = open_ring(s->ring, ring.entries, why)) {
    throw std::system_error(ec, "transient::uring_acceptor: " + why);
  }
  s->ring_open = true;
  s->open(driver_name);
  s->budget->add(s.get(), s);
  state_ = std::move(s);
  const auto now = clock::now();
  state_->arm_wake();
  state_->apply(state_->policy.current(), now);  // wait: arms the accept
  // Submitted, not reaped: a client already queued completes at once, and its completion waits
  // for the first handle(), on the loop that owns the acceptor (a server makes its loop's
  // handler there, after the acceptor).
  state_->submit();
  state_->budget->check_fit_once(state_->options.policy.sink);
}

uring_acceptor::~uring_acceptor() {
  if (!state_) {
    return;
  }
  if (!state_->done) {
    state_->quiet = true;
    try {
      state_->policy.request_stop();
      state_->finish(state_->policy.on_stop(clock::now()), clock::now());
    } catch (...) {  // a stopping acceptor calls no handler; nothing else throws here
    }
  }
  state_->budget->remove(state_.get());
}

uring_acceptor::uring_acceptor(uring_acceptor&& other) noexcept = default;

uring_acceptor& uring_acceptor::operator=(uring_acceptor&& other) noexcept {
  if (this != &other) {
    uring_acceptor gone(std::move(*this));
    state_ = std::move(other.state_);
  }
  return *this;
}

uring_acceptor::uring_acceptor(int epoll_fd, std::shared_ptr<const listener> source, acceptor_tags tags,
                               connection_handler handler, acceptor_options options, uring_options ring)
    : uring_acceptor(std::move(source), std::move(handler), std::move(options), ring) {
  epoll_event event{};
  event.events = EPOLLIN;
  event.data.u64 = tags.listener;
  // The ring's descriptor leaves the epoll set as it closes with the acceptor.
  if (::epoll_ctl(epoll_fd, EPOLL_CTL_ADD, native_handle(), &event) != 0) {
    throw std::system_error(detail::last_error(), "transient::uring_acceptor: epoll_ctl");
  }
  state_->epoll_tag = tags.listener;
}

int uring_acceptor::native_handle() const noexcept { return state_->ring.ring_fd; }

bool uring_acceptor::handle(const epoll_event& event, time_point now) {
  if (!state_->epoll_tag || event.data.u64 != *state_->epoll_tag) {
    return false;
  }
  handle(now);
  return true;
}

void uring_acceptor::handle(time_point now) {
  state& s = *state_;
  s.guarded([&] {
    if (!s.stopping()) {
      s.pump(now);
    }
  });
}

void uring_acceptor::on_time(time_point now) {
  state& s = *state_;
  s.guarded([&] {
    s.timer(now);
    if (!s.done) {
      s.pump(now);
    }
  });
}

void uring_acceptor::wait(std::chrono::milliseconds timeout) {
  state& s = *state_;
  if (!s.done) {
    __kernel_timespec ts{};
    ts.tv_sec = timeout.count() / 1000;
    ts.tv_nsec = (timeout.count() % 1000) * 1'000'000;
    io_uring_cqe* cqe = nullptr;
    const int r = io_uring_submit_and_wait_timeout(&s.ring, &cqe, 1, timeout.count() >= 0 ? &ts : nullptr, nullptr);
    if (r < 0 && r != -ETIME && r != -EINTR && r != -EAGAIN && r != -EBUSY) {
      s.fail({-r, std::system_category()}, "io_uring_enter");
    }
  }
  const auto now = clock::now();
  handle(now);
  on_time(now);
}

void uring_acceptor::set_loop_handler(loop_handler* handler) noexcept { state_->loop_target = handler; }

uring_acceptor::time_point uring_acceptor::next_timer() const noexcept { return state_->next_timer(); }
int uring_acceptor::timeout_ms(time_point now) const noexcept { return state_->timeout_ms(now); }

void uring_acceptor::stop() noexcept {
  request_stop();
  state_->signal();
}

void uring_acceptor::request_stop() noexcept { state_->request_stop(); }
bool uring_acceptor::done() const noexcept { return state_->done; }
const stop_info& uring_acceptor::result() const noexcept { return state_->result; }
bool uring_acceptor::armed() const noexcept { return state_->accept_armed; }
policy_metrics uring_acceptor::metrics() const noexcept { return state_->metrics(); }
policy_health uring_acceptor::health() const noexcept { return state_->policy.health(); }
std::uint64_t uring_acceptor::submissions() const noexcept { return state_->submitted; }
const std::shared_ptr<shared_budget>& uring_acceptor::budget() const noexcept { return state_->budget; }
const endpoint& uring_acceptor::local_endpoint() const noexcept { return state_->where; }

}  // namespace transient
