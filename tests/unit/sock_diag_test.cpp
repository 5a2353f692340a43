// The NETLINK_SOCK_DIAG (inet_diag) reader of LISTEN sockets: its reply parser on crafted and
// malformed datagrams, the dump on real loopback sockets, its agreement with the /proc/net/tcp
// fallback, and verify() / who_listens() forced onto each source.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <optional>
#include <set>
#include <tuple>
#include <vector>

#include "sockets/listen_table.hpp"
#include "sockets/sock_diag.hpp"
#include "sockets/sock_diag_reply.hpp"
#include "sockets/verify_socket.hpp"
#include "sockets/who_listens.hpp"
#include "support/loopback.hpp"
#include "transient/errors/errors.hpp"
#include "transient/sockets/listener.hpp"

namespace {

using namespace transient::detail;
using transient::endpoint;
using transient::listen_options;
using transient::listener;
using transient::unique_fd;

using bytes = std::vector<std::byte>;

// ---- crafted datagrams -------------------------------------------------------------------

constexpr diag_expect ours{7, 4242};

// resize + memcpy rather than insert: g++ 12 reports a false -Wstringop-overflow (at -O1, the
// TSan preset) or -Warray-bounds (at -O3, Release) for vector<byte>::insert of a small object.
void append_bytes(bytes& out, const bytes& more) {
  const std::size_t at = out.size();
  out.resize(at + more.size());
  if (!more.empty()) {
    std::memcpy(out.data() + at, more.data(), more.size());
  }
}

template <typename T>
void append_raw(bytes& out, const T& value) {
  const std::size_t at = out.size();
  out.resize(at + sizeof value);
  std::memcpy(out.data() + at, &value, sizeof value);
}

// One netlink message (header + payload), padded to 4 bytes unless `pad` is false.
bytes message(std::uint16_t type, const bytes& payload, diag_expect who = ours, bool pad = true) {
  nlmsghdr header{};
  header.nlmsg_len = static_cast<std::uint32_t>(NLMSG_HDRLEN + payload.size());
  header.nlmsg_type = type;
  header.nlmsg_flags = NLM_F_MULTI;
  header.nlmsg_seq = who.sequence;
  header.nlmsg_pid = who.port_id;
  bytes out;
  append_raw(out, header);
  append_bytes(out, payload);
  while (pad && out.size() % NLMSG_ALIGNTO != 0) {
    out.push_back(std::byte{0});
  }
  return out;
}

bytes int_payload(int value) {
  bytes out;
  append_raw(out, value);
  return out;
}

bytes done_message(int status = 0) { return message(NLMSG_DONE, int_payload(status)); }

bytes error_message(int negative_errno) {
  nlmsgerr error{};
  error.error = negative_errno;
  bytes payload;
  append_raw(payload, error);
  return message(NLMSG_ERROR, payload);
}

inet_diag_msg diag_v4(std::array<std::uint8_t, 4> address, std::uint16_t port, std::uint32_t inode,
                      std::uint64_t cookie) {
  inet_diag_msg m{};
  m.idiag_family = AF_INET;
  m.idiag_state = TCP_LISTEN;
  m.id.idiag_sport = htons(port);
  std::memcpy(m.id.idiag_src, address.data(), address.size());
  m.id.idiag_cookie[0] = static_cast<std::uint32_t>(cookie);
  m.id.idiag_cookie[1] = static_cast<std::uint32_t>(cookie >> 32);
  m.idiag_uid = 1000;
  m.idiag_inode = inode;
  return m;
}

bytes diag_message(const inet_diag_msg& m, std::size_t keep = sizeof(inet_diag_msg)) {
  bytes payload;
  append_raw(payload, m);
  payload.resize(keep);
  return message(SOCK_DIAG_BY_FAMILY, payload);
}

bytes join(std::initializer_list<bytes> parts) {
  bytes out;
  for (const auto& part : parts) {
    out.insert(out.end(), part.begin(), part.end());
  }
  return out;
}

struct parsed {
  diag_progress progress = diag_progress::more;
  std::vector<diag_listener> rows;
  std::error_code ec;
};

parsed parse(const bytes& datagram, diag_expect expect = ours) {
  parsed p;
  p.progress = parse_diag_datagram(datagram, expect, p.rows, p.ec);
  return p;
}

TEST(SockDiagReply, DecodesIpv4AndIpv6RowsAndStopsAtDone) {
  inet_diag_msg v6{};
  v6.idiag_family = AF_INET6;
  v6.idiag_state = TCP_LISTEN;
  v6.id.idiag_sport = htons(443);
  const std::array<std::uint8_t, 16> loopback6{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
  std::memcpy(v6.id.idiag_src, loopback6.data(), loopback6.size());
  v6.idiag_uid = 0;
  v6.idiag_inode = 99;
  const auto p = parse(join(
      {diag_message(diag_v4({127, 0, 0, 1}, 8080, 12345, 0x1122334455667788ULL)), diag_message(v6), done_message()}));
  EXPECT_EQ(p.progress, diag_progress::done);
  EXPECT_FALSE(p.ec) << p.ec.message();
  ASSERT_EQ(p.rows.size(), 2u);
  EXPECT_EQ(p.rows[0].local, endpoint::v4({127, 0, 0, 1}, 8080));
  EXPECT_EQ(p.rows[0].inode, 12345u);
  EXPECT_EQ(p.rows[0].uid, 1000u);
  EXPECT_EQ(p.rows[0].cookie, 0x1122334455667788ULL);  // low half first, as sock_diag stores it
  EXPECT_EQ(p.rows[1].local, endpoint::loopback_v6(443));
  EXPECT_EQ(p.rows[1].inode, 99u);
}

// A LISTEN row's rqueue and wqueue are its accept queue's length and limit (ss's Recv-Q, Send-Q).
TEST(SockDiagReply, DecodesTheAcceptQueuesLengthAndLimit) {
  auto row = diag_v4({127, 0, 0, 1}, 8080, 1, 1);
  row.idiag_rqueue = 3;
  row.idiag_wqueue = 4096;
  const auto p = parse(join({diag_message(row), done_message()}));
  ASSERT_FALSE(p.ec) << p.ec.message();
  ASSERT_EQ(p.rows.size(), 1u);
  EXPECT_EQ(p.rows[0].queued, 3u);
  EXPECT_EQ(p.rows[0].limit, 4096u);
}

TEST(SockDiagReply, AMultiPartReplyContinuesUntilDone) {
  std::vector<diag_listener> rows;
  std::error_code ec;
  EXPECT_EQ(parse_diag_datagram(diag_message(diag_v4({127, 0, 0, 1}, 1, 1, 1)), ours, rows, ec), diag_progress::more);
  EXPECT_FALSE(ec);
  EXPECT_EQ(parse_diag_datagram(join({diag_message(diag_v4({127, 0, 0, 1}, 2, 2, 2)), done_message()}), ours, rows, ec),
            diag_progress::done);
  EXPECT_FALSE(ec);
  EXPECT_EQ(rows.size(), 2u);
}

TEST(SockDiagReply, OtherSequenceOrPortIdAndOtherStatesAreIgnored) {
  auto established = diag_v4({127, 0, 0, 1}, 3, 3, 3);
  established.idiag_state = TCP_ESTABLISHED;
  const auto p = parse(join({diag_message(diag_v4({127, 0, 0, 1}, 1, 1, 1)),
                             message(SOCK_DIAG_BY_FAMILY, {}, diag_expect{8, 4242}),  // stale sequence
                             message(NLMSG_DONE, int_payload(0), diag_expect{7, 1}),  // another port id
                             diag_message(established), message(NLMSG_NOOP, {})}));
  EXPECT_EQ(p.progress, diag_progress::more);  // the foreign DONE did not end our dump
  EXPECT_FALSE(p.ec) << p.ec.message();
  ASSERT_EQ(p.rows.size(), 1u);
  EXPECT_EQ(p.rows[0].inode, 1u);
}

TEST(SockDiagReply, NlmsgErrorCarriesTheKernelsErrno) {
  const auto p = parse(error_message(-ENOENT));  // no inet_diag module
  EXPECT_EQ(p.progress, diag_progress::done);
  EXPECT_EQ(p.ec, std::errc::no_such_file_or_directory);
  EXPECT_EQ(p.ec.category(), std::system_category());

  const auto ack = parse(join({error_message(0), done_message()}));
  EXPECT_FALSE(ack.ec) << "an acknowledgement is not an error";
  EXPECT_EQ(ack.progress, diag_progress::done);

  EXPECT_EQ(parse(error_message(EPERM)).ec, std::errc::bad_message) << "errnos are negative";
  EXPECT_EQ(parse(error_message(INT_MIN)).ec, std::errc::bad_message);
  EXPECT_EQ(parse(message(NLMSG_ERROR, bytes(3))).ec, std::errc::bad_message) << "shorter than an int";
}

TEST(SockDiagReply, DoneWithANegativeStatusIsAnErrorAndWithoutPayloadIsTheEnd) {
  const auto failed = parse(done_message(-EINTR));
  EXPECT_EQ(failed.progress, diag_progress::done);
  EXPECT_EQ(failed.ec, std::errc::interrupted);
  const auto bare = parse(message(NLMSG_DONE, {}));
  EXPECT_EQ(bare.progress, diag_progress::done);
  EXPECT_FALSE(bare.ec);
  EXPECT_EQ(parse(message(NLMSG_OVERRUN, {})).ec, std::errc::value_too_large);
}

TEST(SockDiagReply, TruncatedHeaderIsMalformed) {
  bytes datagram = diag_message(diag_v4({127, 0, 0, 1}, 1, 1, 1));
  datagram.resize(datagram.size() + 10, std::byte{0});  // a second header cut after 10 bytes
  const auto p = parse(datagram);
  EXPECT_EQ(p.progress, diag_progress::done);
  EXPECT_EQ(p.ec, std::errc::bad_message);
  EXPECT_EQ(parse(bytes(NLMSG_HDRLEN - 1)).ec, std::errc::bad_message);
}

TEST(SockDiagReply, NlmsgLenTooBigOrTooSmallIsMalformed) {
  for (const std::uint32_t length : {0u, 1u, static_cast<std::uint32_t>(NLMSG_HDRLEN - 1), 1000u, 0xFFFFFFFFu}) {
    bytes datagram = done_message();
    std::memcpy(datagram.data(), &length, sizeof length);  // nlmsg_len is the header's first field
    const auto p = parse(datagram);
    EXPECT_EQ(p.progress, diag_progress::done) << length;
    EXPECT_EQ(p.ec, std::errc::bad_message) << length;
  }
}

TEST(SockDiagReply, ShortInetDiagMsgAndUnknownFamilyAreMalformed) {
  const auto short_message = parse(diag_message(diag_v4({127, 0, 0, 1}, 1, 1, 1), sizeof(inet_diag_msg) - 1));
  EXPECT_EQ(short_message.ec, std::errc::bad_message);
  EXPECT_TRUE(short_message.rows.empty());
  EXPECT_EQ(parse(message(SOCK_DIAG_BY_FAMILY, {})).ec, std::errc::bad_message);
  auto unix_family = diag_v4({127, 0, 0, 1}, 1, 1, 1);
  unix_family.idiag_family = AF_UNIX;
  EXPECT_EQ(parse(diag_message(unix_family)).ec, std::errc::bad_message);
}

TEST(SockDiagReply, MissingPaddingAfterTheLastMessageIsAccepted) {
  const auto p =
      parse(join({diag_message(diag_v4({127, 0, 0, 1}, 1, 1, 1)), message(NLMSG_DONE, bytes(2), ours, /*pad=*/false)}));
  EXPECT_EQ(p.progress, diag_progress::done);
  EXPECT_FALSE(p.ec) << p.ec.message();
  EXPECT_EQ(p.rows.size(), 1u);
}

TEST(SockDiagReply, EveryPrefixAndCorruptionOfAValidDatagramIsHandled) {
  const bytes valid = join(
      {diag_message(diag_v4({127, 0, 0, 1}, 1, 1, 1)), diag_message(diag_v4({127, 0, 0, 2}, 2, 2, 2)), done_message()});
  const std::size_t one_row = diag_message(diag_v4({127, 0, 0, 1}, 1, 1, 1)).size();
  for (std::size_t length = 0; length < valid.size(); ++length) {
    const auto p = parse(bytes(valid.begin(), valid.begin() + static_cast<std::ptrdiff_t>(length)));
    // A prefix is a clean cut between messages (no DONE yet) or malformed; never "done" and fine.
    if (length % one_row == 0) {
      EXPECT_FALSE(p.ec) << length;
      EXPECT_EQ(p.progress, diag_progress::more) << length;
      EXPECT_EQ(p.rows.size(), length / one_row);
    } else {
      EXPECT_EQ(p.ec, std::errc::bad_message) << length;
    }
  }
  // Any single byte set to 0xFF: parsed without crashing (the sanitizer builds check reads).
  for (std::size_t i = 0; i < valid.size(); ++i) {
    bytes corrupt = valid;
    corrupt[i] = std::byte{0xFF};
    const auto p = parse(corrupt);
    EXPECT_LE(p.rows.size(), 2u) << i;
  }
}

// ---- real sockets ------------------------------------------------------------------------

std::uint64_t inode_of(int fd) {
  struct stat status {};
  EXPECT_EQ(::fstat(fd, &status), 0);
  return status.st_ino;
}

std::uint64_t cookie_of(int fd) {
  std::uint64_t cookie = 0;
  socklen_t length = sizeof cookie;
  EXPECT_EQ(::getsockopt(fd, SOL_SOCKET, SO_COOKIE, &cookie, &length), 0);
  return cookie;
}

const diag_listener* find_by_inode(const std::vector<diag_listener>& rows, std::uint64_t inode) {
  const auto it = std::find_if(rows.begin(), rows.end(), [&](const auto& r) { return r.inode == inode; });
  return it == rows.end() ? nullptr : &*it;
}

const listen_row* find_row(const listen_table& table, std::uint64_t inode) {
  const auto it = std::find_if(table.rows.begin(), table.rows.end(), [&](const auto& r) { return r.inode == inode; });
  return it == table.rows.end() ? nullptr : &*it;
}

listen_options reuse_port_options() {
  listen_options options;
  options.reuse_port = true;
  return options;
}

// Tests of the real dump need NETLINK_SOCK_DIAG; a sandbox that forbids it skips them (the
// fallback tests still run) and says why.
#define SKIP_WITHOUT_SOCK_DIAG()                                                                          \
  do {                                                                                                    \
    std::error_code probe;                                                                                \
    (void)read_sock_diag_listeners(probe);                                                                \
    if (probe == std::errc::protocol_not_supported || probe == std::errc::address_family_not_supported || \
        probe == std::errc::permission_denied || probe == std::errc::operation_not_permitted ||           \
        probe == std::errc::no_such_file_or_directory) {                                                  \
      GTEST_SKIP() << "netlink sock_diag unavailable here: " << probe.message();                          \
    }                                                                                                     \
  } while (false)

TEST(SockDiag, FindsLoopbackListenersWithInodeCookieAndUid) {
  SKIP_WITHOUT_SOCK_DIAG();
  const listener v4 = transient::listen(endpoint::loopback_v4(0));
  const listener v6 = transient::listen(endpoint::loopback_v6(0));
  std::error_code ec;
  const auto rows = read_sock_diag_listeners(ec);
  ASSERT_FALSE(ec) << ec.message();
  for (const listener* l : {&v4, &v6}) {
    const auto* row = find_by_inode(rows, inode_of(l->native_handle()));
    ASSERT_NE(row, nullptr) << l->local_endpoint().to_string();
    EXPECT_EQ(row->local, l->local_endpoint());
    EXPECT_NE(row->cookie, 0u);
    EXPECT_EQ(row->cookie, cookie_of(l->native_handle()));
    EXPECT_EQ(row->uid, ::geteuid());
  }
}

TEST(SockDiag, EstablishedAndMerelyBoundSocketsAreNotReturned) {
  SKIP_WITHOUT_SOCK_DIAG();
  const listener l = transient::listen(endpoint::loopback_v4(0));
  const unique_fd client = transient::test::connect_to(l.local_endpoint());
  ASSERT_TRUE(client);
  pollfd p{l.native_handle(), POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 5000), 1);
  const unique_fd server(::accept4(l.native_handle(), nullptr, nullptr, SOCK_CLOEXEC));
  ASSERT_TRUE(server);
  const unique_fd bound(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_storage address{};
  const socklen_t length = endpoint::loopback_v4(0).to_sockaddr(address);
  ASSERT_EQ(::bind(bound.get(), reinterpret_cast<const sockaddr*>(&address), length), 0);

  std::error_code ec;
  const auto rows = read_sock_diag_listeners(ec);
  ASSERT_FALSE(ec) << ec.message();
  EXPECT_NE(find_by_inode(rows, inode_of(l.native_handle())), nullptr) << "the listener itself is listed";
  for (const int fd : {client.get(), server.get(), bound.get()}) {
    EXPECT_EQ(find_by_inode(rows, inode_of(fd)), nullptr) << "fd " << fd;
    const std::uint64_t cookie = cookie_of(fd);
    EXPECT_TRUE(std::none_of(rows.begin(), rows.end(), [&](const auto& r) { return r.cookie == cookie; }));
  }
}

TEST(SockDiag, AgreesWithProcNetTcpOnOurListeners) {
  SKIP_WITHOUT_SOCK_DIAG();
  listen_options dual;
  dual.v6_only = false;
  std::vector<listener> ours_listening;
  ours_listening.push_back(transient::listen(endpoint::loopback_v4(0)));
  ours_listening.push_back(transient::listen(endpoint::loopback_v6(0)));
  ours_listening.push_back(transient::listen(endpoint::any_v4(0)));
  ours_listening.push_back(transient::listen(transient::parse_endpoint("[::ffff:127.0.0.1]:0"), dual));
  std::set<std::uint64_t> inodes;
  for (const auto& l : ours_listening) {
    inodes.insert(inode_of(l.native_handle()));
  }
  std::error_code ec;
  const listen_table diag = read_listen_table(listen_source::sock_diag, ec);
  ASSERT_FALSE(ec) << ec.message();
  const listen_table proc = read_listen_table(listen_source::proc_net_tcp, ec);
  ASSERT_FALSE(ec) << ec.message();
  EXPECT_EQ(diag.source, listen_source::sock_diag);
  EXPECT_EQ(proc.source, listen_source::proc_net_tcp);

  // Other processes open and close listeners meanwhile, so compare our own.
  using key = std::tuple<std::string, std::uint64_t, std::uint32_t>;
  const auto ours_in = [&](const listen_table& table) {
    std::set<key> found;
    for (const auto& row : table.rows) {
      if (inodes.count(row.inode) != 0) {
        found.insert(key{row.local.to_string(), row.inode, row.uid});
      }
    }
    return found;
  };
  const auto from_diag = ours_in(diag);
  EXPECT_EQ(from_diag.size(), ours_listening.size());
  EXPECT_EQ(from_diag, ours_in(proc));
  for (const auto& l : ours_listening) {
    const auto* d = find_row(diag, inode_of(l.native_handle()));
    const auto* p = find_row(proc, inode_of(l.native_handle()));
    ASSERT_TRUE(d != nullptr && p != nullptr);
    EXPECT_EQ(d->local, l.local_endpoint());
    EXPECT_EQ(d->cookie, cookie_of(l.native_handle()));
    EXPECT_EQ(p->cookie, 0u) << "/proc/net/tcp shows no cookie";
  }
}

TEST(SockDiag, AutomaticSourceUsesSockDiagWhereAvailable) {
  SKIP_WITHOUT_SOCK_DIAG();
  std::error_code ec;
  const listen_table table = read_listen_table(listen_source::automatic, ec);
  ASSERT_FALSE(ec) << ec.message();
  EXPECT_EQ(table.source, listen_source::sock_diag);
  EXPECT_FALSE(table.sock_diag_error) << table.sock_diag_error.message();
}

class SourceTest : public ::testing::TestWithParam<listen_source> {
 protected:
  void SetUp() override {
    if (GetParam() == listen_source::sock_diag) {
      SKIP_WITHOUT_SOCK_DIAG();
    }
  }
  [[nodiscard]] bool with_cookies() const { return GetParam() == listen_source::sock_diag; }
};

TEST_P(SourceTest, VerifyPassesAndMatchesByCookieOnlyWithSockDiag) {
  for (const endpoint& where : {endpoint::loopback_v4(0), endpoint::loopback_v6(0)}) {
    const listener l = transient::listen(where);
    const auto report = transient::detail::verify_socket(l.native_handle(), l.local_endpoint(), false, GetParam());
    EXPECT_TRUE(report) << report.message;
    EXPECT_TRUE(report.kernel_listener);
    EXPECT_TRUE(report.unique);
    EXPECT_EQ(report.cookie_matched, with_cookies());
    EXPECT_EQ(report.cookie, cookie_of(l.native_handle()));
  }
}

// The accept queue's length, as the drill reads it to tell whether a foreign server took a
// client: 0, then one per client connected and not yet accepted, then 0 again.
TEST_P(SourceTest, ListenRowsCountTheClientsWaitingInTheAcceptQueue) {
  const listener l = transient::listen(endpoint::loopback_v4(0));
  const auto queued = [&]() -> long {
    std::error_code ec;
    const auto table = transient::detail::read_listen_table(GetParam(), ec);
    EXPECT_FALSE(ec) << ec.message();
    for (const auto& row : table.rows) {
      if (row.inode == inode_of(l.native_handle())) {
        return row.queued;
      }
    }
    return -1;
  };
  EXPECT_EQ(queued(), 0);
  const auto first = transient::test::connect_to(l.local_endpoint());
  const auto second = transient::test::connect_to(l.local_endpoint());
  EXPECT_EQ(queued(), 2);
  const transient::unique_fd taken(::accept(l.native_handle(), nullptr, nullptr));
  ASSERT_TRUE(taken);
  EXPECT_EQ(queued(), 1);
}

// The accept queue's limit as `ss -ltn` shows it (Send-Q): the backlog, from sock_diag only.
// A listener with backlog 8 and 3 clients waiting is 3 of 8; /proc/net/tcp shows 3 and no limit.
TEST_P(SourceTest, ListenEntriesCarryTheQueueLimitOnlyFromSockDiag) {
  listen_options options;
  options.backlog = 8;
  const listener l = transient::listen(endpoint::loopback_v4(0), options);
  std::vector<unique_fd> clients;
  for (int i = 0; i < 3; ++i) {
    clients.push_back(transient::test::connect_to(l.local_endpoint()));
    ASSERT_TRUE(clients.back());
  }
  std::error_code ec;
  const auto entries = transient::detail::who_listens(l.local_endpoint().port(), GetParam(), ec);
  ASSERT_FALSE(ec) << ec.message();
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0].queued, 3u);
  if (with_cookies()) {
    EXPECT_EQ(entries[0].queue_limit, std::optional<std::uint32_t>(8));
  } else {
    EXPECT_EQ(entries[0].queue_limit, std::nullopt) << "/proc/net/tcp does not show the limit";
  }
}

// listen(fd, 0) gives a queue whose limit is 0 (it holds one connection): 0 is a limit the
// kernel reports, not "unknown".
TEST(SockDiag, AListenBacklogOfZeroIsALimitOfZero) {
  SKIP_WITHOUT_SOCK_DIAG();
  unique_fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_storage address{};
  const socklen_t length = endpoint::loopback_v4(0).to_sockaddr(address);
  ASSERT_EQ(::bind(fd.get(), reinterpret_cast<const sockaddr*>(&address), length), 0);
  ASSERT_EQ(::listen(fd.get(), 0), 0);
  std::error_code ec;
  const listener l = listener::adopt(std::move(fd), ec);
  ASSERT_FALSE(ec) << ec.message();
  const auto client = transient::test::connect_to(l.local_endpoint());
  ASSERT_TRUE(client);
  const auto entries = transient::listen_sockets(l.local_endpoint().port());
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0].queued, 1u);
  EXPECT_EQ(entries[0].queue_limit, std::optional<std::uint32_t>(0));
}

TEST_P(SourceTest, VerifyFindsTheOtherHalfOfAReusePortPair) {
  const listener first = transient::listen(endpoint::loopback_v4(0), reuse_port_options());
  const listener second = transient::listen(first.local_endpoint(), reuse_port_options());
  const auto shared =
      transient::detail::verify_socket(second.native_handle(), second.local_endpoint(), true, GetParam());
  EXPECT_TRUE(shared) << shared.message;
  const auto report =
      transient::detail::verify_socket(second.native_handle(), second.local_endpoint(), false, GetParam());
  EXPECT_EQ(report.error, transient::error::duplicate_listener) << report.message;
  EXPECT_TRUE(report.kernel_listener);
  ASSERT_EQ(report.others.size(), 1u);
  EXPECT_EQ(report.others[0].inode, inode_of(first.native_handle()));
  EXPECT_EQ(report.others[0].cookie, with_cookies() ? cookie_of(first.native_handle()) : 0u);
  EXPECT_NE(report.message.find("pid " + std::to_string(::getpid())), std::string::npos) << report.message;
}

TEST_P(SourceTest, WhoListensGivesTheSameEntries) {
  const listener v4 = transient::listen(endpoint::loopback_v4(0));
  const listener v6 = transient::listen(endpoint::loopback_v6(v4.local_endpoint().port()));
  std::error_code ec;
  auto entries = transient::detail::who_listens(v4.local_endpoint().port(), GetParam(), ec);
  ASSERT_FALSE(ec) << ec.message();
  ASSERT_EQ(entries.size(), 2u);
  std::sort(entries.begin(), entries.end(),
            [](const auto& a, const auto& b) { return a.address.is_v4() && !b.address.is_v4(); });
  const std::array<const listener*, 2> expected{&v4, &v6};
  for (std::size_t i = 0; i < entries.size(); ++i) {
    EXPECT_EQ(entries[i].address, expected[i]->local_endpoint());
    EXPECT_EQ(entries[i].inode, inode_of(expected[i]->native_handle()));
    EXPECT_EQ(entries[i].cookie, with_cookies() ? cookie_of(expected[i]->native_handle()) : 0u);
    EXPECT_EQ(entries[i].uid, ::geteuid());
    ASSERT_EQ(entries[i].owners.size(), 1u);
    EXPECT_EQ(entries[i].owners[0].pid, ::getpid());
  }
}

// A listener made in a fresh network namespace (a child: as root, a network namespace alone;
// otherwise with its own user namespace, which needs no privilege) and passed back over a Unix
// socket: it listens, but not in our namespace's table, so it is not the kernel's listener
// here. Returns an empty descriptor and a reason if the system forbids both.
unique_fd listener_from_another_namespace(std::string& why) {
  int pair[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) {
    why = "socketpair failed";
    return {};
  }
  unique_fd ours_end(pair[0]);
  unique_fd child_end(pair[1]);
  const pid_t child = ::fork();
  if (child == 0) {
    ::alarm(10);
    char status = 'u';
    int fd = -1;
    // As root (CI), a network namespace alone; otherwise inside a user namespace, which
    // needs a single-threaded process (not so under TSan, whose runtime keeps a thread).
    if (::unshare(CLONE_NEWNET) == 0 || ::unshare(CLONE_NEWUSER | CLONE_NEWNET) == 0) {
      fd = ::socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in any{};
      any.sin_family = AF_INET;  // 0.0.0.0:0: the new namespace's loopback is down
      status = fd >= 0 && ::bind(fd, reinterpret_cast<const sockaddr*>(&any), sizeof any) == 0 && ::listen(fd, 1) == 0
                   ? 'y'
                   : 'n';
    }
    msghdr m{};
    iovec part{&status, 1};
    m.msg_iov = &part;
    m.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
    if (status == 'y') {
      m.msg_control = control;
      m.msg_controllen = sizeof control;
      cmsghdr* c = CMSG_FIRSTHDR(&m);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int));
      std::memcpy(CMSG_DATA(c), &fd, sizeof fd);
    }
    ::_exit(::sendmsg(child_end.get(), &m, 0) == 1 ? 0 : 1);
  }
  child_end.reset();
  if (child < 0) {
    why = "fork failed";
    return {};
  }
  unique_fd received;
  char status = 0;
  pollfd p{ours_end.get(), POLLIN, 0};
  if (::poll(&p, 1, 10000) == 1) {
    msghdr m{};
    iovec part{&status, 1};
    m.msg_iov = &part;
    m.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
    m.msg_control = control;
    m.msg_controllen = sizeof control;
    if (::recvmsg(ours_end.get(), &m, MSG_CMSG_CLOEXEC) == 1) {
      if (const cmsghdr* c = CMSG_FIRSTHDR(&m); c != nullptr && c->cmsg_type == SCM_RIGHTS) {
        int fd = -1;
        std::memcpy(&fd, CMSG_DATA(c), sizeof fd);
        received.reset(fd);
      }
    }
  } else {
    ::kill(child, SIGKILL);
  }
  int child_status = 0;
  ::waitpid(child, &child_status, 0);
  if (!received) {
    why = status == 'u' ? "unprivileged user namespaces are not allowed here"
                        : "the child could not make a listener (status '" + std::string(1, status) + "')";
  }
  return received;
}

TEST_P(SourceTest, AListenerOfAnotherNetworkNamespaceIsNotTheKernelsListenerHere) {
  std::string why;
  unique_fd foreign = listener_from_another_namespace(why);
  if (!foreign && why.find("user namespaces") != std::string::npos) {
    GTEST_SKIP() << why;
  }
  ASSERT_TRUE(foreign) << why;
  std::error_code ec;
  const listener l = listener::adopt(std::move(foreign), ec);
  ASSERT_FALSE(ec) << ec.message();
  const auto report = transient::detail::verify_socket(l.native_handle(), l.local_endpoint(), false, GetParam());
  EXPECT_TRUE(report.accepting);
  EXPECT_FALSE(report.kernel_listener);
  EXPECT_EQ(report.error, transient::error::not_kernel_listener) << report.message;
  EXPECT_NE(report.message.find(transient::detail::source_name(GetParam())), std::string::npos) << report.message;
}

INSTANTIATE_TEST_SUITE_P(SockDiagOrProc, SourceTest,
                         ::testing::Values(listen_source::sock_diag, listen_source::proc_net_tcp),
                         [](const auto& info) {
                           return info.param == listen_source::sock_diag ? "SockDiag" : "ProcNetTcp";
                         });

// ---- the table check on crafted tables ---------------------------------------------------

transient::verify_report listening_report() {
  transient::verify_report report;
  report.stream = report.accepting = report.address_matches = true;
  report.actual = endpoint::loopback_v4(8080);
  report.inode = 500;
  report.cookie = 77;
  return report;
}

// The listening report once checked against the kernel's `table`.
transient::verify_report checked_against(const listen_table& table) {
  auto report = listening_report();
  transient::detail::check_kernel_table(report, table, false);
  return report;
}

TEST(VerifyTable, ASockDiagRowWithOurInodeButAnotherCookieIsNotUs) {
  listen_table table;
  table.source = listen_source::sock_diag;
  table.rows.push_back(
      listen_row{endpoint::loopback_v4(8080), 0, 500, 78, 0, std::nullopt});  // inode reused by another socket
  auto report = checked_against(table);
  EXPECT_FALSE(report.kernel_listener);
  EXPECT_EQ(report.error, transient::error::not_kernel_listener);
  EXPECT_NE(report.message.find("cookie 77"), std::string::npos) << report.message;

  // /proc/net/tcp has no cookies: the same row passes on its inode.
  table.source = listen_source::proc_net_tcp;
  table.rows[0].cookie = 0;
  report = checked_against(table);
  EXPECT_TRUE(report) << report.message;
  EXPECT_FALSE(report.cookie_matched);

  table.source = listen_source::sock_diag;
  table.rows[0].cookie = 77;
  report = checked_against(table);
  EXPECT_TRUE(report) << report.message;
  EXPECT_TRUE(report.cookie_matched);
}

TEST(VerifyTable, NoRowForOurAddressIsNotTheKernelsListener) {
  listen_table table;
  table.source = listen_source::sock_diag;
  table.rows.push_back(
      listen_row{endpoint::loopback_v4(8081), 0, 500, 77, 0, std::nullopt});  // our identity, another port
  auto report = checked_against(table);
  EXPECT_EQ(report.error, transient::error::not_kernel_listener);
}

}  // namespace
