// Reading small /proc files whole.
#include "detail/proc_file.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>

#include "transient/detail/throw_error.hpp"
#include "transient/sockets/unique_fd.hpp"

namespace transient::detail {

std::string read_whole_file(const char* path, std::error_code& ec) {
  ec.clear();
  const unique_fd fd(::open(path, O_RDONLY | O_CLOEXEC));
  if (!fd) {
    ec = last_error();
    return {};
  }
  return read_whole_descriptor(fd.get(), ec);
}

std::string read_whole_descriptor(int fd, std::error_code& ec) {
  ec.clear();
  std::string text;
  char buffer[8192];
  for (;;) {
    const ssize_t n = ::pread(fd, buffer, sizeof buffer, static_cast<off_t>(text.size()));
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      ec = last_error();
      return {};
    }
    if (n == 0) {
      return text;
    }
    text.append(buffer, static_cast<std::size_t>(n));
  }
}

std::vector<tcp_row> read_kernel_tcp_rows(std::error_code& ec, std::size_t* malformed) {
  std::size_t bad4 = 0;
  std::size_t bad6 = 0;
  const std::string v4 = read_whole_file("/proc/net/tcp", ec);
  if (ec) {
    return {};
  }
  std::vector<tcp_row> rows = parse_tcp_table(v4, &bad4);
  const std::string v6 = read_whole_file("/proc/net/tcp6", ec);
  if (ec == std::errc::no_such_file_or_directory) {
    ec.clear();  // kernel without IPv6: no tcp6 rows
  } else if (ec) {
    return {};
  } else {
    auto rows6 = parse_tcp_table(v6, &bad6);
    rows.insert(rows.end(), rows6.begin(), rows6.end());
  }
  if (malformed != nullptr) {
    *malformed = bad4 + bad6;
  }
  return rows;
}

namespace {

// The decimal numbers of a small text, separated by blanks.
template <std::size_t N>
bool read_numbers(const char* path, long (&out)[N]) noexcept {
  try {
    std::error_code ec;
    const std::string text = read_whole_file(path, ec);
    if (ec) {
      return false;
    }
    const char* p = text.data();
    const char* end = text.data() + text.size();
    for (std::size_t i = 0; i < N; ++i) {
      while (p < end && (*p == ' ' || *p == '\t' || *p == '\n')) {
        ++p;
      }
      const auto [next, err] = std::from_chars(p, end, out[i]);
      if (err != std::errc{}) {
        return false;
      }
      p = next;
    }
    return true;
  } catch (...) {
    return false;
  }
}

}  // namespace

std::pair<std::uint16_t, std::uint16_t> ephemeral_port_range() noexcept {
  long range[2] = {};
  if (read_numbers("/proc/sys/net/ipv4/ip_local_port_range", range) && range[0] > 0 && range[0] <= range[1] &&
      range[1] <= 65535) {
    return {static_cast<std::uint16_t>(range[0]), static_cast<std::uint16_t>(range[1])};
  }
  return {32768, 60999};
}

int kernel_somaxconn() noexcept {
  long value[1] = {};
  if (read_numbers("/proc/sys/net/core/somaxconn", value) && value[0] > 0 && value[0] <= 1L << 30) {
    return static_cast<int>(value[0]);
  }
  return SOMAXCONN;
}

std::uint64_t kernel_nr_open() noexcept {
  long value[1] = {};
  return read_numbers("/proc/sys/fs/nr_open", value) && value[0] > 0 ? static_cast<std::uint64_t>(value[0]) : 0;
}

}  // namespace transient::detail
