// who_listens(): the LISTEN sockets on a port and the processes that hold them.
//
// The kernel's table (an inet_diag dump, else /proc/net/tcp*: listen_table.hpp) gives address,
// inode and, from sock_diag, cookie; the owner is found by reading every /proc/PID/fd/* link
// and matching "socket:[INODE]". Another user's processes cannot be read without privilege:
// they are counted and reported, never skipped silently.
#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <memory>
#include <set>

#include "detail/proc_file.hpp"
#include "sockets/socket_owners.hpp"
#include "sockets/who_listens.hpp"
#include "transient/detail/throw_error.hpp"
#include "transient/sockets/listener.hpp"

namespace transient {
namespace detail {
namespace {

struct dir_closer {
  void operator()(DIR* d) const noexcept { ::closedir(d); }
};
using dir_ptr = std::unique_ptr<DIR, dir_closer>;

std::optional<pid_t> pid_of(const char* name) {
  pid_t pid = 0;
  const char* end = name + std::char_traits<char>::length(name);
  const auto [last, ec] = std::from_chars(name, end, pid);
  if (ec != std::errc{} || last != end || pid <= 0) {
    return std::nullopt;
  }
  return pid;
}

// "socket:[12345]" -> 12345.
std::optional<std::uint64_t> socket_inode(std::string_view link) {
  constexpr std::string_view prefix = "socket:[";
  if (link.size() <= prefix.size() + 1 || link.substr(0, prefix.size()) != prefix || link.back() != ']') {
    return std::nullopt;
  }
  std::uint64_t inode = 0;
  const char* first = link.data() + prefix.size();
  const char* last = link.data() + link.size() - 1;
  const auto [end, ec] = std::from_chars(first, last, inode);
  if (ec != std::errc{} || end != last) {
    return std::nullopt;
  }
  return inode;
}

process_info describe_process(pid_t pid) {
  process_info info;
  info.pid = pid;
  // Strings are built by appending, not `"/proc/" + std::to_string(pid)` or `= "?"`: at -O3
  // g++ 12 raises a false -Wrestrict inside std::string for those (GCC bug 105329).
  std::string base = std::string("/proc/").append(std::to_string(pid));
  std::error_code ec;
  std::string command = read_whole_file((base + "/cmdline").c_str(), ec);
  if (ec) {
    info.command.assign(1, '?');
    info.command_known = false;
    return info;
  }
  while (!command.empty() && command.back() == '\0') {
    command.pop_back();
  }
  std::replace(command.begin(), command.end(), '\0', ' ');
  if (command.empty()) {  // kernel threads and zombies have no command line; use the name
    std::string comm = read_whole_file((base + "/comm").c_str(), ec);
    while (!comm.empty() && comm.back() == '\n') {
      comm.pop_back();
    }
    command = ec ? "?" : "[" + comm + "]";
    info.command_known = !ec;
  }
  info.command = std::move(command);
  return info;
}

}  // namespace

socket_owners find_socket_owners(const std::vector<std::uint64_t>& inodes) {
  socket_owners result;
  if (inodes.empty()) {
    return result;
  }
  const std::set<std::uint64_t> wanted(inodes.begin(), inodes.end());
  const dir_ptr proc(::opendir("/proc"));
  if (!proc) {
    return result;
  }
  while (const dirent* process = ::readdir(proc.get())) {
    const auto pid = pid_of(process->d_name);
    if (!pid) {
      continue;
    }
    const std::string fd_dir = "/proc/" + std::string(process->d_name) + "/fd";
    const dir_ptr fds(::opendir(fd_dir.c_str()));
    if (!fds) {
      if (errno != ENOENT) {  // ENOENT: the process exited meanwhile; EACCES: another user's
        ++result.unreadable_processes;
      }
      continue;
    }
    bool found = false;
    std::set<std::uint64_t> seen;  // a process may hold one socket through several descriptors
    while (const dirent* fd = ::readdir(fds.get())) {
      if (fd->d_name[0] == '.') {
        continue;
      }
      char link[64];
      const ssize_t n = ::readlinkat(::dirfd(fds.get()), fd->d_name, link, sizeof link);
      if (n <= 0 || static_cast<std::size_t>(n) >= sizeof link) {
        continue;
      }
      const auto inode = socket_inode(std::string_view(link, static_cast<std::size_t>(n)));
      if (inode && wanted.count(*inode) != 0 && seen.insert(*inode).second) {
        found = true;
        result.by_inode[*inode].push_back(process_info{*pid, {}, true});
      }
    }
    if (found) {
      const process_info info = describe_process(*pid);
      for (auto& [inode, owners] : result.by_inode) {
        for (auto& owner : owners) {
          if (owner.pid == *pid) {
            owner = info;
          }
        }
      }
    }
  }
  return result;
}

void attach_owners(std::vector<listen_entry>& entries) {
  std::vector<std::uint64_t> inodes;
  for (const auto& entry : entries) {
    inodes.push_back(entry.inode);
  }
  auto owners = find_socket_owners(inodes);
  for (auto& entry : entries) {
    entry.owners = owners.by_inode[entry.inode];
    entry.unreadable_processes = owners.unreadable_processes;
  }
}

std::string describe_owners(const listen_entry& entry) {
  if (entry.owners.empty()) {
    if (entry.unreadable_processes > 0) {
      return "an unknown owner (" + std::to_string(entry.unreadable_processes) +
             " processes could not be read; try as root)";
    }
    return "no process found";
  }
  std::string text;
  for (const auto& owner : entry.owners) {
    if (!text.empty()) {
      text += ", ";
    }
    text += "pid " + std::to_string(owner.pid) + " (" + printable(owner.command) + ")";
  }
  return text;
}

std::vector<listen_entry> listen_sockets(std::uint16_t port, listen_source source, std::error_code& ec) {
  const listen_table table = read_listen_table(source, ec);
  std::vector<listen_entry> entries;
  for (const auto& row : table.rows) {
    if (row.local.port() == port) {
      entries.push_back(entry_of(row));
    }
  }
  return entries;
}

std::vector<listen_entry> who_listens(std::uint16_t port, listen_source source, std::error_code& ec) {
  std::vector<listen_entry> entries = listen_sockets(port, source, ec);
  attach_owners(entries);
  return entries;
}

}  // namespace detail

namespace {

// What `read` (an error_code overload) lists on `port`; on failure throws std::system_error
// with `message`.
std::vector<listen_entry> listed_or_throw(std::vector<listen_entry> (*read)(std::uint16_t, std::error_code&),
                                          std::uint16_t port, const char* message) {
  std::error_code ec;
  auto entries = read(port, ec);
  detail::throw_if(ec, message);
  return entries;
}

}  // namespace

std::vector<listen_entry> who_listens(std::uint16_t port, std::error_code& ec) {
  return detail::who_listens(port, detail::listen_source::automatic, ec);
}

std::vector<listen_entry> who_listens(std::uint16_t port) {
  return listed_or_throw(&who_listens, port,
                         "who_listens: cannot read the kernel's LISTEN sockets (sock_diag, then /proc/net/tcp)");
}

std::vector<listen_entry> listen_sockets(std::uint16_t port, std::error_code& ec) {
  return detail::listen_sockets(port, detail::listen_source::automatic, ec);
}

std::vector<listen_entry> listen_sockets(std::uint16_t port) {
  return listed_or_throw(&listen_sockets, port,
                         "listen_sockets: cannot read the kernel's LISTEN sockets (sock_diag, then /proc/net/tcp)");
}

std::string printable(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n' || c == '\t' || c == '\r') {
      out += c == '\n' ? "\\n" : c == '\t' ? "\\t" : "\\r";
    } else if (byte < 0x20 || byte == 0x7f) {
      static constexpr std::string_view hex = "0123456789abcdef";
      out += "\\x";
      out += hex[byte >> 4U];
      out += hex[byte & 0xfU];
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace transient
