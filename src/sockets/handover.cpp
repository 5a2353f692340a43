// Handing listeners to another process over a Unix stream socket, and systemd's file
// descriptor store (sockets/handover.hpp). The message format is in handover_wire.hpp.
//
// A stream delivers a message in as many pieces as it likes, so each side loops until the
// whole length has passed, waiting with poll() against one deadline. Every descriptor that
// arrives is owned by a unique_fd before anything else is checked, so every failure closes
// them; the sender's own descriptors are never touched.
#include "transient/sockets/handover.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstring>
#include <optional>
#include <set>

#include "detail/notify_socket.hpp"
#include "sockets/adopt_listener.hpp"
#include "sockets/handover_wire.hpp"
#include "sockets/open_socket.hpp"
#include "transient/detail/throw_error.hpp"
#include "transient/errors/errors.hpp"
#include "transient/policy/accept_policy.hpp"

namespace transient {
namespace {

using clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// Room for the most descriptors one message carries.
constexpr std::size_t control_size = CMSG_SPACE(sizeof(int) * detail::handover_max_listeners);
// How long report_ready() waits for room in the channel (8 bytes: only a stalled peer delays it).
constexpr milliseconds ready_send_timeout{5000};

std::error_code invalid() { return std::make_error_code(std::errc::invalid_argument); }

bool valid_timeout(milliseconds timeout) { return timeout >= milliseconds(1) && timeout <= longest_setting; }

// Waits until `fd` reports one of `events` (or an error, which the next call reports), or
// `deadline` passes: error::handover_timeout.
std::error_code wait_for(int fd, short events, clock::time_point deadline) {
  for (;;) {
    const auto left = std::chrono::ceil<milliseconds>(deadline - clock::now());
    if (left.count() <= 0) {
      return error::handover_timeout;
    }
    pollfd p{fd, events, 0};
    const int n = ::poll(&p, 1, static_cast<int>(std::min<std::int64_t>(left.count(), INT_MAX)));
    if (n > 0) {
      return {};
    }
    if (n < 0 && errno != EINTR) {
      return detail::last_error();
    }
  }
}

// A failed send or receive's errno, where a peer gone (EPIPE, ECONNRESET) is an incomplete
// handover.
std::error_code transfer_error(int e) {
  if (e == EPIPE || e == ECONNRESET) {
    return error::handover_incomplete;
  }
  return {e, std::system_category()};
}

// Attaches `fds` to `message` as one SCM_RIGHTS control message in `control`.
void attach_descriptors(msghdr& message, const std::vector<int>& fds, char* control) {
  const std::size_t bytes = sizeof(int) * fds.size();
  message.msg_control = control;
  message.msg_controllen = CMSG_SPACE(bytes);
  cmsghdr* header = CMSG_FIRSTHDR(&message);
  header->cmsg_level = SOL_SOCKET;
  header->cmsg_type = SCM_RIGHTS;
  header->cmsg_len = CMSG_LEN(bytes);
  std::memcpy(CMSG_DATA(header), fds.data(), bytes);
}

// Sends all of `bytes`, with `fds` attached to the first byte, by `deadline`.
std::error_code send_all(int fd, std::string_view bytes, const std::vector<int>& fds, clock::time_point deadline) {
  alignas(cmsghdr) char control[control_size] = {};
  std::size_t sent = 0;
  while (sent < bytes.size()) {
    if (auto ec = wait_for(fd, POLLOUT, deadline)) {
      return ec;
    }
    iovec piece{const_cast<char*>(bytes.data() + sent), bytes.size() - sent};
    msghdr message{};
    message.msg_iov = &piece;
    message.msg_iovlen = 1;
    if (sent == 0 && !fds.empty()) {
      attach_descriptors(message, fds, control);
    }
    const ssize_t n = ::sendmsg(fd, &message, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && errno != EINTR && errno != EAGAIN) {
      return transfer_error(errno);
    }
    sent += n > 0 ? static_cast<std::size_t>(n) : 0;
  }
  return {};
}

// Owns every descriptor of `message`'s SCM_RIGHTS control messages, appending them to `fds`.
void own_descriptors(msghdr& message, std::vector<unique_fd>& fds) {
  for (cmsghdr* c = CMSG_FIRSTHDR(&message); c != nullptr; c = CMSG_NXTHDR(&message, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) {
      continue;
    }
    const std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (std::size_t i = 0; i < count; ++i) {
      int one = -1;
      std::memcpy(&one, CMSG_DATA(c) + i * sizeof(int), sizeof one);
      fds.emplace_back(one);
    }
  }
}

// Receives exactly `size` bytes by `deadline`, owning every descriptor that comes with them.
// A closed channel is error::handover_incomplete; descriptors cut off (MSG_CTRUNC) are
// error::handover_malformed.
std::error_code receive_exactly(int fd, std::string& bytes, std::size_t size, std::vector<unique_fd>& fds,
                                clock::time_point deadline) {
  bytes.assign(size, '\0');
  std::size_t got = 0;
  while (got < size) {
    if (auto ec = wait_for(fd, POLLIN, deadline)) {
      return ec;
    }
    alignas(cmsghdr) char control[control_size];
    iovec piece{bytes.data() + got, size - got};
    msghdr message{};
    message.msg_iov = &piece;
    message.msg_iovlen = 1;
    message.msg_control = control;
    message.msg_controllen = sizeof control;
    const ssize_t n = ::recvmsg(fd, &message, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    if (n == 0) {
      return error::handover_incomplete;
    }
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) {
        continue;
      }
      return transfer_error(errno);
    }
    own_descriptors(message, fds);
    if ((message.msg_flags & MSG_CTRUNC) != 0) {
      return error::handover_malformed;
    }
    got += static_cast<std::size_t>(n);
  }
  return {};
}

// Checks that `fd` is a listening TCP socket: error::not_stream, not_listening, or the errno of
// a descriptor that is not a socket at all.
std::error_code check_listening_tcp(int fd) {
  std::error_code ec;
  const int type = detail::socket_int_option(fd, SO_TYPE, ec);
  const int protocol = ec ? -1 : detail::socket_int_option(fd, SO_PROTOCOL, ec);
  const int accepting = ec ? -1 : detail::socket_int_option(fd, SO_ACCEPTCONN, ec);
  if (ec) {
    return ec;
  }
  if (type != SOCK_STREAM || protocol != IPPROTO_TCP) {
    return error::not_stream;
  }
  return accepting == 1 ? std::error_code() : std::error_code(error::not_listening);
}

// One offer as the message describes it, once it has been checked.
std::optional<detail::handover_entry> describe(const listener_offer& offer, std::error_code& ec) {
  if (!detail::valid_listener_name(offer.name)) {
    ec = invalid();
    return std::nullopt;
  }
  if ((ec = check_listening_tcp(offer.fd))) {
    return std::nullopt;
  }
  detail::handover_entry entry{std::string(offer.name), detail::socket_cookie(offer.fd, ec), {}};
  const endpoint local = ec ? endpoint() : detail::local_endpoint_of(offer.fd, ec);
  if (ec) {
    return std::nullopt;
  }
  entry.address = local.to_string();
  return entry;
}

// Every offer described, or nothing with `ec` set: EINVAL for no offers, too many, or a name
// given twice.
std::vector<detail::handover_entry> describe_all(std::span<const listener_offer> offers, std::error_code& ec) {
  std::vector<detail::handover_entry> entries;
  std::set<std::string_view> names;
  if (offers.empty() || offers.size() > detail::handover_max_listeners) {
    ec = invalid();
    return {};
  }
  for (const auto& offer : offers) {
    auto entry = describe(offer, ec);
    if (!entry) {
      return {};
    }
    if (!names.insert(offer.name).second) {
      ec = invalid();
      return {};
    }
    entries.push_back(std::move(*entry));
  }
  return entries;
}

// Receives the whole handover message: its entries, and the descriptors in `fds`.
std::vector<detail::handover_entry> receive_handover(int channel, std::vector<unique_fd>& fds,
                                                     clock::time_point deadline, std::error_code& ec) {
  std::string bytes;
  if ((ec = receive_exactly(channel, bytes, detail::handover_header_size, fds, deadline))) {
    return {};
  }
  const auto header = detail::decode_handover_header(bytes);
  if (!header) {
    ec = error::handover_malformed;
    return {};
  }
  if ((ec = receive_exactly(channel, bytes, header->payload_length, fds, deadline))) {
    return {};
  }
  auto entries = detail::decode_handover_entries(bytes, header->count);
  if (!entries || entries->size() != fds.size()) {
    ec = error::handover_malformed;
    return {};
  }
  return std::move(*entries);
}

// True if `expected` is empty or holds exactly the names of `entries`, in any order.
bool names_expected(const std::vector<detail::handover_entry>& entries, const std::vector<std::string>& expected) {
  if (expected.empty()) {
    return true;
  }
  std::multiset<std::string> sent;
  for (const auto& entry : entries) {
    sent.insert(entry.name);
  }
  return sent == std::multiset<std::string>(expected.begin(), expected.end());
}

// One received descriptor as a listener: the socket `entry` describes (its cookie, its
// address), a listening TCP socket, the kernel's listener for its address.
std::optional<listener> adopt_received(unique_fd fd, const detail::handover_entry& entry, std::error_code& ec) {
  const std::uint64_t cookie = detail::socket_cookie(fd.get(), ec);
  if (ec) {
    return std::nullopt;
  }
  if (cookie != entry.cookie) {
    ec = error::handover_mismatch;
    return std::nullopt;
  }
  auto adopted = detail::adopt_listener(std::move(fd), true);
  if ((ec = adopted.error)) {
    return std::nullopt;
  }
  if (adopted.socket.local_endpoint().to_string() != entry.address) {
    ec = error::handover_mismatch;
    return std::nullopt;
  }
  return std::move(adopted.socket);
}

std::vector<named_listener> adopt_all(const std::vector<detail::handover_entry>& entries, std::vector<unique_fd>& fds,
                                      std::error_code& ec) {
  std::vector<named_listener> result;
  for (std::size_t i = 0; i < entries.size(); ++i) {
    auto adopted = adopt_received(std::move(fds[i]), entries[i], ec);
    if (!adopted) {
      return {};  // the listeners adopted so far and the descriptors left close here
    }
    result.push_back(named_listener{entries[i].name, std::move(*adopted)});
  }
  return result;
}

// True for a name systemd's store takes as FDNAME=: a handover's name of printable characters
// without ':', which separates the names in LISTEN_FDNAMES.
bool valid_store_name(std::string_view name) {
  return detail::valid_listener_name(name) && std::all_of(name.begin(), name.end(), [](char c) {
           return static_cast<unsigned char>(c) >= 0x20 && c != 0x7f && c != ':';
         });
}

std::error_code check_store_offers(std::span<const listener_offer> listeners) {
  for (const auto& offer : listeners) {
    if (!valid_store_name(offer.name)) {
      return invalid();
    }
    if (auto ec = check_listening_tcp(offer.fd)) {
      return ec;
    }
  }
  return {};
}

// Sends one listener to the store: "FDSTORE=1\nFDNAME=<name>" with its descriptor.
std::error_code store_one(int socket, const detail::notify_address& to, const listener_offer& offer) {
  const std::string text = "FDSTORE=1\nFDNAME=" + std::string(offer.name);
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  iovec piece{const_cast<char*>(text.data()), text.size()};
  msghdr message{};
  message.msg_name = const_cast<sockaddr_un*>(&to.address);
  message.msg_namelen = to.length;
  message.msg_iov = &piece;
  message.msg_iovlen = 1;
  attach_descriptors(message, {offer.fd}, control);
  if (::sendmsg(socket, &message, MSG_NOSIGNAL) < 0) {
    return detail::last_error();
  }
  return {};
}

}  // namespace

void hand_over_listeners(int channel, std::span<const listener_offer> listeners, milliseconds timeout,
                         std::error_code& ec) {
  ec.clear();
  if (!valid_timeout(timeout)) {
    ec = invalid();
    return;
  }
  const auto deadline = clock::now() + timeout;
  const auto entries = describe_all(listeners, ec);
  if (ec) {
    return;
  }
  std::vector<int> fds;
  for (const auto& offer : listeners) {
    fds.push_back(offer.fd);
  }
  ec = send_all(channel, detail::encode_handover(entries), fds, deadline);
}

void hand_over_listeners(int channel, std::span<const listener_offer> listeners, milliseconds timeout) {
  std::error_code ec;
  hand_over_listeners(channel, listeners, timeout, ec);
  detail::throw_if(ec, "hand over listeners");
}

std::vector<named_listener> take_over_listeners(int channel, const take_over_options& options, std::error_code& ec) {
  ec.clear();
  if (!valid_timeout(options.timeout)) {
    ec = invalid();
    return {};
  }
  std::vector<unique_fd> fds;
  const auto entries = receive_handover(channel, fds, clock::now() + options.timeout, ec);
  if (ec) {
    return {};
  }
  if (!names_expected(entries, options.expected_names)) {
    ec = error::handover_mismatch;
    return {};
  }
  return adopt_all(entries, fds, ec);
}

std::vector<named_listener> take_over_listeners(int channel, const take_over_options& options) {
  std::error_code ec;
  auto result = take_over_listeners(channel, options, ec);
  detail::throw_if(ec, "take over listeners");
  return result;
}

void report_ready(int channel, std::error_code& ec) {
  const auto message = detail::encode_ready(static_cast<std::uint32_t>(::getpid()));
  ec = send_all(channel, message, {}, clock::now() + ready_send_timeout);
}

void report_ready(int channel) {
  std::error_code ec;
  report_ready(channel, ec);
  detail::throw_if(ec, "report ready");
}

int await_ready(int channel, milliseconds timeout, std::error_code& ec) {
  ec.clear();
  if (!valid_timeout(timeout)) {
    ec = invalid();
    return 0;
  }
  std::string bytes;
  std::vector<unique_fd> stray;  // a ready report carries none; any that come are closed
  if ((ec = receive_exactly(channel, bytes, detail::ready_size, stray, clock::now() + timeout))) {
    return 0;
  }
  const auto pid = detail::decode_ready(bytes);
  if (!pid || !stray.empty()) {
    ec = error::handover_malformed;
    return 0;
  }
  return static_cast<int>(*pid);
}

int await_ready(int channel, milliseconds timeout) {
  std::error_code ec;
  const int pid = await_ready(channel, timeout, ec);
  detail::throw_if(ec, "await ready");
  return pid;
}

void store_listeners_in_systemd(std::span<const listener_offer> listeners, std::error_code& ec) {
  const auto to = detail::notify_socket_address(ec);
  if (!to) {
    ec = ec ? ec : std::error_code(error::no_supervisor);
    return;
  }
  if ((ec = check_store_offers(listeners))) {
    return;
  }
  const unique_fd socket(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!socket) {
    ec = detail::last_error();
    return;
  }
  for (const auto& offer : listeners) {
    if ((ec = store_one(socket.get(), *to, offer))) {
      return;
    }
  }
}

void store_listeners_in_systemd(std::span<const listener_offer> listeners) {
  std::error_code ec;
  store_listeners_in_systemd(listeners, ec);
  detail::throw_if(ec, "store listeners in systemd");
}

}  // namespace transient
