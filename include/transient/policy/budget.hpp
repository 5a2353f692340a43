// transient/policy/budget.hpp: the connection budget and its permits, the per-peer cap, the
// budget several loops share, whether a budget fits the descriptors left, and the accepted
// connection that holds a permit. Include it to size or share a budget or to cap peers.
// Design: docs/design.md, "Budget and permits".
#pragma once

#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "transient/policy/events.hpp"
#include "transient/sockets/endpoint.hpp"
#include "transient/sockets/unique_fd.hpp"

// At most N live connections per peer (an IPv4 address or an IPv6 /64), in fixed memory: a keyed
// counting sketch that may refuse a peer early but never admits one over the cap (docs/design.md).

namespace transient {

/// The identity of a peer for the per-peer cap: an IPv4 address or an IPv6 /64 prefix.
/// A default-constructed key means "unknown peer" and is never limited.
struct peer_key {
  std::uint64_t prefix = 0;  ///< IPv4: the address (host order); IPv6: the first 64 bits (host order).
  unsigned char family = 0;  ///< AF_INET, AF_INET6, or 0 for "unknown".

  /// True if the key names a peer.
  explicit operator bool() const noexcept { return family != 0; }
  friend bool operator==(const peer_key&, const peer_key&) = default;
};

/// The key of the peer at `address` (as filled by accept4). IPv4-mapped IPv6 addresses
/// give the IPv4 key. Other families (AF_UNIX...) and short lengths give an empty key.
[[nodiscard]] peer_key peer_key_of(const sockaddr* address, socklen_t length) noexcept;

/// The two counters one peer occupies in a peer_limit (returned by try_acquire).
struct peer_slot {
  std::uint32_t first = 0;   ///< Index in the first row.
  std::uint32_t second = 0;  ///< Index in the second row.
};

/// A fixed-size, thread-safe table of live connections per peer.
class peer_limit {
 public:
  /// Allows `max_per_peer` live connections per peer, using `buckets` counters per row
  /// (rounded up to a power of two, at least 64) and a hash keyed with `seed` (0: a random
  /// key from std::random_device). Throws std::system_error (invalid_argument) if
  /// `max_per_peer` is 0 or `buckets` exceeds 2^24.
  explicit peer_limit(std::uint32_t max_per_peer, std::size_t buckets = 16384, std::uint64_t seed = 0);

  peer_limit(const peer_limit&) = delete;
  peer_limit& operator=(const peer_limit&) = delete;

  /// Counts one more connection from `peer` and fills `slot`, unless the peer already has
  /// max_per_peer() connections: then nothing changes and the answer is false.
  /// An empty key is always accepted and counted nowhere (`slot` is left untouched).
  [[nodiscard]] bool try_acquire(peer_key peer, peer_slot& slot) noexcept;

  /// Forgets one connection counted by try_acquire.
  void release(peer_slot slot) noexcept;

  /// The live connections counted for `peer` (an upper bound; exact unless both of the
  /// peer's counters are shared with other peers).
  [[nodiscard]] std::uint32_t count(peer_key peer) const noexcept;

  /// The cap per peer.
  [[nodiscard]] std::uint32_t max_per_peer() const noexcept { return max_; }

  /// Bytes of counters (fixed for the object's lifetime).
  [[nodiscard]] std::size_t memory_bytes() const noexcept { return 2 * buckets_ * sizeof(std::atomic<std::uint32_t>); }

 private:
  [[nodiscard]] peer_slot slot_of(peer_key peer) const noexcept;

  std::uint32_t max_;
  std::size_t buckets_;
  std::uint64_t key_;
  std::unique_ptr<std::atomic<std::uint32_t>[]> counters_;  // row 1: [0, buckets), row 2: [buckets, 2*buckets)
};

}  // namespace transient

// How many connections may be open at once, and the permit that holds one place. The budget is
// taken before accept; a place's life and the wake-ups: docs/design.md, "Budget and permits".

namespace transient {

/// Called by a release when some loop waits for one (see connection_budget::set_waker).
/// Must be thread-safe and must not throw; typically it writes to an eventfd.
struct waker {
  void (*wake)(void* context) noexcept = nullptr;  ///< The function to call; nullptr: none.
  void* context = nullptr;                         ///< Its argument.
};

/// A thread-safe count of live connections with a fixed maximum. One 64-bit atomic word holds
/// the live connections (bits 0-31), the paused loops waiting for a release (bits 32-47) and a
/// release generation (bits 48-63), so no wake-up is lost (docs/design.md, "Budget and permits").
class connection_budget {
  // Only the budget makes permits: their constructor takes this key, which nothing else can name.
  struct place_key {
    explicit place_key() = default;
  };

 public:
  /// One place in a connection_budget (and, with a per-peer cap, one place for its peer):
  /// a reservation for an accept in flight, or, once admitted, a connection's place. Move-only;
  /// destroying it gives the place back (docs/design.md, "Budget and permits"). May be released from any
  /// thread, and may outlive whatever issued it: it keeps its budget alive when the budget
  /// lives in a shared_budget (a reservation of the waiting protocol once admitted), and its
  /// peer_limit always.
  class permit {
   public:
    /// Holds nothing.
    permit() noexcept = default;
    /// A reservation in `budget` (made by the budget: nothing else can name the key).
    permit(place_key /*unused*/, std::shared_ptr<connection_budget> budget) noexcept
        : budget_(std::move(budget)), reservation_(true) {}
    permit(permit&& other) noexcept = default;
    permit& operator=(permit&& other) noexcept {
      if (this != &other) {
        release();
        budget_ = std::move(other.budget_);
        peers_ = std::move(other.peers_);
        slot_ = other.slot_;
        reservation_ = other.reservation_;
      }
      return *this;
    }
    permit(const permit&) = delete;
    permit& operator=(const permit&) = delete;
    ~permit() { release(); }

    /// True if the permit holds a place.
    explicit operator bool() const noexcept { return budget_ != nullptr; }
    /// True if the place is a reservation that no accept has turned into a connection yet.
    [[nodiscard]] bool is_reservation() const noexcept { return budget_ != nullptr && reservation_; }

    /// The accept gave a connection: the reservation becomes the connection's place. With
    /// `peers` and a non-empty `peer`, it also takes the peer's place there and keeps `peers`
    /// alive. False, and nothing changes, if the peer already has its maximum of live
    /// connections, or if the permit is not a reservation.
    [[nodiscard]] bool admit(const std::shared_ptr<peer_limit>& peers = {}, peer_key peer = {}) noexcept;

    /// Gives the place back now (later calls do nothing): a connection's is released, a
    /// reservation's cancelled (docs/design.md, "Budget and permits"). Returns true if a paused loop may need a
    /// wake-up; the budget's waker, if installed, has then already been called.
    bool release() noexcept;

    /// The budget this permit counts against (nullptr if it holds nothing).
    [[nodiscard]] const connection_budget* budget() const noexcept { return budget_.get(); }

   private:
    friend class connection_budget;

    // Holds the budget's owner, if it has one and the permit does not hold it yet (a reference
    // that owns nothing counts no use).
    void own_budget() noexcept {
      if (budget_.use_count() == 0) {
        if (std::shared_ptr<connection_budget> owner = budget_->self_.lock()) {
          budget_ = std::move(owner);
        }
      }
    }

    std::shared_ptr<connection_budget> budget_;  // owning when the budget has an owner (keep_alive_with)
    std::shared_ptr<peer_limit> peers_;          // with slot_, the peer's place (empty: none)
    peer_slot slot_{};
    bool reservation_ = false;  // not yet admitted: returning it cancels, not releases
  };

  /// The largest max_connections (live connections occupy 32 bits of the state word).
  static constexpr std::uint64_t max_limit = 0xffffffffULL;

  /// A budget of `max_connections` places. `fd_limit` is the RLIMIT_NOFILE soft limit it
  /// was derived from (0: unknown), kept for log lines and metrics.
  ///
  /// 0 means "auto", here as everywhere a budget is given (server_options::max_connections,
  /// shared_budget::create, `transient serve --max-connections 0`): default_max_connections(),
  /// the RLIMIT_NOFILE soft limit minus a headroom, with that limit as `fd_limit`. Throws
  /// std::system_error: invalid_argument if max_connections is above max_limit; for 0, the
  /// error of default_max_connections() (EMFILE when the limit leaves no room).
  ///
  /// A budget declared on its own must outlive its permits; a shared_budget's permits keep
  /// it alive.
  explicit connection_budget(std::uint64_t max_connections, std::uint64_t fd_limit = 0);

  connection_budget(const connection_budget&) = delete;
  connection_budget& operator=(const connection_budget&) = delete;

  /// Takes a place for a connection (an admitted permit) if one is free; an empty permit if
  /// the budget is full. For a count of your own; accept loops reserve first. Thread-safe.
  [[nodiscard]] permit try_acquire() noexcept {
    permit p = try_reserve();
    static_cast<void>(p.admit());  // a reservation without a per-peer cap: always admitted
    return p;
  }

  /// Takes a place for an accept not yet made (a reservation: counts in live(), not in
  /// peak()) if one is free; an empty permit if the budget is full. Thread-safe.
  [[nodiscard]] permit try_reserve() noexcept {
    std::uint64_t word = state_.load(std::memory_order_relaxed);
    do {
      if (live_of(word) >= max_) {
        return permit{};
      }
    } while (!state_.compare_exchange_weak(word, word + 1, std::memory_order_acq_rel, std::memory_order_relaxed));
    return counted_place();
  }

  /// Installs the function a release calls when some loop waits. Not thread-safe: install
  /// it before any permit can be released concurrently.
  void set_waker(waker w) noexcept { waker_ = w; }

  /// The maximum number of live connections.
  [[nodiscard]] std::uint64_t max_connections() const noexcept { return max_; }
  /// The RLIMIT_NOFILE soft limit the budget was derived from (0: unknown).
  [[nodiscard]] std::uint64_t fd_limit() const noexcept { return fd_limit_; }
  /// Places taken now (connections plus accepts in flight). Thread-safe.
  [[nodiscard]] std::uint64_t live() const noexcept { return live_of(state_.load(std::memory_order_relaxed)); }
  /// The most connections open at once: places held by connections, not the places an
  /// accept_policy holds for the accept in flight. Thread-safe. With several loops a
  /// reservation taken by one loop while another counts may make it off by one for a moment.
  [[nodiscard]] std::uint64_t peak() const noexcept { return peak_.load(std::memory_order_relaxed); }
  /// Loops paused until a release. Thread-safe.
  [[nodiscard]] std::uint64_t waiters() const noexcept { return waiters_of(state_.load(std::memory_order_relaxed)); }

  // The waiting protocol, used by accept_policy (see the class comment). Each call is one
  // atomic decision on the state word; a loop calls them from its own thread.

  /// The release generation: a loop that reads it before an accept can tell, after the
  /// accept failed on exhaustion, whether a release came in between. Thread-safe.
  [[nodiscard]] std::uint16_t generation() const noexcept {
    return generation_of(state_.load(std::memory_order_acquire));
  }
  /// Takes a reservation into `out` (true), or registers as a waiter because the budget is
  /// full (false): one atomic decision, so the next release wakes the waiter. Until admitted,
  /// the reservation does not keep a shared_budget alive (an accept that finds no client then
  /// costs no reference count): its holder keeps the budget alive, as an accept_policy does.
  bool acquire_or_wait(permit& out) noexcept;
  /// Registers as a waiter unless a release happened since generation `seen`; false: one did.
  bool wait_for_release(std::uint16_t seen) noexcept;
  /// For a registered waiter: takes a reservation into `out` and unregisters if a place is
  /// free (true); else stays registered (false). The reservation is as acquire_or_wait's.
  bool resume_if_room(permit& out) noexcept;
  /// Unregisters a waiter (each registration is undone once: by resume_if_room or by this).
  void stop_waiting() noexcept { state_.fetch_sub(waiter_one, std::memory_order_acq_rel); }

 protected:
  /// For a class that holds its budget in a std::shared_ptr (shared_budget): each permit
  /// then keeps `self` (an alias of that owner) alive. Call it before the first permit.
  void keep_alive_with(const std::shared_ptr<connection_budget>& self) noexcept { self_ = self; }

 private:
  static constexpr std::uint64_t live_mask = 0xffffffffULL;
  static constexpr std::uint64_t waiter_one = std::uint64_t{1} << 32U;
  static constexpr std::uint64_t generation_one = std::uint64_t{1} << 48U;
  static constexpr std::uint64_t live_of(std::uint64_t word) noexcept { return word & live_mask; }
  static constexpr std::uint64_t waiters_of(std::uint64_t word) noexcept { return (word >> 32U) & 0xffffU; }
  static constexpr std::uint16_t generation_of(std::uint64_t word) noexcept {
    return static_cast<std::uint16_t>(word >> 48U);
  }

  // The permit for a place just counted: it holds the budget's owner when there is one.
  [[nodiscard]] permit counted_place() noexcept {
    permit p;
    count_reservation(p);
    p.own_budget();
    return p;
  }

  // A place just counted, as a reservation in `out` (whose place, if any, is given back first),
  // written in place: it refers to the budget without owning it; admit() takes the owner. The
  // waiting protocol's reservations are these: every burst of accepts ends with one that found
  // no client, whose reservation then locks no owner.
  void count_reservation(permit& out) noexcept {
    reserved_.fetch_add(1, std::memory_order_relaxed);
    out.release();
    out.budget_ = std::shared_ptr<connection_budget>(std::shared_ptr<connection_budget>{}, this);
    out.reservation_ = true;
  }

  // A reservation became a connection: the peak counts places minus reservations.
  void became_connection() noexcept {
    const std::uint64_t reserved = reserved_.fetch_sub(1, std::memory_order_relaxed) - 1;
    const std::uint64_t places = live();
    note_peak(places > reserved ? places - reserved : 0);
  }

  void note_peak(std::uint64_t live) noexcept {
    std::uint64_t seen = peak_.load(std::memory_order_relaxed);
    while (live > seen && !peak_.compare_exchange_weak(seen, live, std::memory_order_relaxed)) {
    }
  }

  bool wake_if(bool needed) noexcept {
    if (needed && waker_.wake != nullptr) {
      waker_.wake(waker_.context);
    }
    return needed;
  }

  // A connection ended: one place and (usually) one descriptor are free. Adding
  // generation_one - 1 increments the generation and decrements live in one instruction
  // (live >= 1, so the borrow stays inside the live field and the carry moves into the
  // generation).
  bool release_place() noexcept {
    const std::uint64_t old = state_.fetch_add(generation_one - 1, std::memory_order_acq_rel);
    return wake_if(waiters_of(old) != 0);
  }

  // An accept that held a reservation failed: the place is free again but no descriptor
  // was freed, so only loops paused for capacity care, and only if the budget was full.
  bool cancel_place() noexcept {
    reserved_.fetch_sub(1, std::memory_order_relaxed);
    const std::uint64_t old = state_.fetch_sub(1, std::memory_order_acq_rel);
    return wake_if(waiters_of(old) != 0 && live_of(old) >= max_);
  }

  std::atomic<std::uint64_t> state_{0};
  std::atomic<std::uint64_t> peak_{0};
  std::atomic<std::uint64_t> reserved_{0};  // places taken for accepts in flight
  std::uint64_t max_;
  std::uint64_t fd_limit_;
  waker waker_{};
  std::weak_ptr<connection_budget> self_;  // the owner permits keep alive (empty: none)
};

/// One place in a connection_budget (connection_budget::permit).
using permit = connection_budget::permit;

inline bool connection_budget::permit::admit(const std::shared_ptr<peer_limit>& peers, peer_key peer) noexcept {
  if (!is_reservation()) {
    return false;
  }
  if (peers != nullptr && peer) {
    if (!peers->try_acquire(peer, slot_)) {
      return false;
    }
    peers_ = peers;
  }
  reservation_ = false;
  budget_->became_connection();
  own_budget();
  return true;
}

inline bool connection_budget::permit::release() noexcept {
  if (budget_ == nullptr) {
    return false;
  }
  if (peers_ != nullptr) {
    peers_->release(slot_);
    peers_.reset();
  }
  // Held to the end of the call: the budget's last owner may be this permit.
  const std::shared_ptr<connection_budget> budget = std::move(budget_);
  return reservation_ ? budget->cancel_place() : budget->release_place();
}

/// The default max_connections for a process whose RLIMIT_NOFILE soft limit is
/// `soft_limit`: the limit minus a headroom of max(32, 5 %) descriptors for logs, files,
/// listeners and the like. 0 if the headroom leaves nothing (a limit of 32 or less).
/// RLIM_INFINITY (or anything above max_limit) counts as max_limit.
[[nodiscard]] std::uint64_t max_connections_for(std::uint64_t soft_limit) noexcept;

/// max_connections_for() the calling process's RLIMIT_NOFILE soft limit. On failure sets
/// `ec` (getrlimit's errno, or EMFILE if the limit leaves no room for connections) and
/// returns 0.
[[nodiscard]] std::uint64_t default_max_connections(std::error_code& ec) noexcept;
/// As above; throws std::system_error on failure.
[[nodiscard]] std::uint64_t default_max_connections();

/// The process's RLIMIT_NOFILE soft limit (RLIM_INFINITY as max_limit); 0 and `ec` set on failure.
[[nodiscard]] std::uint64_t fd_soft_limit(std::error_code& ec) noexcept;

}  // namespace transient

// Whether a connection budget fits the descriptors the process can still open: the drivers warn
// once at construction when it does not (docs/design.md, "Budget and permits").

namespace transient {

/// How a connection budget compares with the descriptors the process can still open.
struct budget_fit {
  std::uint64_t max_connections = 0;  ///< The budget checked.
  std::uint64_t fd_limit = 0;         ///< The RLIMIT_NOFILE soft limit (0: it could not be read).
  std::uint64_t open = 0;             ///< Descriptors open at the check.
  /// The largest budget the descriptors left can hold (fd_limit - open), counting one
  /// descriptor per connection.
  std::uint64_t fits = 0;
  /// Empty if the budget fits (or the limit could not be read); otherwise one line naming the
  /// budget, the limit, the descriptors open and the budget that would fit.
  std::string warning;

  /// True if the budget fits.
  explicit operator bool() const noexcept { return warning.empty(); }
};

/// Checks `max_connections` against RLIMIT_NOFILE and the descriptors open now.
[[nodiscard]] budget_fit check_budget_fit(std::uint64_t max_connections);

/// check_budget_fit(), and if the budget does not fit, its warning as one
/// policy_event_kind::warning event to `sink` (write_to_stderr if empty; an exception from
/// the sink is dropped, as the accept policy does). Returns the check.
budget_fit warn_if_budget_does_not_fit(std::uint64_t max_connections, const policy_event_sink& sink) noexcept;

/// What raise_fd_limit() found and did.
struct fd_limit_raise {
  std::uint64_t before = 0;  ///< The RLIMIT_NOFILE soft limit before.
  std::uint64_t after = 0;   ///< The soft limit now (before, if nothing changed).
  std::uint64_t hard = 0;    ///< The hard limit: the most an unprivileged process may raise it to.

  /// True if the soft limit was raised.
  [[nodiscard]] bool raised() const noexcept { return after > before; }
};

/// Raises the RLIMIT_NOFILE soft limit to the hard limit, as a server that needs many
/// descriptors should do itself at start: Debian and systemd give services a soft limit of
/// 1,024 (kept low for programs that still use select(), whose FD_SETSIZE is 1,024) under a
/// hard limit of 524,288. Go raises its soft limit the same way. Do not call it in a process
/// that uses select(). A hard limit of RLIM_INFINITY (which setrlimit refuses for descriptors)
/// raises the soft limit to the kernel's fs.nr_open instead. On failure `ec` is set (getrlimit's
/// or setrlimit's error) and the limit is left as it was.
[[nodiscard]] fd_limit_raise raise_fd_limit(std::error_code& ec) noexcept;
/// As above; throws std::system_error on failure.
fd_limit_raise raise_fd_limit();

}  // namespace transient

// A budget shared by several accept loops, and the registry of loops that a release signals.

namespace transient {

/// A loop that a permit release may wake. Implemented by each driver's loop state.
class release_observer {
 public:
  /// A permit was released while some loop waited: signal the loop (eventfd write, post).
  /// Called on the releasing thread; must be thread-safe and must not throw.
  virtual void on_permit_released() noexcept = 0;
  /// Virtual: a loop's state is destroyed through whatever pointer held it last.
  virtual ~release_observer() = default;

 protected:
  release_observer() = default;
  release_observer(const release_observer&) = default;
  release_observer& operator=(const release_observer&) = default;
  release_observer(release_observer&&) = default;
  release_observer& operator=(release_observer&&) = default;
};

/// A connection budget for one or more accept loops. Each loop draws a permit for each
/// connection it accepts; a release (on any thread) wakes the loops paused on the budget.
/// Held by std::shared_ptr: the loops and every permit keep it alive, so connections may
/// outlive the loop that accepted them.
class shared_budget : public connection_budget {
  struct private_tag {};

 public:
  /// A budget of `max_connections` places (0: default_max_connections(), i.e. RLIMIT_NOFILE
  /// minus a headroom). Throws std::system_error if the limit cannot be read or leaves no room,
  /// or (invalid_argument) if max_connections exceeds connection_budget::max_limit.
  [[nodiscard]] static std::shared_ptr<shared_budget> create(std::uint64_t max_connections = 0) {
    std::error_code ec;
    const std::uint64_t fd_limit = fd_soft_limit(ec);
    const std::uint64_t max = max_connections != 0 ? max_connections : default_max_connections();
    auto budget = std::make_shared<shared_budget>(private_tag{}, max, fd_limit);
    budget->keep_alive_with(budget);
    return budget;
  }

  /// Use create().
  shared_budget(private_tag /*unused*/, std::uint64_t max_connections, std::uint64_t fd_limit)
      : connection_budget(max_connections, fd_limit) {
    set_waker({&shared_budget::wake, this});
  }
  shared_budget(const shared_budget&) = delete;
  shared_budget& operator=(const shared_budget&) = delete;
  ~shared_budget() = default;

  /// The budget (thread-safe queries: live(), peak(), max_connections()).
  [[nodiscard]] connection_budget& budget() noexcept { return *this; }
  /// The budget (thread-safe queries: live(), peak(), max_connections()).
  [[nodiscard]] const connection_budget& budget() const noexcept { return *this; }

  /// The first loop built on this budget warns (through `sink`) if the budget is more than
  /// the descriptors the process can still open (budget.hpp); later loops do nothing.
  void check_fit_once(const policy_event_sink& sink) noexcept {
    if (!fit_checked_.test_and_set()) {
      static_cast<void>(warn_if_budget_does_not_fit(max_connections(), sink));
    }
  }

  /// Registers a loop to be woken by releases (done by the loop when it starts). Throws
  /// std::bad_alloc.
  void add(const release_observer* key, std::weak_ptr<release_observer> loop) {
    const std::lock_guard lock(mutex_);
    loops_.emplace_back(key, std::move(loop));
  }

  /// Unregisters a loop (done by the loop when it stops, and when it is destroyed).
  void remove(const release_observer* key) noexcept {
    const std::lock_guard lock(mutex_);
    std::erase_if(loops_, [key](const auto& entry) { return entry.first == key; });
  }

 private:
  // The budget's waker: runs on the releasing thread, only when some loop is paused. The
  // strong references are taken under the lock and dropped after it: dropping the last one
  // destroys a loop, whose destructor takes the lock to unregister.
  static void wake(void* context) noexcept {
    auto& self = *static_cast<shared_budget*>(context);
    std::vector<std::shared_ptr<release_observer>> targets;
    try {
      const std::lock_guard lock(self.mutex_);
      targets.reserve(self.loops_.size());
      for (const auto& entry : self.loops_) {
        if (auto loop = entry.second.lock()) {
          targets.push_back(std::move(loop));
        }
      }
    } catch (...) {
      // Out of memory: the wake-up is lost; the paused loops still wake on their timers
      // (backoff deadline, or a driver's periodic check) and see the release then.
      return;
    }
    for (const auto& loop : targets) {
      loop->on_permit_released();
    }
  }

  std::atomic_flag fit_checked_;  // check_fit_once ran
  std::mutex mutex_;              // guards loops_
  std::vector<std::pair<const release_observer*, std::weak_ptr<release_observer>>> loops_;
};

}  // namespace transient

// One accepted connection, as a server hands it to its handler.

namespace transient {

/// An accepted TCP connection: the descriptor (CLOEXEC, non-blocking), the permit that holds
/// its place in the server's budget, and the peer's address. Move-only. It may outlive the
/// server (the permit keeps the budget alive). Destroying it, on any thread, closes it.
class connection {
 public:
  /// An empty connection.
  connection() noexcept = default;
  /// Owns `fd` and `place` for a connection from `peer`, which waited `queue_wait` in the
  /// accept queue (as the driver measured it; 0 if it did not).
  connection(unique_fd fd, permit place, const endpoint& peer,
             std::chrono::milliseconds queue_wait = std::chrono::milliseconds::zero()) noexcept
      : place_(std::move(place)), fd_(std::move(fd)), peer_(peer), queue_wait_(queue_wait) {}
  connection(connection&& other) noexcept = default;
  connection& operator=(connection&& other) noexcept {
    if (this != &other) {
      close();
      place_ = std::move(other.place_);
      fd_ = std::move(other.fd_);
      peer_ = other.peer_;
      queue_wait_ = other.queue_wait_;
    }
    return *this;
  }
  connection(const connection&) = delete;
  connection& operator=(const connection&) = delete;
  ~connection() { close(); }

  /// The descriptor (still owned), -1 if closed.
  [[nodiscard]] int native_handle() const noexcept { return fd_.get(); }
  /// The client's address and port.
  [[nodiscard]] const endpoint& peer() const noexcept { return peer_; }
  /// How long the connection waited in the accept queue before the server accepted it, to
  /// the kernel's resolution (queue_wait_of, listen_queue.hpp), or at most queue_wait_floor when
  /// the driver knew the queue was empty that recently. Measured only when the policy bounds
  /// the wait (accept_policy_config::max_queue_wait > 0); 0 otherwise.
  [[nodiscard]] std::chrono::milliseconds queue_wait() const noexcept { return queue_wait_; }
  /// True while the connection is open.
  [[nodiscard]] bool is_open() const noexcept { return static_cast<bool>(fd_); }
  /// True while the connection is open.
  explicit operator bool() const noexcept { return is_open(); }
  /// Closes the descriptor, then gives the place back: a server paused on EMFILE resumes at
  /// the release and finds the descriptor free.
  void close() noexcept {
    fd_.reset();
    place_.release();
  }

 private:
  permit place_;
  unique_fd fd_;
  endpoint peer_;
  std::chrono::milliseconds queue_wait_{};
};

/// Receives each accepted connection, on the loop thread that accepted it. It may keep the
/// connection, move it to another thread, or let it go (closing it). An exception it throws
/// stops the driver that called it and propagates (from server::run(), from
/// acceptor::handle()), as in Asio.
using connection_handler = std::function<void(connection)>;

}  // namespace transient
