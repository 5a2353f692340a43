// The server, written once for every driver: transient::server (server.cpp, epoll acceptors)
// and transient::uring_server (uring/uring_server.cpp, io_uring acceptors) are this class over
// their acceptor. N loops, each a thread with an epoll set, an acceptor per listener it
// watches and, given a loop_handler_factory, the loop's handler (server.hpp), all drawing on one
// budget. The server only waits, passes each event to its acceptor or its watcher, publishes
// the counters and turns a failure into its own stop; accepting is the acceptors'.
//
// A driver derives its server from server_core<its server, its acceptor>, calls open_loops()
// at the end of its constructor, and gives:
//   - name: "transient::server", for messages;
//   - check_supported(): throws if the driver cannot work here, before anything is opened;
//   - add_acceptors(loop&, listeners, handler, settings): a loop's acceptors, one per
//     listener, registered in the loop's epoll set with tags_of(their index). Both acceptors
//     take the events of their tags through handle(event, now).
#pragma once

#include <linux/futex.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <vector>

#include "drivers/acceptor_core.hpp"
#include "transient/detail/throw_error.hpp"
#include "transient/diagnosis/diagnostics.hpp"
#include "transient/drivers/server.hpp"
#include "transient/sockets/listen_queue.hpp"

namespace transient::detail {

/// Worst first: stopped > degraded > backpressure > accepting.
[[nodiscard]] inline int severity(health_state s) noexcept {
  switch (s) {
    case health_state::accepting: return 0;
    case health_state::backpressure: return 1;
    case health_state::degraded: return 2;
    case health_state::stopped: return 3;
  }
  return 0;
}

/// The first epoll tag of the acceptors: above every descriptor number, which tags the
/// handler's descriptors.
inline constexpr std::uint64_t first_acceptor_tag = std::uint64_t{1} << 32U;

/// The tags of a loop's acceptor `index`: its listener and its wake-up, so that an event's
/// tag, less first_acceptor_tag, divided by two is the acceptor it belongs to.
[[nodiscard]] inline acceptor_tags tags_of(std::size_t index) noexcept {
  const std::uint64_t first = first_acceptor_tag + 2 * static_cast<std::uint64_t>(index);
  return {first, first + 1};
}

/// The policy settings of loop `t` of `loops`: with several, its lines name the loop (the
/// acceptor puts the listener's address first), else three loops give three identical lines.
[[nodiscard]] inline accept_policy_config labelled(accept_policy_config config, unsigned t, unsigned loops) {
  if (loops > 1) {
    config.label += (config.label.empty() ? "loop " : " loop ") + std::to_string(t + 1) + "/" + std::to_string(loops);
  }
  return config;
}

/// stop() may run on any thread or in a signal handler while run() destroys the acceptors it
/// calls. It announces itself in `users` before looking at `finished`; run() sets `finished`,
/// then waits for `users` to drain before destroying. Sequentially consistent order on both
/// atomics makes one side see the other.
///
/// The wait sleeps on a futex. A sched_yield loop (and std::atomic::wait, which libstdc++ begins
/// with one) hands the processor to another process for a whole time slice on a loaded machine:
/// milliseconds, where the stopping thread needs microseconds. A futex wake is a plain system
/// call, so leave() stays safe in a signal handler.
class stop_gate {
 public:
  /// Announces a stop(); false (and nothing to do) once finish() has begun.
  bool enter() noexcept {
    users_.fetch_add(1);
    if (finished_.load()) {
      leave();
      return false;
    }
    return true;
  }
  /// Ends what enter() began.
  void leave() noexcept {
    if (users_.fetch_sub(1) == 1 && finished_.load()) {
      ::syscall(SYS_futex, &users_, FUTEX_WAKE_PRIVATE, INT_MAX, nullptr, nullptr, 0);
    }
  }
  /// Closes the gate and waits until no stop() is inside.
  void finish() noexcept {
    finished_.store(true);
    for (int n = users_.load(); n != 0; n = users_.load()) {
      ::syscall(SYS_futex, &users_, FUTEX_WAIT_PRIVATE, n, nullptr, nullptr, 0);  // returns at once if users moved
    }
  }

 private:
  std::atomic<bool> finished_{false};
  std::atomic<int> users_{0};
  static_assert(sizeof(std::atomic<int>) == sizeof(int) && std::atomic<int>::is_always_lock_free);
};

/// One loop: an epoll set, an acceptor per listener it watches, the user's loop handler (if
/// any) with the descriptors it watches, and the counters it last published for metrics()
/// and health().
template <typename Acceptor>
class server_loop final : public loop {
 public:
  /// How often a loop publishes its counters.
  static constexpr auto snapshot_interval = std::chrono::milliseconds(100);

  /// Loop `index`, with its epoll set. Throws std::system_error.
  explicit server_loop(unsigned index) : epoll(::epoll_create1(EPOLL_CLOEXEC)), index_(index) {
    if (!epoll) {
      throw std::system_error(last_error(), "epoll_create1");
    }
  }

  unique_fd epoll;
  std::vector<Acceptor> acceptors;
  std::unique_ptr<loop_handler> handler;  // made on the loop's thread by run()

  mutable std::mutex snapshot_mutex;  // guards the snapshots
  policy_metrics metrics;
  policy_health health_snapshot;
  std::uint64_t submissions = 0;  // drivers whose acceptors count them (io_uring)
  time_point last_snapshot{};

  void watch(int fd, std::uint32_t events, io_watcher& watcher, std::error_code& ec) noexcept override {
    ec = make_room(fd);
    if (!ec) {
      ec = control(EPOLL_CTL_ADD, fd, events);
    }
    if (!ec) {
      watchers_[static_cast<std::size_t>(fd)] = &watcher;
      ++watched_;
    }
  }
  void modify(int fd, std::uint32_t events, std::error_code& ec) noexcept override {
    ec = control(EPOLL_CTL_MOD, fd, events);
  }
  void unwatch(int fd) noexcept override {
    if (watching(fd)) {
      [[maybe_unused]] const std::error_code ignored = control(EPOLL_CTL_DEL, fd, 0);
      forget(fd);
    }
  }
  void forget(int fd) noexcept override {
    if (watching(fd)) {
      watchers_[static_cast<std::size_t>(fd)] = nullptr;
      --watched_;
    }
  }
  [[nodiscard]] unsigned index() const noexcept override { return index_; }
  [[nodiscard]] policy_health health() const noexcept override {
    policy_health worst;
    for (const Acceptor& a : acceptors) {
      if (const policy_health h = a.health(); severity(h.state) > severity(worst.state)) {
        worst = h;
      }
    }
    return worst;
  }

  using loop::set_now;
  /// Passes a handler's event to the watcher of its descriptor, if still watched.
  void deliver(const epoll_event& e) const {
    const auto fd = static_cast<std::size_t>(e.data.u64);
    if (fd < watchers_.size() && watchers_[fd] != nullptr) {
      watchers_[fd]->on_ready(static_cast<int>(fd), e.events);
    }
  }
  /// True while the handler watches a descriptor.
  [[nodiscard]] bool watching_any() const noexcept { return watched_ > 0; }

  /// Publishes the acceptors' counters if the interval has passed (or `force`); true if it did.
  bool publish(time_point now, bool force) {
    if (!force && now - last_snapshot < snapshot_interval) {
      return false;
    }
    last_snapshot = now;
    policy_metrics m;
    std::uint64_t sqes = 0;
    for (const Acceptor& a : acceptors) {
      m += a.metrics();
      if constexpr (requires { a.submissions(); }) {
        sqes += a.submissions();
      }
    }
    const policy_health worst = health();
    const std::lock_guard lock(snapshot_mutex);
    metrics = m;
    health_snapshot = worst;
    submissions = sqes;
    return true;
  }

 private:
  [[nodiscard]] bool watching(int fd) const noexcept {
    return fd >= 0 && static_cast<std::size_t>(fd) < watchers_.size() &&
           watchers_[static_cast<std::size_t>(fd)] != nullptr;
  }

  // A slot in the watcher table for `fd`, before the kernel watches it.
  [[nodiscard]] std::error_code make_room(int fd) noexcept {
    if (fd < 0) {
      return std::make_error_code(std::errc::bad_file_descriptor);
    }
    try {
      if (static_cast<std::size_t>(fd) >= watchers_.size()) {
        watchers_.resize(std::max(static_cast<std::size_t>(fd) + 1, 2 * watchers_.size()), nullptr);
      }
      return {};
    } catch (const std::bad_alloc&) {
      return std::make_error_code(std::errc::not_enough_memory);
    }
  }

  [[nodiscard]] std::error_code control(int op, int fd, std::uint32_t events) const noexcept {
    if (fd < 0) {
      return std::make_error_code(std::errc::bad_file_descriptor);
    }
    epoll_event event{};
    event.events = events;
    event.data.u64 = static_cast<std::uint64_t>(fd);
    return ::epoll_ctl(epoll.get(), op, fd, &event) == 0 ? std::error_code{} : last_error();
  }

  unsigned index_;
  std::vector<io_watcher*> watchers_;  // by descriptor: the handler's watches
  std::size_t watched_ = 0;
};

/// The server over `Acceptor`s; `Driver` is the driver's server, derived from it (see the
/// file comment). Each public member is the one of transient::server of the same name.
template <typename Driver, typename Acceptor>
class server_core {
 public:
  /// A loop of this server.
  using loop = server_loop<Acceptor>;
  /// The clock of the loops.
  using clock = std::chrono::steady_clock;
  /// Events taken per wait.
  static constexpr int max_events = 64;

  server_core(const server_core&) = delete;
  server_core& operator=(const server_core&) = delete;

  /// Stops the loops and waits until no stop() is inside before the acceptors go.
  ~server_core() {
    stop();
    gate_.finish();
  }

  stop_info run(std::error_code& ec) {
    if (ran_.exchange(true)) {
      ec = std::make_error_code(std::errc::invalid_argument);
      return {stop_reason::programming_error, ec, std::string(Driver::name) + "::run() called twice"};
    }
    std::vector<std::thread> threads;
    for (std::size_t i = 1; i < loops_.size(); ++i) {
      threads.emplace_back([this, i] { run_loop(*loops_[i]); });
    }
    run_loop(*loops_[0]);
    for (std::thread& t : threads) {
      t.join();
    }
    gate_.finish();
    // A policy failure (stall, dead listener) is the first acceptor's result that is not clean.
    for (const auto& l : loops_) {
      for (const Acceptor& a : l->acceptors) {
        if (a.result().error) {
          record_failure(a.result());
        }
      }
    }
    // Close what run() opened; keep the budget: live connections hold permits.
    for (const auto& l : loops_) {
      const std::lock_guard lock(l->snapshot_mutex);
      l->acceptors.clear();
      l->epoll.reset();
    }

    const std::lock_guard lock(mutex_);
    if (handler_exception_) {
      std::rethrow_exception(handler_exception_);
    }
    ec = failure_.error;
    return failure_;
  }

  stop_info run() {
    std::error_code ec;
    stop_info info = run(ec);
    if (ec) {
      throw std::system_error(ec, info.diagnosis.empty() ? std::string(to_string(info.reason)) : info.diagnosis);
    }
    return info;
  }

  // Each acceptor lets go of its listener as it stops, so the listener closes with the last
  // (clients arriving are refused, those queued reset) unless another process holds it too.
  void stop() noexcept {
    if (!gate_.enter()) {
      return;
    }
    for (const auto& l : loops_) {
      for (Acceptor& a : l->acceptors) {
        a.stop();
      }
    }
    gate_.leave();
  }

  [[nodiscard]] policy_metrics metrics() const {
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

  [[nodiscard]] policy_health health() const {
    policy_health worst;
    for (const auto& l : loops_) {
      const std::lock_guard lock(l->snapshot_mutex);
      if (severity(l->health_snapshot.state) > severity(worst.state)) {
        worst = l->health_snapshot;
      }
    }
    return worst;
  }

  /// Submission queue entries, summed over the loops' last snapshots (io_uring).
  [[nodiscard]] std::uint64_t submissions() const {
    std::uint64_t total = 0;
    for (const auto& l : loops_) {
      const std::lock_guard lock(l->snapshot_mutex);
      total += l->submissions;
    }
    return total;
  }

  [[nodiscard]] const connection_budget& budget() const noexcept { return budget_->budget(); }

  [[nodiscard]] std::vector<endpoint> local_endpoints() const { return endpoints_; }

  [[nodiscard]] std::vector<std::optional<listen_queue>> accept_queues() const {
    std::vector<std::optional<listen_queue>> queues;
    queues.reserve(watched_.size());
    for (const std::weak_ptr<const listener>& w : watched_) {
      queues.push_back(queue_while_held(w));
    }
    return queues;
  }

 protected:
  /// Checks the arguments (throws std::system_error as server::server says) and keeps the
  /// listeners for open_loops(), opening the SO_REUSEPORT shards if asked.
  server_core(std::vector<listener> listeners, connection_handler handler, server_options options)
      : handler_(std::move(handler)), options_(std::move(options)), sys_(seam_of(options_.sys)) {
    start(std::move(listeners), static_cast<bool>(handler_), "a connection handler");
  }
  /// As above, with a handler per loop made by `factory`.
  server_core(std::vector<listener> listeners, loop_handler_factory factory, server_options options)
      : factory_(std::move(factory)), options_(std::move(options)), sys_(seam_of(options_.sys)) {
    start(std::move(listeners), static_cast<bool>(factory_), "a loop handler factory");
  }

  /// Makes the loops. The server keeps no listener: each closes when the last acceptor
  /// holding it lets go.
  void open_loops() {
    const acceptor_options settings = acceptor_settings();
    const bool measure = options_.threads > 1;
    const std::size_t before = measure ? take_fd_census().total : 0;
    std::size_t per_loop = 0;  // descriptors the first loop opened (measured with several)
    for (unsigned t = 0; t < options_.threads; ++t) {
      try {
        open_loop(t, settings);
      } catch (const std::system_error& e) {
        const bool out_of_descriptors =
            e.code() == std::errc::too_many_files_open || e.code() == std::errc::too_many_files_open_in_system;
        if (t == 0 || !out_of_descriptors) {
          throw;
        }
        throw std::system_error(e.code(), "loop " + std::to_string(t + 1) + " of " + std::to_string(options_.threads) +
                                              " cannot start (" + e.what() + "); each loop holds " +
                                              std::to_string(per_loop) + " descriptors of its own");
      }
      if (measure && t == 0) {
        per_loop = take_fd_census().total - before;
      }
    }
    watched_.assign(listeners_.begin(), listeners_.begin() + static_cast<std::ptrdiff_t>(endpoints_.size()));
    listeners_.clear();
  }

  /// The settings given.
  [[nodiscard]] const server_options& options() const noexcept { return options_; }

 private:
  // Loop `t`, with the driver's acceptors over its listeners (the given ones, shared by every
  // loop, or its own shards).
  void open_loop(unsigned t, acceptor_options settings) {
    auto l = std::make_unique<loop>(t);
    std::vector<std::shared_ptr<const listener>> mine;
    for (std::size_t k = 0; k < endpoints_.size(); ++k) {
      mine.push_back(listeners_[shards_ ? t * endpoints_.size() + k : k]);
    }
    settings.policy = labelled(options_.policy, t, options_.threads);
    static_cast<Driver&>(*this).add_acceptors(*l, mine, handler_of(*l), settings);
    l->publish(clock::now(), true);  // metrics() says what is measured before the loop first runs
    loops_.push_back(std::move(l));
  }

  // The constructors' shared part: points the options at the server's own copy of the
  // syscall table (the caller's need not outlive the constructor), refuses a missing
  // `callee` (what each connection goes to) and keeps the listeners.
  void start(std::vector<listener> listeners, bool has_callee, std::string_view callee) {
    options_.sys = &sys_;
    if (!has_callee) {
      throw std::system_error(std::make_error_code(std::errc::invalid_argument),
                              std::string(Driver::name) + " needs " + std::string(callee));
    }
    take(std::move(listeners));
  }

  // Checks the arguments and takes the listeners (see the constructors).
  void take(std::vector<listener> listeners) {
    const std::string name(Driver::name);
    const auto invalid = std::make_error_code(std::errc::invalid_argument);
    if (listeners.empty() || !std::ranges::all_of(listeners, [](const listener& l) { return l.is_open(); })) {
      throw std::system_error(invalid, name + " needs at least one open listener");
    }
    if (options_.threads == 0) {
      throw std::system_error(invalid, name + " needs threads >= 1");
    }
    check_driver_options(name, options_.policy, static_cast<bool>(options_.refuse));
    Driver::check_supported();
    budget_ = shared_budget::create(options_.max_connections);
    shards_ = options_.reuse_port_shards && options_.threads > 1;
    for (const listener& l : listeners) {
      if (shards_ && !l.reuse_port()) {
        throw std::system_error(invalid, "reuse_port_shards needs listeners opened with SO_REUSEPORT (" +
                                             l.local_endpoint().to_string() + " was not)");
      }
      endpoints_.push_back(l.local_endpoint());
    }
    for (listener& l : listeners) {
      listeners_.push_back(std::make_shared<const listener>(std::move(l)));
    }
    if (shards_) {
      open_shards();
    }
  }

  void open_shards() {
    listen_options shard_options;
    shard_options.reuse_port = true;
    for (unsigned t = 1; t < options_.threads; ++t) {
      for (const endpoint& where : endpoints_) {
        listeners_.push_back(std::make_shared<const listener>(listen(where, shard_options)));
      }
    }
  }

  [[nodiscard]] acceptor_options acceptor_settings() const {
    acceptor_options settings;
    settings.budget = budget_;
    settings.refuse = options_.refuse;
    settings.spare_fd = options_.spare_fd;
    settings.peer_addresses = options_.peer_addresses;
    // A listener shared by several loops wakes only one of them per connection.
    settings.exclusive = options_.threads > 1 && !shards_;
    settings.open_diagnosis_fds = false;
    if (options_.diagnosis_fds) {
      std::error_code ignored;  // without it the census degrades, and says so
      settings.diagnostics = std::make_shared<const diagnosis_fds>(diagnosis_fds::open(ignored));
    }
    settings.sys = &sys_;
    return settings;
  }

  // What the acceptors of `l` hand their connections to: the user's handler, or the loop's
  // (which run_loop() then lets them call directly: see hand_to()).
  [[nodiscard]] connection_handler handler_of(loop& l) const {
    if (!factory_) {
      return handler_;
    }
    return [&l](connection c) { l.handler->on_connection(std::move(c)); };
  }

  // One loop, on its thread: the acceptors' earliest timer, the handler's and the next
  // snapshot bound each wait.
  void run_loop(loop& l) {
    try {
      l.set_now(clock::now());
      if (factory_) {
        l.handler = factory_(l);
        hand_to(l, l.handler.get());
      }
      serve(l);
    } catch (...) {
      record_failure({stop_reason::other_error, std::make_error_code(std::errc::operation_canceled),
                      std::string(handler_threw_text())},
                     std::current_exception());
      abandon(l);
    }
    hand_to(l, nullptr);
    l.handler.reset();
    l.publish(clock::now(), true);
  }

  // The acceptors of `l` call `handler` directly (null: the handler they were given).
  static void hand_to(loop& l, loop_handler* handler) noexcept {
    for (Acceptor& a : l.acceptors) {
      a.set_loop_handler(handler);
    }
  }

  void serve(loop& l) {
    std::array<epoll_event, max_events> events{};
    bool dirty = true;   // counters changed since the last snapshot
    bool ended = false;  // accepting ended, and the handler heard it
    while (!ended || l.watching_any()) {
      const int n = sys_.epoll_wait(l.epoll.get(), events.data(), max_events, timeout_of(l, dirty));
      if (n < 0 && errno != EINTR) {  // the loop cannot wait: it ends, and the server stops
        const std::error_code ec = last_error();
        record_failure({stop_reason_of(ec), ec, "epoll_wait failed: " + ec.message()});
        abandon(l);
        return;
      }
      l.set_now(clock::now());
      for (int i = 0; i < n; ++i) {
        dispatch(l, events[static_cast<std::size_t>(i)]);
      }
      if (on_time(l) && !ended) {
        ended = true;
        l.publish(l.now(), true);  // the stop, and a failure's reason, are visible at once
        if (l.handler) {
          l.handler->on_accepting_end();
        }
      }
      // An interrupted wait (n < 0: EINTR, which io_uring's task work causes) counts as events:
      // the acceptors' timers (on_time) then take the completions it posted.
      dirty = !l.publish(l.now(), false) && (dirty || n != 0);
    }
  }

  [[nodiscard]] int timeout_of(const loop& l, bool dirty) const {
    auto when = clock::time_point::max();
    for (const Acceptor& a : l.acceptors) {
      when = std::min(when, a.next_timer());
    }
    if (l.handler) {
      when = std::min(when, l.handler->next_timer());
    }
    if (dirty) {  // wake once more to publish the counters, even if nothing else happens
      when = std::min(when, l.last_snapshot + loop::snapshot_interval);
    }
    return when == clock::time_point::max() ? -1 : ms_until(l.now(), when);
  }

  static void dispatch(loop& l, const epoll_event& e) {
    if (e.data.u64 < first_acceptor_tag) {
      l.deliver(e);
      return;
    }
    const auto index = static_cast<std::size_t>((e.data.u64 - first_acceptor_tag) / 2);
    if (index < l.acceptors.size()) {
      l.acceptors[index].handle(e, l.now());
    }
  }

  // The timers that fell due; a failed acceptor (stall, dead listener) stops the server.
  // Returns true once every acceptor of the loop is done.
  bool on_time(loop& l) {
    std::size_t done = 0;
    for (Acceptor& a : l.acceptors) {
      a.on_time(l.now());
      if (a.done()) {
        ++done;
        if (a.result().error) {
          record_failure(a.result());
        }
      }
    }
    if (l.handler) {
      l.handler->on_time(l.now());
    }
    return done == l.acceptors.size();
  }

  // After an exception on the loop: its acceptors stop (the one that called the handler has
  // stopped itself) and its handler goes, closing what it held.
  static void abandon(loop& l) noexcept {
    const auto now = clock::now();
    for (Acceptor& a : l.acceptors) {
      a.stop();
      try {
        a.on_time(now);  // takes the stop request
      } catch (...) {    // a stopping acceptor calls no handler
      }
    }
    hand_to(l, nullptr);
    try {
      l.handler.reset();
    } catch (...) {  // NOLINT(bugprone-empty-catch): a destructor that throws ends nothing more
    }
  }

  // The queue of `w`'s listener if an acceptor still holds it. The reading holds it too, so its
  // descriptor cannot close (or be reused) under the getsockopt; if the last acceptor lets go
  // meanwhile, the socket closes as this reading ends, on this thread.
  [[nodiscard]] static std::optional<listen_queue> queue_while_held(const std::weak_ptr<const listener>& w) noexcept {
    const std::shared_ptr<const listener> held = w.lock();
    std::error_code ec;
    const listen_queue q = held ? queue_of(held->native_handle(), ec) : listen_queue{};
    if (!held || ec) {
      return std::nullopt;
    }
    return q;
  }

  void record_failure(stop_info info, std::exception_ptr exception = nullptr) {
    {
      const std::lock_guard lock(mutex_);
      if (!failure_.error && !handler_exception_) {
        failure_ = std::move(info);
        handler_exception_ = std::move(exception);
      }
    }
    stop();
  }

  // The listeners until open_loops() hands them to the acceptors: the caller's, then the
  // shards the server opened.
  std::vector<std::shared_ptr<const listener>> listeners_;
  std::vector<endpoint> endpoints_;  // of the caller's listeners, in their order
  // The caller's listeners, for accept_queues(). Weak, so that the server holds no listener of
  // its own: a listener closes with its last acceptor (a drain refuses new clients at once),
  // and a reading never meets a closed or reused descriptor, without a lock the loops would take
  // or a duplicate descriptor to close in step with them. Written by open_loops() only.
  std::vector<std::weak_ptr<const listener>> watched_;
  bool shards_ = false;
  connection_handler handler_;
  loop_handler_factory factory_;
  server_options options_;
  syscalls sys_;  // a copy of *options_.sys (or the real calls); the acceptors copy it in turn
  // The budget all loops share. Connections share its ownership, so a connection may outlive
  // the server.
  std::shared_ptr<shared_budget> budget_;
  stop_gate gate_;
  std::vector<std::unique_ptr<loop>> loops_;
  std::atomic<bool> ran_{false};

  mutable std::mutex mutex_;  // guards what follows
  stop_info failure_;
  std::exception_ptr handler_exception_;
};

}  // namespace transient::detail
