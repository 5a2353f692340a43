// transient/peer_limit.hpp: at most N live connections per peer address.
//
// A peer is an IPv4 address (/32) or an IPv6 /64 prefix (one host or site usually owns a
// whole /64, so counting single IPv6 addresses would be trivial to evade). IPv4-mapped
// IPv6 addresses count as the IPv4 address they carry.
//
// Memory is fixed at construction and never grows, whatever the number of peers: the
// counts live in a counting sketch (two rows of atomic counters, count-min style). A peer
// is hashed with a per-process random key to one counter in each row; acquiring adds one
// to both, releasing subtracts one from both, and the peer's count is the smaller of the
// two. Collisions can only make a count larger, never smaller, so "at most N per peer"
// always holds; the price is that a peer whose two counters are *both* shared with busy
// peers may be refused early: with 16384 counters per row and 2,000 live peers, about
// 0.6 % of new peers at a cap of 1, practically none at a cap of 4 or more (the counters
// must then reach the cap from other peers alone). The keyed hash means collisions cannot
// be aimed at a chosen victim. Peers that
// left leave nothing behind: their counters drop back by exactly what they added.
//
// Thread-safe: every operation is a lock-free atomic update, so several loops (and the
// threads that release permits) can share one peer_limit.
#pragma once

#include <sys/socket.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

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
