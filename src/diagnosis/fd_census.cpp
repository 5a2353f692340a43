// The descriptor census: what this process's descriptors refer to, found without needing a
// free descriptor (see diagnostics.hpp).
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <map>
#include <optional>

#include "transient/detail/throw_error.hpp"
#include "transient/diagnosis/diagnostics.hpp"

namespace transient {
namespace {

constexpr std::array<std::string_view, fd_kind_count> kind_names{
    "TCP socket",       "UDP socket", "UNIX socket", "other socket", "pipe",     "regular file",     "directory",
    "character device", "eventfd",    "epoll",       "timerfd",      "signalfd", "other anon inode", "other"};

// Linux's TCP states (include/net/tcp_states.h), numbered from 1.
constexpr std::array<std::string_view, 13> tcp_state_names{
    "UNKNOWN", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2",   "TIME_WAIT",
    "CLOSE",   "CLOSE_WAIT",  "LAST_ACK", "LISTEN",   "CLOSING",   "NEW_SYN_RECV"};

// More than this many descriptors sharing one target are worth naming; at most this many names.
constexpr std::size_t max_repeated_targets = 5;
// The probing fallback asks every number below the *hard* limit, since descriptors opened
// before the soft limit was lowered may sit above it; it stops here even under a huge limit
// (a million fcntl calls take about 0.1 s; beyond that the census would delay the stop it
// explains).
constexpr std::uint64_t max_probed_descriptors = std::uint64_t{1} << 20;

struct census_builder {
  fd_census census;
  std::map<std::string, std::size_t, std::less<>> targets;
  std::map<std::string_view, std::size_t, std::less<>> states;

  void add(int fd, std::string_view target) {
    const fd_kind kind = kind_of(fd, target);
    ++census.total;
    ++census.by_kind[static_cast<std::size_t>(kind)];
    if (kind == fd_kind::tcp_socket) {
      ++states[tcp_state(fd)];
    }
    if (!target.empty()) {
      ++targets[std::string(target)];
    }
  }

  static fd_kind anon_kind(std::string_view target) {
    constexpr std::string_view prefix = "anon_inode:";
    if (!target.starts_with(prefix)) {
      return fd_kind::other;
    }
    const std::string_view name = target.substr(prefix.size());
    if (name == "[eventfd]") {
      return fd_kind::eventfd;
    }
    if (name == "[eventpoll]") {
      return fd_kind::epoll;
    }
    if (name == "[timerfd]") {
      return fd_kind::timerfd;
    }
    if (name == "[signalfd]") {
      return fd_kind::signalfd;
    }
    return fd_kind::other_anon_inode;
  }

  static fd_kind socket_kind(int fd) {
    int domain = 0;
    int type = 0;
    socklen_t length = sizeof domain;
    if (::getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &length) != 0) {
      return fd_kind::other_socket;
    }
    length = sizeof type;
    if (::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &length) != 0) {
      return fd_kind::other_socket;
    }
    if (domain == AF_UNIX) {
      return fd_kind::unix_socket;
    }
    if (domain == AF_INET || domain == AF_INET6) {
      if (type == SOCK_STREAM) {
        return fd_kind::tcp_socket;
      }
      if (type == SOCK_DGRAM) {
        return fd_kind::udp_socket;
      }
    }
    return fd_kind::other_socket;
  }

  // The descriptor's file type. The census looks at descriptors that other threads may close
  // or reuse at any moment; the kernel makes that safe (EBADF, or the new file: either is a
  // fair census). ThreadSanitizer models descriptors as memory and would report fstat() here
  // as a race with the thread that opened the descriptor; the raw statx system call is not
  // intercepted, so a TSan build of a threaded server can be diagnosed without noise.
  // Kernels before 4.11 have no statx (ENOSYS): fstat() then.
  static std::optional<unsigned> file_type(int fd) {
    struct statx status {};
    if (::syscall(SYS_statx, fd, "", AT_EMPTY_PATH, STATX_TYPE, &status) == 0) {
      return status.stx_mode & S_IFMT;
    }
    struct stat fallback {};
    if (errno == ENOSYS && ::fstat(fd, &fallback) == 0) {
      return fallback.st_mode & S_IFMT;
    }
    return std::nullopt;
  }

  static fd_kind kind_of(int fd, std::string_view target) {
    const auto type = file_type(fd);
    if (!type) {
      return fd_kind::other;  // closed by another thread since it was listed
    }
    switch (*type) {
      case S_IFSOCK: return socket_kind(fd);
      case S_IFIFO: return fd_kind::pipe;
      case S_IFDIR: return fd_kind::directory;
      case S_IFCHR: return fd_kind::character_device;
      case S_IFREG:
        // Anonymous inodes (eventfd, epoll, ...) may show as regular: their link tells.
        return target.starts_with("anon_inode:") ? anon_kind(target) : fd_kind::regular_file;
      default: return anon_kind(target);
    }
  }

  // The TCP state, from TCP_INFO on our own descriptor: no /proc file to open.
  static std::string_view tcp_state(int fd) {
    tcp_info info{};
    socklen_t length = sizeof info;
    if (::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &length) != 0 || info.tcpi_state >= tcp_state_names.size()) {
      return tcp_state_names[0];
    }
    return tcp_state_names[info.tcpi_state];
  }

  fd_census finish(std::string method) && {
    census.method = std::move(method);
    for (const auto& [name, count] : states) {
      census.tcp_states.emplace_back(std::string(name), count);
    }
    std::ranges::stable_sort(census.tcp_states, std::greater<>{}, &std::pair<std::string, std::size_t>::second);
    for (auto& [target, count] : targets) {
      if (count > 1) {
        census.repeated_targets.emplace_back(target, count);
      }
    }
    std::ranges::stable_sort(census.repeated_targets, std::greater<>{}, &std::pair<std::string, std::size_t>::second);
    if (census.repeated_targets.size() > max_repeated_targets) {
      census.repeated_targets.resize(max_repeated_targets);
    }
    return std::move(census);
  }
};

// Sockets and pipes have one target each ("socket:[1234]"): only other targets can repeat.
bool worth_counting_target(std::string_view target) {
  return !target.starts_with("socket:") && !target.starts_with("pipe:");
}

std::string_view read_link(int directory, const char* name, std::array<char, 4096>& buffer) {
  const ssize_t n = ::readlinkat(directory, name, buffer.data(), buffer.size());
  return n > 0 ? std::string_view(buffer.data(), static_cast<std::size_t>(n)) : std::string_view{};
}

// Calls `each(fd, name)` for every descriptor listed in /proc/self/fd but `skip_fd`, from an open
// directory descriptor with getdents64, which, unlike readdir, needs no allocation of a DIR
// (and so no new descriptor). /proc regenerates the listing when read again from offset 0.
template <typename Each>
void list_directory(int directory, int skip_fd, Each each) {
  ::lseek(directory, 0, SEEK_SET);
  alignas(8) std::array<char, 8192> entries{};
  for (;;) {
    const long n = ::syscall(SYS_getdents64, directory, entries.data(), entries.size());
    if (n <= 0) {
      return;
    }
    for (long offset = 0; offset < n;) {
      // struct linux_dirent64: u64 d_ino, s64 d_off, u16 d_reclen, u8 d_type, char d_name[].
      unsigned short record_length = 0;
      std::memcpy(&record_length, entries.data() + offset + 16, sizeof record_length);
      const char* name = entries.data() + offset + 19;
      offset += record_length;
      int fd = -1;
      const std::string_view text(name);
      if (std::from_chars(text.data(), text.data() + text.size(), fd).ec == std::errc{} && fd != skip_fd) {
        each(fd, name);  // not "." or ".."
      }
    }
  }
}

void census_from_directory(int directory, int skip_fd, census_builder& builder) {
  std::array<char, 4096> link{};
  list_directory(directory, skip_fd, [&](int fd, const char* name) {
    const std::string_view target = read_link(directory, name, link);
    builder.add(fd, worth_counting_target(target) ? target : std::string_view{});
  });
}

// Without a descriptor to list /proc/self/fd, ask every descriptor number below `limit`:
// `each(fd)` for those open.
template <typename Each>
void probe_descriptors(std::uint64_t limit, Each each) {
  const auto end = std::min(limit, max_probed_descriptors);
  for (std::uint64_t fd = 0; fd < end; ++fd) {
    if (::fcntl(static_cast<int>(fd), F_GETFD) != -1) {
      each(static_cast<int>(fd));
    }
  }
}

// readlink() on a /proc path needs no descriptor either.
void census_by_probing(std::uint64_t limit, census_builder& builder) {
  std::array<char, 4096> link{};
  constexpr std::string_view prefix = "/proc/self/fd/";
  std::array<char, 48> path{};
  std::ranges::copy(prefix, path.begin());
  probe_descriptors(limit, [&](int fd) {
    char* const tail = std::to_chars(path.data() + prefix.size(), path.data() + path.size() - 1, fd).ptr;
    *tail = '\0';
    const std::string_view target = read_link(AT_FDCWD, path.data(), link);
    builder.add(fd, worth_counting_target(target) ? target : std::string_view{});
  });
}

}  // namespace

std::string_view to_string(fd_kind kind) noexcept {
  const auto index = static_cast<std::size_t>(kind);
  return index < kind_names.size() ? kind_names[index] : "unknown";
}

fd_kind fd_census::dominant_kind() const noexcept {
  return static_cast<fd_kind>(std::ranges::max_element(by_kind) - by_kind.begin());
}

diagnosis_fds diagnosis_fds::open(std::error_code& ec) noexcept {
  ec.clear();
  diagnosis_fds fds;
  fds.fd_directory_.reset(::open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fds.fd_directory_) {
    ec = detail::last_error();
    return {};
  }
  fds.file_nr_.reset(::open("/proc/sys/fs/file-nr", O_RDONLY | O_CLOEXEC));
  if (!fds.file_nr_) {
    ec = detail::last_error();
    return {};
  }
  return fds;
}

diagnosis_fds diagnosis_fds::open() {
  std::error_code ec;
  diagnosis_fds fds = open(ec);
  detail::throw_if(ec, "cannot open /proc/self/fd and /proc/sys/fs/file-nr for diagnostics");
  return fds;
}

fd_census take_fd_census(const diagnosis_fds& fds) {
  census_builder builder;
  if (fds.fd_directory() >= 0) {
    census_from_directory(fds.fd_directory(), -1, builder);
    return std::move(builder).finish("read /proc/self/fd through the reserved descriptor");
  }
  const unique_fd directory(::open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (directory) {
    census_from_directory(directory.get(), directory.get(), builder);
    return std::move(builder).finish("read /proc/self/fd");
  }
  const int open_error = errno;
  census_by_probing(current_fd_limits().hard, builder);
  return std::move(builder).finish(std::string("probed descriptor numbers (could not open /proc/self/fd: ") +
                                   std::strerror(open_error) + ")");
}

std::size_t count_open_fds(const diagnosis_fds& fds) noexcept {
  std::size_t count = 0;
  const auto add = [&count](auto&&...) { ++count; };
  if (fds.fd_directory() >= 0) {
    list_directory(fds.fd_directory(), -1, add);
    return count;
  }
  const unique_fd directory(::open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (directory) {
    list_directory(directory.get(), directory.get(), add);
  } else {
    probe_descriptors(current_fd_limits().hard, add);
  }
  return count;
}

fd_limits current_fd_limits() noexcept {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) {
    return {};
  }
  const auto widen = [](rlim_t value) {
    return value == RLIM_INFINITY ? UINT64_MAX : static_cast<std::uint64_t>(value);
  };
  return {widen(limit.rlim_cur), widen(limit.rlim_max)};
}

file_table read_file_table(const diagnosis_fds& fds) noexcept {
  unique_fd opened;
  int fd = fds.file_nr();
  if (fd < 0) {
    opened.reset(::open("/proc/sys/fs/file-nr", O_RDONLY | O_CLOEXEC));
    fd = opened.get();
  }
  std::array<char, 128> text{};
  const ssize_t n = fd >= 0 ? ::pread(fd, text.data(), text.size() - 1, 0) : -1;
  if (n <= 0) {
    return {};
  }
  // "allocated<TAB>unused<TAB>maximum\n"
  file_table table;
  const char* cursor = text.data();
  const char* const end = text.data() + n;
  std::uint64_t unused = 0;
  for (std::uint64_t* field : {&table.allocated, &unused, &table.maximum}) {
    while (cursor < end && (*cursor == ' ' || *cursor == '\t')) {
      ++cursor;
    }
    const auto [next, ec] = std::from_chars(cursor, end, *field);
    if (ec != std::errc{}) {
      return {};
    }
    cursor = next;
  }
  table.known = true;
  return table;
}

}  // namespace transient
