// peer_limit: a two-row counting sketch of live connections per peer (see the header).
#include "transient/policy/budget.hpp"

#include <netinet/in.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <random>

#include "transient/detail/throw_error.hpp"

namespace transient {
namespace {

std::uint64_t load_be64(const unsigned char* bytes) noexcept {
  std::uint64_t value = 0;
  for (int i = 0; i < 8; ++i) {
    value = (value << 8U) | bytes[i];
  }
  return value;
}

// The splitmix64 finaliser: every input bit affects every output bit.
std::uint64_t mix(std::uint64_t z) noexcept {
  z = (z ^ (z >> 30U)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27U)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31U);
}

constexpr std::size_t max_buckets = std::size_t{1} << 24U;

}  // namespace

peer_key peer_key_of(const sockaddr* address, socklen_t length) noexcept {
  if (address == nullptr) {
    return {};
  }
  if (address->sa_family == AF_INET && length >= static_cast<socklen_t>(sizeof(sockaddr_in))) {
    sockaddr_in v4{};
    std::memcpy(&v4, address, sizeof v4);
    return {ntohl(v4.sin_addr.s_addr), AF_INET};
  }
  if (address->sa_family == AF_INET6 && length >= static_cast<socklen_t>(sizeof(sockaddr_in6))) {
    sockaddr_in6 v6{};
    std::memcpy(&v6, address, sizeof v6);
    const unsigned char* bytes = v6.sin6_addr.s6_addr;
    static constexpr unsigned char v4_mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (std::memcmp(bytes, v4_mapped, sizeof v4_mapped) == 0) {
      const std::uint32_t v4 = (std::uint32_t{bytes[12]} << 24U) | (std::uint32_t{bytes[13]} << 16U) |
                               (std::uint32_t{bytes[14]} << 8U) | std::uint32_t{bytes[15]};
      return {v4, AF_INET};
    }
    return {load_be64(bytes), AF_INET6};  // the /64 prefix
  }
  return {};
}

peer_limit::peer_limit(std::uint32_t max_per_peer, std::size_t buckets, std::uint64_t seed) : max_(max_per_peer) {
  if (max_per_peer == 0 || buckets > max_buckets) {
    detail::throw_if(std::make_error_code(std::errc::invalid_argument),
                     "peer_limit: max_per_peer must be > 0 and buckets at most 2^24");
  }
  buckets_ = std::bit_ceil(std::max<std::size_t>(buckets, 64));
  if (seed == 0) {
    std::random_device device;
    seed = (std::uint64_t{device()} << 32U) ^ device() ^ 1U;
  }
  key_ = seed;
  counters_ = std::make_unique<std::atomic<std::uint32_t>[]>(2 * buckets_);
  for (std::size_t i = 0; i < 2 * buckets_; ++i) {
    counters_[i].store(0, std::memory_order_relaxed);
  }
}

peer_slot peer_limit::slot_of(peer_key peer) const noexcept {
  const std::uint64_t h = mix(mix(peer.prefix ^ key_) + peer.family);
  const auto mask = static_cast<std::uint64_t>(buckets_ - 1);
  return {static_cast<std::uint32_t>(h & mask), static_cast<std::uint32_t>(buckets_ + ((h >> 32U) & mask))};
}

bool peer_limit::try_acquire(peer_key peer, peer_slot& slot) noexcept {
  if (!peer) {
    return true;
  }
  const peer_slot s = slot_of(peer);
  // Add first, then look: two threads racing for the last place each get a distinct old
  // value from fetch_add, so at most one of them can see room. Relaxed is enough: the
  // counters guard no other memory.
  const std::uint32_t a = counters_[s.first].fetch_add(1, std::memory_order_relaxed);
  const std::uint32_t b = counters_[s.second].fetch_add(1, std::memory_order_relaxed);
  if (std::min(a, b) >= max_) {
    release(s);
    return false;
  }
  slot = s;
  return true;
}

void peer_limit::release(peer_slot slot) noexcept {
  counters_[slot.first].fetch_sub(1, std::memory_order_relaxed);
  counters_[slot.second].fetch_sub(1, std::memory_order_relaxed);
}

std::uint32_t peer_limit::count(peer_key peer) const noexcept {
  if (!peer) {
    return 0;
  }
  const peer_slot s = slot_of(peer);
  return std::min(counters_[s.first].load(std::memory_order_relaxed),
                  counters_[s.second].load(std::memory_order_relaxed));
}

}  // namespace transient
