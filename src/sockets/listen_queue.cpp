// The accept queue seen from user space (listen_queue.hpp). The kernel shows a listener's queue
// in TCP_INFO, where a LISTEN socket reports its queue length as tcpi_unacked and its limit as
// tcpi_sacked, and an accepted connection's handshake time as the age of its last sent data,
// which nothing has renewed before the server first writes.
#include "transient/sockets/listen_queue.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cstdlib>
#include <string>
#include <string_view>

#include "detail/proc_file.hpp"
#include "sockets/queue_wait.hpp"
#include "transient/detail/throw_error.hpp"
#include "transient/errors/errors.hpp"

namespace transient {
namespace {

bool tcp_info_of(int fd, tcp_info& info, std::error_code& ec, detail::getsockopt_call call = ::getsockopt) noexcept {
  socklen_t length = sizeof info;
  if (call(fd, IPPROTO_TCP, TCP_INFO, &info, &length) != 0) {
    ec = detail::last_error();
    return false;
  }
  ec.clear();
  return true;
}

// The value of counter `name` in the TcpExt rows of /proc/net/netstat `text` (a row of names,
// then a row of values) into `value`; false if absent.
bool tcpext_counter(std::string_view text, std::string_view name, std::uint64_t& value) {
  const std::size_t names = text.find("TcpExt: ");
  const std::size_t values = names == std::string_view::npos ? names : text.find("TcpExt: ", names + 1);
  if (values == std::string_view::npos) {
    return false;
  }
  std::string_view header = text.substr(names, values - names);
  std::string_view row = text.substr(values + 8);
  for (std::size_t at = 8; at < header.size();) {
    const std::size_t end = header.find_first_of(" \n", at);
    const std::size_t digits = row.find_first_of(" \n");
    if (header.substr(at, end - at) == name) {
      value = std::strtoull(std::string(row.substr(0, digits)).c_str(), nullptr, 10);
      return true;
    }
    at = end + 1;
    row.remove_prefix(digits == std::string_view::npos ? row.size() : digits + 1);
  }
  return false;
}

constexpr const char* netstat_path = "/proc/net/netstat";

// The counters in the text of /proc/net/netstat (after a read that set `ec`, zeros).
listen_drops drops_in(const std::string& text, std::error_code& ec) {
  listen_drops counters;
  if (!ec && !(tcpext_counter(text, "ListenOverflows", counters.overflows) &&
               tcpext_counter(text, "ListenDrops", counters.drops))) {
    ec = std::make_error_code(std::errc::protocol_error);
  }
  return ec ? listen_drops{} : counters;
}

}  // namespace

listen_queue queue_of(int fd, std::error_code& ec) noexcept {
  tcp_info info{};
  if (!tcp_info_of(fd, info, ec)) {
    return {};
  }
  if (info.tcpi_state != TCP_LISTEN) {
    ec = make_error_code(error::not_listening);
    return {};
  }
  return {info.tcpi_unacked, info.tcpi_sacked};
}

listen_queue queue_of(int fd) {
  std::error_code ec;
  const listen_queue q = queue_of(fd, ec);
  detail::throw_if(ec, "accept queue");
  return q;
}

listen_drops read_listen_drops(std::error_code& ec) { return drops_in(detail::read_whole_file(netstat_path, ec), ec); }

listen_drops read_listen_drops() {
  std::error_code ec;
  const listen_drops counters = read_listen_drops(ec);
  detail::throw_if(ec, "/proc/net/netstat");
  return counters;
}

listen_drops_reader::listen_drops_reader(std::error_code& ec) : netstat_(::open(netstat_path, O_RDONLY | O_CLOEXEC)) {
  ec = netstat_ ? std::error_code{} : detail::last_error();
}

listen_drops_reader::listen_drops_reader() {
  std::error_code ec;
  *this = listen_drops_reader(ec);
  detail::throw_if(ec, netstat_path);
}

listen_drops listen_drops_reader::read(std::error_code& ec) const {
  if (!netstat_) {
    return read_listen_drops(ec);
  }
  return drops_in(detail::read_whole_descriptor(netstat_.get(), ec), ec);
}

listen_drops listen_drops_reader::read() const {
  std::error_code ec;
  const listen_drops counters = read(ec);
  detail::throw_if(ec, netstat_path);
  return counters;
}

std::chrono::milliseconds detail::queue_wait_through(getsockopt_call call, int fd, std::error_code& ec) noexcept {
  tcp_info info{};
  return tcp_info_of(fd, info, ec, call) ? std::chrono::milliseconds(info.tcpi_last_data_sent)
                                         : std::chrono::milliseconds::zero();
}

std::chrono::milliseconds queue_wait_of(int fd, std::error_code& ec) noexcept {
  return detail::queue_wait_through(::getsockopt, fd, ec);
}

std::chrono::milliseconds queue_wait_of(int fd) {
  std::error_code ec;
  const auto waited = queue_wait_of(fd, ec);
  detail::throw_if(ec, "queue wait");
  return waited;
}

}  // namespace transient
