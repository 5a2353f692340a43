// The listener handover (sockets/handover.hpp) between real processes: a forked child plays
// the successor (or a peer that fails), over a socketpair. The child runs no GoogleTest macro:
// it reports through its exit status and _exits. Each failure must leave the sender's listener
// open and accepting, and no descriptor behind in the test process.
#include "transient/sockets/handover.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <system_error>
#include <vector>

#include "sockets/handover_wire.hpp"
#include "support/child_report.hpp"
#include "support/loopback.hpp"
#include "transient/errors/errors.hpp"
#include "transient/policy/accept_policy.hpp"
#include "transient/sockets/listener.hpp"

namespace {

using namespace std::chrono_literals;
using transient::endpoint;
using transient::error;
using transient::listener;
using transient::listener_offer;
using transient::unique_fd;

// The two ends of a connected AF_UNIX stream socket: the sender's and the receiver's.
struct channel {
  unique_fd sender;
  unique_fd receiver;
};

channel open_channel() {
  int fds[2] = {-1, -1};
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
    return {};
  }
  return {unique_fd(fds[0]), unique_fd(fds[1])};
}

// Forks; the child runs `body` and _exits with what it returns (or 99 after 10 s).
pid_t in_child(const std::function<int()>& body) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::alarm(10);
    ::_exit(body());
  }
  return pid;
}

// Accepts one client on `fd` within 5 s, reads "ping" and answers "pong": true if all went.
bool answer_one(int fd) {
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, 5000) != 1) {
    return false;
  }
  const unique_fd client(::accept4(fd, nullptr, nullptr, SOCK_CLOEXEC));
  return client && transient::test::read_at_least(client.get(), 4, 5s) == "ping" &&
         transient::test::send_text(client.get(), "pong");
}

// True if `l` still takes a new client: it connects, and `l` accepts it.
bool still_accepting(const listener& l) {
  const unique_fd client = transient::test::connect_to(l.local_endpoint());
  pollfd p{l.native_handle(), POLLIN, 0};
  if (!client || ::poll(&p, 1, 5000) != 1) {
    return false;
  }
  return static_cast<bool>(unique_fd(::accept4(l.native_handle(), nullptr, nullptr, SOCK_CLOEXEC)));
}

bool cloexec_and_nonblocking(int fd) {
  return (::fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0 && (::fcntl(fd, F_GETFL) & O_NONBLOCK) != 0;
}

// The successor: takes over "http", reports ready, answers two clients. Exit status 0, or the
// step that failed.
int successor(int channel) {
  transient::take_over_options options;
  options.expected_names = {"http"};
  std::error_code ec;
  const auto taken = transient::take_over_listeners(channel, options, ec);
  if (ec || taken.size() != 1 || taken[0].name != "http") {
    return 2;
  }
  if (!cloexec_and_nonblocking(taken[0].socket.native_handle())) {
    return 3;
  }
  transient::report_ready(channel, ec);
  if (ec) {
    return 4;
  }
  return answer_one(taken[0].socket.native_handle()) && answer_one(taken[0].socket.native_handle()) ? 0 : 5;
}

TEST(Handover, TheSuccessorAnswersTheClientQueuedBeforeTheHandover) {
  const int descriptors_before = transient::test::open_descriptor_count();
  {
    listener l = transient::listen(endpoint::loopback_v4(0));
    const endpoint where = l.local_endpoint();
    const unique_fd queued = transient::test::connect_to(l.local_endpoint());
    ASSERT_TRUE(queued);
    ASSERT_TRUE(transient::test::send_text(queued.get(), "ping"));
    channel ch = open_channel();
    ASSERT_TRUE(ch.sender);
    const pid_t child = in_child([&] {
      l.close();  // the successor holds only what it takes over
      ch.sender.reset();
      return successor(ch.receiver.get());
    });
    ASSERT_GT(child, 0);
    ch.receiver.reset();

    // A blocking socket (as another program may hand over): the successor's comes back non-blocking.
    ::fcntl(l.native_handle(), F_SETFL, ::fcntl(l.native_handle(), F_GETFL) & ~O_NONBLOCK);
    const listener_offer offers[] = {{"http", l.native_handle()}};
    std::error_code ec;
    transient::hand_over_listeners(ch.sender.get(), offers, 5s, ec);
    EXPECT_FALSE(ec) << ec.message();
    EXPECT_EQ(transient::await_ready(ch.sender.get(), 5s, ec), child);
    EXPECT_FALSE(ec) << ec.message();
    l.close();  // the old process lets go only once the successor serves

    EXPECT_EQ(transient::test::read_at_least(queued.get(), 4, 5s), "pong") << "the queued client, answered";
    const unique_fd later = transient::test::connect_to(where);  // after the old process closed its copy
    ASSERT_TRUE(later);
    ASSERT_TRUE(transient::test::send_text(later.get(), "ping"));
    EXPECT_EQ(transient::test::read_at_least(later.get(), 4, 5s), "pong") << "a new client, answered";
    EXPECT_EQ(transient::test::reap_within(child, 10s), 0);
  }
  EXPECT_EQ(transient::test::open_descriptor_count(), descriptors_before);
}

TEST(Handover, AReceiverThatDiesBeforeReadyIsAnIncompleteHandover) {
  const int descriptors_before = transient::test::open_descriptor_count();
  {
    const listener l = transient::listen(endpoint::loopback_v4(0));
    channel ch = open_channel();
    const pid_t child = in_child([&] {
      ch.sender.reset();
      std::error_code ec;
      const auto taken = transient::take_over_listeners(ch.receiver.get(), {}, ec);
      return ec || taken.size() != 1 ? 2 : 0;  // and exits without a word
    });
    ASSERT_GT(child, 0);
    ch.receiver.reset();
    const listener_offer offers[] = {{"http", l.native_handle()}};
    std::error_code ec;
    transient::hand_over_listeners(ch.sender.get(), offers, 5s, ec);
    EXPECT_FALSE(ec) << ec.message();
    EXPECT_EQ(transient::await_ready(ch.sender.get(), 5s, ec), 0);
    EXPECT_EQ(ec, error::handover_incomplete) << ec.message();
    EXPECT_EQ(transient::test::reap_within(child, 10s), 0);
    EXPECT_TRUE(still_accepting(l));
  }
  EXPECT_EQ(transient::test::open_descriptor_count(), descriptors_before);
}

// The SO_COOKIE of `fd` (0 on failure).
std::uint64_t cookie_of(int fd) {
  std::uint64_t cookie = 0;
  socklen_t length = sizeof cookie;
  return ::getsockopt(fd, SOL_SOCKET, SO_COOKIE, &cookie, &length) == 0 ? cookie : 0;
}

// A handover message describing `fd` as `name` (its real cookie and address, unless given).
std::string message_for(const std::string& name, const listener& l, std::uint64_t cookie = 0) {
  transient::detail::handover_entry entry{name, cookie != 0 ? cookie : cookie_of(l.native_handle()),
                                          l.local_endpoint().to_string()};
  return transient::detail::encode_handover({entry});
}

// Sends `bytes` with `fds` attached to the first byte in one sendmsg; true if all went.
bool send_with_descriptors(int channel, const std::string& bytes, const std::vector<int>& fds) {
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 4)] = {};
  iovec piece{const_cast<char*>(bytes.data()), bytes.size()};
  msghdr message{};
  message.msg_iov = &piece;
  message.msg_iovlen = 1;
  if (!fds.empty()) {
    message.msg_control = control;
    message.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* header = CMSG_FIRSTHDR(&message);
    header->cmsg_level = SOL_SOCKET;
    header->cmsg_type = SCM_RIGHTS;
    header->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(header), fds.data(), sizeof(int) * fds.size());
  }
  return ::sendmsg(channel, &message, MSG_NOSIGNAL) == static_cast<ssize_t>(bytes.size());
}

// A sender in a child process that writes `bytes` (with `fds`) and then, if `hold`, keeps the
// channel open until the test closes its end; else it exits at once, closing the channel.
pid_t raw_sender(channel& ch, const std::string& bytes, const std::vector<int>& fds, bool hold) {
  const pid_t pid = in_child([&] {
    ch.receiver.reset();
    if (!bytes.empty() && !send_with_descriptors(ch.sender.get(), bytes, fds)) {
      return 2;
    }
    pollfd p{ch.sender.get(), POLLIN, 0};
    return hold && ::poll(&p, 1, 9000) != 1 ? 3 : 0;  // POLLHUP: the test closed its end
  });
  ch.sender.reset();
  return pid;
}

// What take_over_listeners says of what a raw sender sent (its exit checked, the channel closed).
std::error_code taken_from(const std::string& bytes, const std::vector<int>& fds, bool hold,
                           transient::take_over_options options = {}) {
  channel ch = open_channel();
  const pid_t child = raw_sender(ch, bytes, fds, hold);
  std::error_code ec;
  const auto taken = transient::take_over_listeners(ch.receiver.get(), options, ec);
  EXPECT_TRUE(taken.empty());
  ch.receiver.reset();
  EXPECT_EQ(transient::test::reap_within(child, 10s), 0);
  return ec;
}

TEST(Handover, ASenderThatDiesMidTransferIsAnIncompleteHandover) {
  const int descriptors_before = transient::test::open_descriptor_count();
  {
    const listener l = transient::listen(endpoint::loopback_v4(0));
    const std::string whole = message_for("http", l);
    const std::string half = whole.substr(0, whole.size() / 2);
    EXPECT_EQ(taken_from(half, {l.native_handle()}, false), error::handover_incomplete);
    EXPECT_EQ(taken_from(whole.substr(0, 5), {l.native_handle()}, false), error::handover_incomplete)
        << "the header cut short";
    EXPECT_TRUE(still_accepting(l));
  }
  EXPECT_EQ(transient::test::open_descriptor_count(), descriptors_before) << "the descriptor received is closed";
}

TEST(Handover, TheSenderRefusesWhatIsNotAListeningTcpSocket) {
  const int descriptors_before = transient::test::open_descriptor_count();
  {
    const listener l = transient::listen(endpoint::loopback_v4(0));
    const unique_fd connected = transient::test::connect_to(l.local_endpoint());
    const unique_fd udp(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    const unique_fd local(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    ASSERT_EQ(::bind(local.get(), reinterpret_cast<sockaddr*>(&address), sizeof(sa_family_t)), 0);  // autobind
    ASSERT_EQ(::listen(local.get(), 1), 0);
    channel ch = open_channel();
    const auto refused = [&](int fd) {
      const listener_offer offers[] = {{"http", l.native_handle()}, {"other", fd}};
      std::error_code ec;
      transient::hand_over_listeners(ch.sender.get(), offers, 1s, ec);
      return ec;
    };
    EXPECT_EQ(refused(connected.get()), error::not_listening);
    EXPECT_EQ(refused(udp.get()), error::not_stream);
    EXPECT_EQ(refused(local.get()), error::not_stream) << "a Unix listener is not TCP";
    EXPECT_EQ(refused(1000), std::errc::bad_file_descriptor);
    pollfd p{ch.receiver.get(), POLLIN, 0};
    EXPECT_EQ(::poll(&p, 1, 0), 0) << "nothing was sent";
    EXPECT_TRUE(still_accepting(l));
  }
  EXPECT_EQ(transient::test::open_descriptor_count(), descriptors_before);
}

TEST(Handover, TheReceiverRefusesASocketThatIsNotAListener) {
  const int descriptors_before = transient::test::open_descriptor_count();
  {
    const listener l = transient::listen(endpoint::loopback_v4(0));
    const unique_fd udp(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    const unique_fd connected = transient::test::connect_to(l.local_endpoint());
    const auto described = [&](int fd) {  // the socket's own cookie and address: only the kind is wrong
      std::error_code ec;
      const listener adopted = listener::adopt(unique_fd(::fcntl(fd, F_DUPFD_CLOEXEC, 0)), ec);
      return transient::detail::encode_handover({{"http", cookie_of(fd), adopted.local_endpoint().to_string()}});
    };
    EXPECT_EQ(taken_from(described(udp.get()), {udp.get()}, false), error::not_stream);
    EXPECT_EQ(taken_from(described(connected.get()), {connected.get()}, false), error::not_listening);
    EXPECT_TRUE(still_accepting(l));
  }
  EXPECT_EQ(transient::test::open_descriptor_count(), descriptors_before);
}

TEST(Handover, NamesThatDoNotMatchAreAMismatch) {
  const int descriptors_before = transient::test::open_descriptor_count();
  {
    const listener l = transient::listen(endpoint::loopback_v4(0));
    const listener other = transient::listen(endpoint::loopback_v4(0));
    transient::take_over_options options;
    options.expected_names = {"admin"};
    EXPECT_EQ(taken_from(message_for("http", l), {l.native_handle()}, false, options), error::handover_mismatch);
    options.expected_names = {"http", "admin"};
    EXPECT_EQ(taken_from(message_for("http", l), {l.native_handle()}, false, options), error::handover_mismatch)
        << "one expected name missing";

    channel ch = open_channel();  // the real sender, in a child
    const pid_t child = in_child([&] {
      ch.receiver.reset();
      const listener_offer offers[] = {{"http", l.native_handle()}, {"metrics", other.native_handle()}};
      std::error_code ec;
      transient::hand_over_listeners(ch.sender.get(), offers, 5s, ec);
      return ec ? 2 : 0;
    });
    ch.sender.reset();
    options.expected_names = {"metrics", "admin"};
    std::error_code ec;
    EXPECT_TRUE(transient::take_over_listeners(ch.receiver.get(), options, ec).empty());
    EXPECT_EQ(ec, error::handover_mismatch);
    EXPECT_EQ(transient::test::reap_within(child, 10s), 0);
    EXPECT_TRUE(still_accepting(l));
    EXPECT_TRUE(still_accepting(other));
  }
  EXPECT_EQ(transient::test::open_descriptor_count(), descriptors_before);
}

TEST(Handover, ACookieThatDoesNotMatchIsAMismatch) {
  const int descriptors_before = transient::test::open_descriptor_count();
  {
    const listener l = transient::listen(endpoint::loopback_v4(0));
    const listener other = transient::listen(endpoint::loopback_v4(0));
    // The message describes `l`, but carries `other`: another socket than the one described.
    EXPECT_EQ(taken_from(message_for("http", l), {other.native_handle()}, false), error::handover_mismatch);
    EXPECT_EQ(taken_from(message_for("http", l, cookie_of(l.native_handle()) + 1), {l.native_handle()}, false),
              error::handover_mismatch);
    EXPECT_TRUE(still_accepting(l));
  }
  EXPECT_EQ(transient::test::open_descriptor_count(), descriptors_before);
}

TEST(Handover, GarbageIsMalformed) {
  const int descriptors_before = transient::test::open_descriptor_count();
  {
    const listener l = transient::listen(endpoint::loopback_v4(0));
    EXPECT_EQ(taken_from("GET / HTTP/1.1\r\nHost: x\r\n\r\n", {l.native_handle()}, false), error::handover_malformed);
    std::string two =
        transient::detail::encode_handover({{"http", cookie_of(l.native_handle()), l.local_endpoint().to_string()},
                                            {"admin", cookie_of(l.native_handle()), l.local_endpoint().to_string()}});
    EXPECT_EQ(taken_from(two, {l.native_handle()}, false), error::handover_malformed) << "two named, one sent";
    EXPECT_EQ(taken_from(message_for("http", l), {}, false), error::handover_malformed) << "no descriptor";
    std::string wrong_length = message_for("http", l);
    wrong_length[8] = static_cast<char>(wrong_length[8] - 1);  // the payload length, one short
    EXPECT_EQ(taken_from(wrong_length, {l.native_handle()}, true), error::handover_malformed);
    std::string trailing = message_for("http", l) + "x";
    trailing[8] = static_cast<char>(trailing[8] + 1);  // the payload length, counting a byte no field takes
    EXPECT_EQ(taken_from(trailing, {l.native_handle()}, true), error::handover_malformed);
    std::string stranger = message_for("http", l);
    stranger[0] = static_cast<char>(stranger[0] ^ 0x20);  // another magic number
    EXPECT_EQ(taken_from(stranger, {l.native_handle()}, true), error::handover_malformed);
    std::string later_version = message_for("http", l);
    later_version[4] = 2;
    EXPECT_EQ(taken_from(later_version, {l.native_handle()}, true), error::handover_malformed);
    EXPECT_TRUE(still_accepting(l));
  }
  EXPECT_EQ(transient::test::open_descriptor_count(), descriptors_before);
}

TEST(Handover, DescriptorsTheReceiverHasNoRoomForAreMalformed) {
  const listener l = transient::listen(endpoint::loopback_v4(0));
  channel ch = open_channel();
  const pid_t child = in_child([&] {  // the receiver, with no descriptor to spare
    ch.sender.reset();
    const rlimit none{1, 1};  // room for poll()'s one descriptor, none for a new one
    ::setrlimit(RLIMIT_NOFILE, &none);
    std::error_code ec;
    const auto taken = transient::take_over_listeners(ch.receiver.get(), {}, ec);
    return taken.empty() && ec == error::handover_malformed ? 0 : 2;
  });
  ch.receiver.reset();
  const listener_offer offers[] = {{"http", l.native_handle()}};
  std::error_code ec;
  transient::hand_over_listeners(ch.sender.get(), offers, 5s, ec);
  EXPECT_FALSE(ec) << ec.message();
  EXPECT_EQ(transient::test::reap_within(child, 10s), 0) << "MSG_CTRUNC: the descriptor did not arrive";
  EXPECT_TRUE(still_accepting(l));
}

TEST(Handover, NothingSentInTimeIsATimeout) {
  const int descriptors_before = transient::test::open_descriptor_count();
  {
    transient::take_over_options options;
    options.timeout = 50ms;
    EXPECT_EQ(taken_from("", {}, true, options), error::handover_timeout);
    const listener l = transient::listen(endpoint::loopback_v4(0));
    EXPECT_EQ(taken_from(message_for("http", l).substr(0, 14), {l.native_handle()}, true, options),
              error::handover_timeout)
        << "a part, then nothing";
  }
  EXPECT_EQ(transient::test::open_descriptor_count(), descriptors_before);
}

TEST(Handover, AReceiverThatNeverReportsReadyIsATimeout) {
  const int descriptors_before = transient::test::open_descriptor_count();
  {
    const listener l = transient::listen(endpoint::loopback_v4(0));
    channel ch = open_channel();
    const pid_t child = in_child([&] {
      ch.sender.reset();
      std::error_code ec;
      const auto taken = transient::take_over_listeners(ch.receiver.get(), {}, ec);
      pollfd p{ch.receiver.get(), POLLIN, 0};
      return !ec && ::poll(&p, 1, 9000) == 1 ? 0 : 2;  // holds on, silent, until the test closes
    });
    ch.receiver.reset();
    const listener_offer offers[] = {{"http", l.native_handle()}};
    std::error_code ec;
    transient::hand_over_listeners(ch.sender.get(), offers, 5s, ec);
    EXPECT_FALSE(ec) << ec.message();
    EXPECT_EQ(transient::await_ready(ch.sender.get(), 50ms, ec), 0);
    EXPECT_EQ(ec, error::handover_timeout);
    ch.sender.reset();
    EXPECT_EQ(transient::test::reap_within(child, 10s), 0);
    EXPECT_TRUE(still_accepting(l));
  }
  EXPECT_EQ(transient::test::open_descriptor_count(), descriptors_before);
}

TEST(Handover, ReportingReadyToASenderGoneIsIncomplete) {
  channel ch = open_channel();
  ch.sender.reset();
  std::error_code ec;
  transient::report_ready(ch.receiver.get(), ec);
  EXPECT_EQ(ec, error::handover_incomplete);
}

TEST(Handover, AReadyReportThatIsNotOneIsMalformed) {
  channel ch = open_channel();
  ASSERT_TRUE(transient::test::send_text(ch.receiver.get(), "READY!!!"));
  std::error_code ec;
  EXPECT_EQ(transient::await_ready(ch.sender.get(), 1s, ec), 0);
  EXPECT_EQ(ec, error::handover_malformed);
}

TEST(Handover, BadNamesListsAndTimeoutsAreInvalid) {
  const listener l = transient::listen(endpoint::loopback_v4(0));
  channel ch = open_channel();
  const auto offered = [&](std::vector<listener_offer> offers, std::chrono::milliseconds timeout = 1s) {
    std::error_code ec;
    transient::hand_over_listeners(ch.sender.get(), offers, timeout, ec);
    return ec;
  };
  const int fd = l.native_handle();
  const std::string long_name(256, 'x');
  EXPECT_EQ(offered({{"", fd}}), std::errc::invalid_argument);
  EXPECT_EQ(offered({{"a\nb", fd}}), std::errc::invalid_argument);
  EXPECT_EQ(offered({{std::string_view("a\0b", 3), fd}}), std::errc::invalid_argument);
  EXPECT_EQ(offered({{long_name, fd}}), std::errc::invalid_argument);
  EXPECT_EQ(offered({{"http", fd}, {"http", fd}}), std::errc::invalid_argument) << "a name twice";
  EXPECT_EQ(offered({}), std::errc::invalid_argument) << "nothing to hand over";
  EXPECT_EQ(offered({{"http", fd}}, 0ms), std::errc::invalid_argument);
  EXPECT_EQ(
      offered({{"http", fd}}, std::chrono::duration_cast<std::chrono::milliseconds>(transient::longest_setting) + 1ms),
      std::errc::invalid_argument);
  pollfd p{ch.receiver.get(), POLLIN, 0};
  EXPECT_EQ(::poll(&p, 1, 0), 0) << "nothing was sent";
  std::error_code ec;
  EXPECT_EQ(transient::await_ready(ch.sender.get(), 0ms, ec), 0);
  EXPECT_EQ(ec, std::errc::invalid_argument);
  transient::take_over_options options;
  options.timeout = 0ms;
  EXPECT_TRUE(transient::take_over_listeners(ch.receiver.get(), options, ec).empty());
  EXPECT_EQ(ec, std::errc::invalid_argument);
  EXPECT_TRUE(still_accepting(l));
}

// Sets NOTIFY_SOCKET for the scope of one test, and restores it.
class notify_socket_variable {
 public:
  explicit notify_socket_variable(const char* value) {
    if (const char* old = std::getenv("NOTIFY_SOCKET")) {
      old_ = old;
    }
    if (value != nullptr) {
      ::setenv("NOTIFY_SOCKET", value, 1);
    } else {
      ::unsetenv("NOTIFY_SOCKET");
    }
  }
  ~notify_socket_variable() {
    if (old_.empty()) {
      ::unsetenv("NOTIFY_SOCKET");
    } else {
      ::setenv("NOTIFY_SOCKET", old_.c_str(), 1);
    }
  }
  notify_socket_variable(const notify_socket_variable&) = delete;
  notify_socket_variable& operator=(const notify_socket_variable&) = delete;

 private:
  std::string old_;
};

TEST(HandoverStore, WithoutNotifySocketThereIsNoSupervisor) {
  const notify_socket_variable unset(nullptr);
  const listener l = transient::listen(endpoint::loopback_v4(0));
  const listener_offer offers[] = {{"http", l.native_handle()}};
  std::error_code ec;
  transient::store_listeners_in_systemd(offers, ec);
  EXPECT_EQ(ec, error::no_supervisor);
  const notify_socket_variable relative("relative/path");
  transient::store_listeners_in_systemd(offers, ec);
  EXPECT_EQ(ec, std::errc::invalid_argument) << "NOTIFY_SOCKET neither a path nor '@'";
}

// A fake supervisor: a datagram socket bound to `name` (a path, or '@' and an abstract name).
unique_fd bound_supervisor(const std::string& name) {
  unique_fd fd(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::memcpy(address.sun_path, name.data(), name.size());
  if (name[0] == '@') {
    address.sun_path[0] = '\0';
  }
  const auto length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.size());
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&address), length) != 0) {
    fd.reset();
  }
  return fd;
}

// One datagram the fake supervisor received, and the descriptors that came with it.
struct notification {
  std::string text;
  std::vector<unique_fd> fds;
};

notification receive_notification(int fd) {
  notification got;
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, 5000) != 1) {
    return got;
  }
  char buffer[512];
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 4)];
  iovec piece{buffer, sizeof buffer};
  msghdr message{};
  message.msg_iov = &piece;
  message.msg_iovlen = 1;
  message.msg_control = control;
  message.msg_controllen = sizeof control;
  const ssize_t n = ::recvmsg(fd, &message, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
  if (n < 0) {
    return got;
  }
  got.text.assign(buffer, static_cast<std::size_t>(n));
  for (cmsghdr* c = CMSG_FIRSTHDR(&message); c != nullptr; c = CMSG_NXTHDR(&message, c)) {
    for (std::size_t i = 0; i < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); ++i) {
      int one = -1;
      std::memcpy(&one, CMSG_DATA(c) + i * sizeof(int), sizeof one);
      got.fds.emplace_back(one);
    }
  }
  return got;
}

void expect_stored(const std::string& name) {
  const int descriptors_before = transient::test::open_descriptor_count();
  {
    const unique_fd supervisor = bound_supervisor(name);
    ASSERT_TRUE(supervisor) << name;
    const notify_socket_variable variable(name.c_str());
    const listener web = transient::listen(endpoint::loopback_v4(0));
    const listener admin = transient::listen(endpoint::loopback_v6(0));
    const listener_offer offers[] = {{"web", web.native_handle()}, {"admin", admin.native_handle()}};
    transient::store_listeners_in_systemd(offers);
    for (const auto& offer : offers) {
      const notification got = receive_notification(supervisor.get());
      EXPECT_EQ(got.text, "FDSTORE=1\nFDNAME=" + std::string(offer.name));
      ASSERT_EQ(got.fds.size(), 1U);
      EXPECT_EQ(cookie_of(got.fds[0].get()), cookie_of(offer.fd)) << "the same socket";
    }
    pollfd p{supervisor.get(), POLLIN, 0};
    EXPECT_EQ(::poll(&p, 1, 0), 0) << "one message per listener, no more";
  }
  EXPECT_EQ(transient::test::open_descriptor_count(), descriptors_before);
}

TEST(HandoverStore, EachListenerGoesToAPathSocketWithItsName) {
  char directory[] = "/tmp/transient-store-XXXXXX";
  ASSERT_NE(::mkdtemp(directory), nullptr);
  const std::string path = std::string(directory) + "/notify";
  expect_stored(path);
  ::unlink(path.c_str());
  ::rmdir(directory);
}

TEST(HandoverStore, EachListenerGoesToAnAbstractSocketWithItsName) {
  expect_stored("@transient-store-" + std::to_string(::getpid()));
}

TEST(HandoverStore, BadNamesAndNonListenersAreRefusedBeforeAnythingIsSent) {
  const std::string name = "@transient-store-refused-" + std::to_string(::getpid());
  const unique_fd supervisor = bound_supervisor(name);
  ASSERT_TRUE(supervisor);
  const notify_socket_variable variable(name.c_str());
  const listener l = transient::listen(endpoint::loopback_v4(0));
  const unique_fd udp(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  const auto stored = [](std::vector<listener_offer> offers) {
    std::error_code ec;
    transient::store_listeners_in_systemd(offers, ec);
    return ec;
  };
  EXPECT_EQ(stored({{"web", l.native_handle()}, {"a:b", l.native_handle()}}), std::errc::invalid_argument);
  EXPECT_EQ(stored({{"web", l.native_handle()}, {"", l.native_handle()}}), std::errc::invalid_argument);
  EXPECT_EQ(stored({{"web", l.native_handle()}, {"udp", udp.get()}}), error::not_stream);
  pollfd p{supervisor.get(), POLLIN, 0};
  EXPECT_EQ(::poll(&p, 1, 0), 0) << "nothing was sent";
}

TEST(Handover, TheThrowingOverloadsThrowTheCode) {
  const auto code_of = [](const std::function<void()>& call) {
    try {
      call();
    } catch (const std::system_error& e) {
      return e.code();
    }
    return std::error_code();
  };
  const listener l = transient::listen(endpoint::loopback_v4(0));
  channel ch = open_channel();
  const listener_offer bad[] = {{"", l.native_handle()}};
  EXPECT_EQ(code_of([&] { transient::hand_over_listeners(ch.sender.get(), bad); }), std::errc::invalid_argument);
  transient::take_over_options options;
  options.timeout = 10ms;
  EXPECT_EQ(code_of([&] { (void)transient::take_over_listeners(ch.receiver.get(), options); }),
            error::handover_timeout);
  EXPECT_EQ(code_of([&] { (void)transient::await_ready(ch.sender.get(), 10ms); }), error::handover_timeout);
  {
    const notify_socket_variable unset(nullptr);
    const listener_offer offers[] = {{"http", l.native_handle()}};
    EXPECT_EQ(code_of([&] { transient::store_listeners_in_systemd(offers); }), error::no_supervisor);
  }
  ch.sender.reset();
  EXPECT_EQ(code_of([&] { transient::report_ready(ch.receiver.get()); }), error::handover_incomplete);
  EXPECT_EQ(code_of([&] { (void)transient::take_over_listeners(ch.receiver.get()); }), error::handover_incomplete);
}

TEST(Handover, ItsErrorsHaveNamesAndMessages) {
  const std::vector<std::pair<error, std::string_view>> errors = {{error::handover_incomplete, "handover_incomplete"},
                                                                  {error::handover_malformed, "handover_malformed"},
                                                                  {error::handover_mismatch, "handover_mismatch"},
                                                                  {error::handover_timeout, "handover_timeout"},
                                                                  {error::no_supervisor, "no_supervisor"}};
  for (const auto& [e, name] : errors) {
    const std::error_code ec = e;
    EXPECT_EQ(transient::to_string(e), name);
    EXPECT_NE(ec.message(), "unknown transient error") << name;
    EXPECT_EQ(ec, transient::condition::unclassified) << name;
  }
}

}  // namespace
