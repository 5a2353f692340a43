// verify(): is this socket really the kernel's one listener for its address?
//
// docs/design.md (measured): SO_ACCEPTCONN is 1 only while listening; the kernel's table of LISTEN
// sockets for the caller's network namespace has one entry per listener, with its inode
// (fstat(fd).st_ino). Any other LISTEN entry on the same address and port, without
// SO_REUSEPORT, is a second listener. The table comes from an inet_diag netlink dump, which
// also carries each socket's cookie, so our entry is matched by SO_COOKIE and inode: a cookie
// is never reused, so a stale inode number cannot pass for ours. Where sock_diag is not
// available the table comes from /proc/net/tcp and tcp6, which show no cookie, and the match
// is by inode alone (listen_table.hpp).
#include <sys/socket.h>
#include <sys/stat.h>

#include <algorithm>

#include "sockets/listen_table.hpp"
#include "sockets/open_socket.hpp"
#include "sockets/socket_owners.hpp"
#include "sockets/verify_socket.hpp"
#include "transient/detail/throw_error.hpp"
#include "transient/errors/errors.hpp"
#include "transient/sockets/listener.hpp"

namespace transient {
namespace {

bool same_address(const endpoint& a, const endpoint& b) noexcept {
  return a.family() == b.family() && a.bytes() == b.bytes();
}

verify_report& fail(verify_report& report, error e, std::string message) {
  report.error = e;
  report.message = std::move(message);
  return report;
}

}  // namespace

bool addresses_overlap(const endpoint& a, const endpoint& b) noexcept {
  const endpoint x = a.unmapped();
  const endpoint y = b.unmapped();
  if (x.port() != y.port() || x.family() != y.family()) {
    return false;
  }
  return same_address(x, y) || x.is_unspecified() || y.is_unspecified();
}

void verify_report::throw_if_failed() const { detail::throw_said_once_if(error, message); }

namespace detail {

void check_kernel_table(verify_report& report, const listen_table& table, bool reuse_port_allowed) {
  const bool by_cookie = report.cookie != 0 && table.source == listen_source::sock_diag;
  std::vector<listen_entry> others;
  for (const auto& row : table.rows) {
    // Our socket's entry: same inode, and the same cookie when the table has cookies.
    const bool self = row.inode == report.inode && (!by_cookie || row.cookie == report.cookie);
    if (self && same_address(row.local.unmapped(), report.actual.unmapped()) &&
        row.local.port() == report.actual.port()) {
      report.kernel_listener = true;
      report.cookie_matched = by_cookie;
    } else if (!self && addresses_overlap(row.local, report.actual)) {
      others.push_back(entry_of(row));
    }
  }
  report.unique = others.empty() || reuse_port_allowed;
  if (!others.empty()) {
    attach_owners(others);
  }
  report.others = std::move(others);

  if (!report.kernel_listener) {
    std::string identity = "inode " + std::to_string(report.inode);
    if (by_cookie) {
      identity += " and cookie " + std::to_string(report.cookie);
    }
    fail(report, error::not_kernel_listener,
         std::string("no LISTEN socket in the kernel's table (") + source_name(table.source) + ") has this socket's " +
             identity + " for " + report.actual.to_string());
    return;
  }
  if (!report.unique) {
    std::string message = "another socket also listens on " + report.actual.to_string() + ":";
    for (const auto& other : report.others) {
      // One piece at a time: `" " + to_string()` trips g++ 12's false -Wrestrict at -O3 (GCC bug 105329).
      message += ' ';
      message += other.address.to_string();
      message += " inode " + std::to_string(other.inode) + " held by " + describe_owners(other) + ";";
    }
    message.pop_back();
    fail(report, error::duplicate_listener, std::move(message));
  }
}

verify_report verify_socket(int fd, const endpoint& expected, bool reuse_port_allowed, listen_source source) {
  verify_report report;
  std::error_code ec;
  const int type = socket_int_option(fd, SO_TYPE, ec);
  if (ec) {
    report.error = ec;
    report.message = "cannot inspect descriptor " + std::to_string(fd) + ": " + ec.message();
    return report;
  }
  report.stream = type == SOCK_STREAM;
  report.accepting = socket_int_option(fd, SO_ACCEPTCONN, ec) == 1;
  report.actual = local_endpoint_of(fd, ec);
  if (ec) {
    report.error = ec;
    report.message = "getsockname failed on descriptor " + std::to_string(fd) + ": " + ec.message();
    return report;
  }
  report.address_matches =
      same_address(report.actual, expected) && (expected.port() == 0 || expected.port() == report.actual.port());
  struct stat status {};
  if (::fstat(fd, &status) == 0) {
    report.inode = static_cast<std::uint64_t>(status.st_ino);
  }
  std::error_code no_cookie;  // 0: unknown, and the match falls back to the inode
  report.cookie = socket_cookie(fd, no_cookie);

  if (!report.stream) {
    return fail(report, error::not_stream, report.actual.to_string() + " is not a stream (TCP) socket");
  }
  if (!report.accepting) {
    return fail(report, error::not_listening,
                report.actual.to_string() + " is bound but not listening (SO_ACCEPTCONN = 0)");
  }
  if (!report.address_matches) {
    return fail(report, error::address_mismatch,
                "socket is bound to " + report.actual.to_string() + ", not " + expected.to_string());
  }

  const listen_table table = read_listen_table(source, ec);
  if (ec) {
    report.error = ec;
    report.message =
        std::string("cannot read the kernel's LISTEN sockets (") + source_name(source) + "): " + ec.message();
    return report;
  }
  check_kernel_table(report, table, reuse_port_allowed);
  return report;
}

}  // namespace detail

verify_report verify(const listener& l) {
  if (!l.is_open()) {
    verify_report report;
    report.error = std::make_error_code(std::errc::bad_file_descriptor);
    report.message = "verify: the listener owns no socket";
    return report;
  }
  return detail::verify_socket(l.native_handle(), l.local_endpoint(), l.reuse_port());
}

}  // namespace transient
