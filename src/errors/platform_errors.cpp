// The other platforms' socket error codes (classify.hpp). Each table lists the codes
// the platform documents for accept, connect, read/write (recv/send), bind and listen, with
// their values from its headers; docs/errors.md names the manual pages and headers.
#include "transient/errors/classify.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>

#include "errors/errno_table.hpp"

namespace transient {
namespace {

// Linux: every errno, each its own equivalent.
constexpr auto linux_errors = [] {
  std::array<platform_error, detail::errno_canonical.size()> table{};
  for (std::size_t i = 0; i < table.size(); ++i) {
    table[i] = {detail::errno_canonical[i].name, detail::errno_canonical[i].value, detail::errno_canonical[i].value};
  }
  return table;
}();

// FreeBSD: sys/sys/errno.h; accept(2), connect(2), recv(2), send(2), bind(2), listen(2),
// socket(2) of FreeBSD 14.
constexpr std::array<platform_error, 40> freebsd_errors{{
    {"EPERM", 1, EPERM},
    {"EINTR", 4, EINTR},
    {"EBADF", 9, EBADF},
    {"ENOMEM", 12, ENOMEM},
    {"EACCES", 13, EACCES},
    {"EFAULT", 14, EFAULT},
    {"EINVAL", 22, EINVAL},
    {"ENFILE", 23, ENFILE},
    {"EMFILE", 24, EMFILE},
    {"EPIPE", 32, EPIPE},
    {"EAGAIN", 35, EAGAIN},
    {"EINPROGRESS", 36, EINPROGRESS},
    {"EALREADY", 37, EALREADY},
    {"ENOTSOCK", 38, ENOTSOCK},
    {"EDESTADDRREQ", 39, EDESTADDRREQ},
    {"EMSGSIZE", 40, EMSGSIZE},
    {"EPROTOTYPE", 41, EPROTOTYPE},
    {"ENOPROTOOPT", 42, ENOPROTOOPT},
    {"EPROTONOSUPPORT", 43, EPROTONOSUPPORT},
    {"ESOCKTNOSUPPORT", 44, ESOCKTNOSUPPORT},
    {"EOPNOTSUPP", 45, EOPNOTSUPP},
    {"EPFNOSUPPORT", 46, EPFNOSUPPORT},
    {"EAFNOSUPPORT", 47, EAFNOSUPPORT},
    {"EADDRINUSE", 48, EADDRINUSE},
    {"EADDRNOTAVAIL", 49, EADDRNOTAVAIL},
    {"ENETDOWN", 50, ENETDOWN},
    {"ENETUNREACH", 51, ENETUNREACH},
    {"ENETRESET", 52, ENETRESET},
    {"ECONNABORTED", 53, ECONNABORTED},
    {"ECONNRESET", 54, ECONNRESET},
    {"ENOBUFS", 55, ENOBUFS},
    {"EISCONN", 56, EISCONN},
    {"ENOTCONN", 57, ENOTCONN},
    {"ESHUTDOWN", 58, ESHUTDOWN},
    {"ETIMEDOUT", 60, ETIMEDOUT},
    {"ECONNREFUSED", 61, ECONNREFUSED},
    {"EHOSTDOWN", 64, EHOSTDOWN},
    {"EHOSTUNREACH", 65, EHOSTUNREACH},
    {"EPROTO", 92, EPROTO},
    {"ECAPMODE", 94, EPERM},  // Capsicum capability mode forbids the call
}};

// macOS: xnu bsd/sys/errno.h; accept(2), connect(2), recv(2), send(2), bind(2), listen(2),
// socket(2) of macOS 14. Same BSD numbers up to 65; ENOTSUP is 45 and EOPNOTSUPP 102.
constexpr std::array<platform_error, 41> macos_errors{{
    {"EPERM", 1, EPERM},
    {"EINTR", 4, EINTR},
    {"EBADF", 9, EBADF},
    {"ENOMEM", 12, ENOMEM},
    {"EACCES", 13, EACCES},
    {"EFAULT", 14, EFAULT},
    {"EINVAL", 22, EINVAL},
    {"ENFILE", 23, ENFILE},
    {"EMFILE", 24, EMFILE},
    {"EPIPE", 32, EPIPE},
    {"EAGAIN", 35, EAGAIN},
    {"EINPROGRESS", 36, EINPROGRESS},
    {"EALREADY", 37, EALREADY},
    {"ENOTSOCK", 38, ENOTSOCK},
    {"EDESTADDRREQ", 39, EDESTADDRREQ},
    {"EMSGSIZE", 40, EMSGSIZE},
    {"EPROTOTYPE", 41, EPROTOTYPE},
    {"ENOPROTOOPT", 42, ENOPROTOOPT},
    {"EPROTONOSUPPORT", 43, EPROTONOSUPPORT},
    {"ESOCKTNOSUPPORT", 44, ESOCKTNOSUPPORT},
    {"ENOTSUP", 45, EOPNOTSUPP},
    {"EPFNOSUPPORT", 46, EPFNOSUPPORT},
    {"EAFNOSUPPORT", 47, EAFNOSUPPORT},
    {"EADDRINUSE", 48, EADDRINUSE},
    {"EADDRNOTAVAIL", 49, EADDRNOTAVAIL},
    {"ENETDOWN", 50, ENETDOWN},
    {"ENETUNREACH", 51, ENETUNREACH},
    {"ENETRESET", 52, ENETRESET},
    {"ECONNABORTED", 53, ECONNABORTED},
    {"ECONNRESET", 54, ECONNRESET},
    {"ENOBUFS", 55, ENOBUFS},
    {"EISCONN", 56, EISCONN},
    {"ENOTCONN", 57, ENOTCONN},
    {"ESHUTDOWN", 58, ESHUTDOWN},
    {"ETIMEDOUT", 60, ETIMEDOUT},
    {"ECONNREFUSED", 61, ECONNREFUSED},
    {"EHOSTDOWN", 64, EHOSTDOWN},
    {"EHOSTUNREACH", 65, EHOSTUNREACH},
    {"EPROTO", 100, EPROTO},
    {"EOPNOTSUPP", 102, EOPNOTSUPP},
    {"ENOPOLICY", 103, EACCES},  // a network policy refused the call
}};

// Windows: winsock2.h and winerror.h; the Winsock reference pages of accept, AcceptEx,
// connect, ConnectEx, recv, WSARecv, send, WSASend, bind and listen, and the Win32 codes
// overlapped (IOCP) socket I/O completes with (Asio reports them as they are, except
// ERROR_NETNAME_DELETED on an accept, which it maps to connection_aborted).
constexpr std::array<platform_error, 47> windows_errors{{
    {"ERROR_NOT_ENOUGH_MEMORY", 8, ENOMEM},
    {"ERROR_NETNAME_DELETED", 64, ECONNRESET},  // the peer reset (AcceptEx: the pending connection)
    {"ERROR_SEM_TIMEOUT", 121, ETIMEDOUT},
    {"WSA_OPERATION_ABORTED", 995, ECANCELED},  // the operation was cancelled (closesocket, CancelIoEx)
    {"WSA_IO_INCOMPLETE", 996, EAGAIN},
    {"ERROR_PORT_UNREACHABLE", 1234, ECONNREFUSED},
    {"ERROR_CONNECTION_ABORTED", 1236, ECONNABORTED},
    {"WSAEINTR", 10004, EINTR},
    {"WSAEBADF", 10009, EBADF},
    {"WSAEACCES", 10013, EACCES},
    {"WSAEFAULT", 10014, EFAULT},
    {"WSAEINVAL", 10022, EINVAL},
    {"WSAEMFILE", 10024, EMFILE},
    {"WSAEWOULDBLOCK", 10035, EAGAIN},
    {"WSAEINPROGRESS", 10036, EINPROGRESS},
    {"WSAEALREADY", 10037, EALREADY},
    {"WSAENOTSOCK", 10038, ENOTSOCK},
    {"WSAEDESTADDRREQ", 10039, EDESTADDRREQ},
    {"WSAEMSGSIZE", 10040, EMSGSIZE},
    {"WSAEPROTOTYPE", 10041, EPROTOTYPE},
    {"WSAENOPROTOOPT", 10042, ENOPROTOOPT},
    {"WSAEPROTONOSUPPORT", 10043, EPROTONOSUPPORT},
    {"WSAESOCKTNOSUPPORT", 10044, ESOCKTNOSUPPORT},
    {"WSAEOPNOTSUPP", 10045, EOPNOTSUPP},
    {"WSAEPFNOSUPPORT", 10046, EPFNOSUPPORT},
    {"WSAEAFNOSUPPORT", 10047, EAFNOSUPPORT},
    {"WSAEADDRINUSE", 10048, EADDRINUSE},
    {"WSAEADDRNOTAVAIL", 10049, EADDRNOTAVAIL},
    {"WSAENETDOWN", 10050, ENETDOWN},
    {"WSAENETUNREACH", 10051, ENETUNREACH},
    {"WSAENETRESET", 10052, ENETRESET},
    {"WSAECONNABORTED", 10053, ECONNABORTED},
    {"WSAECONNRESET", 10054, ECONNRESET},
    {"WSAENOBUFS", 10055, ENOBUFS},
    {"WSAEISCONN", 10056, EISCONN},
    {"WSAENOTCONN", 10057, ENOTCONN},
    {"WSAESHUTDOWN", 10058, ESHUTDOWN},
    {"WSAETIMEDOUT", 10060, ETIMEDOUT},
    {"WSAECONNREFUSED", 10061, ECONNREFUSED},
    {"WSAEHOSTDOWN", 10064, EHOSTDOWN},
    {"WSAEHOSTUNREACH", 10065, EHOSTUNREACH},
    {"WSAEPROCLIM", 10067, ENFILE},  // too many processes use Winsock: a system-wide limit
    {"WSASYSNOTREADY", 10091, ENETDOWN},
    {"WSAVERNOTSUPPORTED", 10092, EOPNOTSUPP},
    {"WSANOTINITIALISED", 10093, EBADF},  // WSAStartup was not called: a bug in the caller
    {"WSAEDISCON", 10101, ESHUTDOWN},
    {"WSAEPROVIDERFAILEDINIT", 10106, ENETDOWN},
}};

bool same_name(std::string_view known, std::string_view name) noexcept {
  return std::ranges::equal(known, name,
                            [](char a, char b) { return a == std::toupper(static_cast<unsigned char>(b)); });
}

}  // namespace

std::string_view to_string(platform p) noexcept {
  switch (p) {
    case platform::linux_os: return "linux";
    case platform::freebsd: return "freebsd";
    case platform::macos: return "macos";
    case platform::windows: return "windows";
  }
  return "unknown";
}

std::optional<platform> parse_platform(std::string_view name) noexcept {
  for (const platform p : {platform::linux_os, platform::freebsd, platform::macos, platform::windows}) {
    if (std::ranges::equal(to_string(p), name,
                           [](char a, char b) { return a == std::tolower(static_cast<unsigned char>(b)); })) {
      return p;
    }
  }
  return std::nullopt;
}

std::span<const platform_error> platform_errors(platform p) noexcept {
  switch (p) {
    case platform::linux_os: return linux_errors;
    case platform::freebsd: return freebsd_errors;
    case platform::macos: return macos_errors;
    case platform::windows: return windows_errors;
  }
  return {};
}

std::optional<platform_error> find_platform_error(platform p, std::string_view name) noexcept {
  for (const platform_error& e : platform_errors(p)) {
    if (same_name(e.name, name)) {
      return e;
    }
  }
  if (p == platform::linux_os) {  // EWOULDBLOCK, EDEADLOCK...: Linux's aliases
    for (const detail::errno_entry& alias : detail::errno_aliases) {
      if (same_name(alias.name, name)) {
        return find_platform_error(p, alias.value);
      }
    }
  }
  if (p != platform::windows && same_name("EWOULDBLOCK", name)) {  // the BSDs' alias of EAGAIN
    return find_platform_error(p, "EAGAIN");
  }
  return std::nullopt;
}

std::optional<platform_error> find_platform_error(platform p, int value) noexcept {
  for (const platform_error& e : platform_errors(p)) {
    if (e.value == value) {
      return e;
    }
  }
  return std::nullopt;
}

}  // namespace transient
