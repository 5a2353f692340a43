// transient/connection_budget.hpp: how many connections may be open at once, and the
// permit that holds one place.
//
// The budget is taken *before* accept (as Go's netutil.LimitListener and HAProxy do): a
// full server leaves clients in the kernel backlog instead of running out of descriptors
// (docs/design.md: EMFILE leaves the queued client in the backlog, but a loop that re-arms on
// it spins).
//
// When a place is taken and returned (every path; nothing else touches the count):
//   taken     try_reserve(), acquire_or_wait(), resume_if_room(): a reservation, for an accept
//             in flight (accept_policy takes these); try_acquire(): a connection's place at once
//   admitted  permit::admit(): the accept gave a connection; the reservation becomes its place
//             (and, with a per-peer cap, takes the peer's place too)
//   returned  permit::release(), or destroying the permit: a connection's place is released
//             (a descriptor was freed: paused loops may resume); a reservation's is cancelled
//             (no descriptor was freed: only loops paused at a full budget care)
// A permit holds what it counts against: its budget, kept alive when the budget lives in a
// shared_budget (every driver's), and its peer's place in a peer_limit, kept alive too. So a
// permit may outlive the loop, acceptor or server that issued it; closing its connection and
// dropping the permit, in any order and on any thread, is always safe.
//
// One budget may be shared by several loops (epoll threads, an Asio io_context run by
// many threads), each with its own accept_policy, and permits may be released from any
// thread. A loop that pauses for capacity or exhaustion registers as a waiter; a release
// reports (and, with a waker installed, performs) a wake-up only when some loop waits, so
// on a server that is not paused a release costs one atomic add and no system call.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <system_error>
#include <utility>

#include "transient/peer_limit.hpp"

namespace transient {

/// Called by a release when some loop waits for one (see connection_budget::set_waker).
/// Must be thread-safe and must not throw; typically it writes to an eventfd.
struct waker {
  void (*wake)(void* context) noexcept = nullptr;  ///< The function to call; nullptr: none.
  void* context = nullptr;                         ///< Its argument.
};

/// A thread-safe count of live connections with a fixed maximum.
///
/// Everything lives in one 64-bit atomic word: live connections (bits 0-31), paused loops
/// waiting for a release (bits 32-47) and a release generation (bits 48-63, wrapping).
/// Because "register as a waiter unless a release already happened" and "release and look
/// for waiters" are each a single read-modify-write of that one word, the modification
/// order of the word decides every race: either the release comes first (the waiter's
/// compare-exchange sees the new generation or the free place and does not pause) or the
/// registration comes first (the release's fetch_add returns a word with waiters > 0 and
/// wakes). No wake-up can be lost and no seq_cst fence is needed. acq_rel on the updates
/// also orders a connection's teardown before the loop that reuses its place.
class connection_budget {
  // Only the budget makes permits: their constructor takes this key, which nothing else can name.
  struct place_key {
    explicit place_key() = default;
  };

 public:
  /// One place in a connection_budget (and, with a per-peer cap, one place for its peer):
  /// a reservation for an accept in flight, or, once admitted, a connection's place. Move-only;
  /// destroying it gives the place back (see the file comment). May be released from any
  /// thread, and may outlive whatever issued it: it keeps its budget alive when the budget
  /// lives in a shared_budget, and its peer_limit always.
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
    /// reservation's cancelled (file comment). Returns true if a paused loop may need a
    /// wake-up; the budget's waker, if installed, has then already been called.
    bool release() noexcept;

    /// The budget this permit counts against (nullptr if it holds nothing).
    [[nodiscard]] const connection_budget* budget() const noexcept { return budget_.get(); }

   private:
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
  /// the RLIMIT_NOFILE soft limit minus a reserve, with that limit as `fd_limit`. Throws
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
  /// full (false): one atomic decision, so the next release wakes the waiter.
  bool acquire_or_wait(permit& out) noexcept;
  /// Registers as a waiter unless a release happened since generation `seen`; false: one did.
  bool wait_for_release(std::uint16_t seen) noexcept;
  /// For a registered waiter: takes a reservation into `out` and unregisters if a place is
  /// free (true); else stays registered (false).
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
    reserved_.fetch_add(1, std::memory_order_relaxed);
    std::shared_ptr<connection_budget> owned = self_.lock();
    if (!owned) {
      owned = std::shared_ptr<connection_budget>(std::shared_ptr<connection_budget>{}, this);  // not owned
    }
    return permit{place_key{}, std::move(owned)};
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
/// `soft_limit`: the limit minus a reserve of max(32, 5 %) descriptors for logs, files,
/// listeners and the like. 0 if the reserve leaves nothing (a limit of 32 or less).
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
