// Reading small /proc files whole (their stat size is 0, so read until end of file).
#pragma once

#include <cstdint>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "sockets/proc_net_tcp.hpp"

namespace transient::detail {

/// The whole content of `path` (opened O_CLOEXEC); sets `ec` on failure.
[[nodiscard]] std::string read_whole_file(const char* path, std::error_code& ec);

/// The whole content of the open file `fd`, read from offset 0 with pread (so that the
/// descriptor can be kept and read again, from any thread); sets `ec` on failure.
[[nodiscard]] std::string read_whole_descriptor(int fd, std::error_code& ec);

/// Every row of /proc/net/tcp and /proc/net/tcp6 (this network namespace). A missing tcp6
/// (IPv6 disabled) is not an error. `malformed` receives the count of unparsable rows.
[[nodiscard]] std::vector<tcp_row> read_kernel_tcp_rows(std::error_code& ec, std::size_t* malformed = nullptr);

/// /proc/sys/net/ipv4/ip_local_port_range as {first, last}; {32768, 60999} (the kernel's
/// default) if unreadable.
[[nodiscard]] std::pair<std::uint16_t, std::uint16_t> ephemeral_port_range() noexcept;

/// /proc/sys/net/core/somaxconn; SOMAXCONN if unreadable.
[[nodiscard]] int kernel_somaxconn() noexcept;

/// The kernel's ceiling on any process's descriptor limit (/proc/sys/fs/nr_open); 0 if unreadable.
[[nodiscard]] std::uint64_t kernel_nr_open() noexcept;

}  // namespace transient::detail
