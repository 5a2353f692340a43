// ctest-labels: threads
// The server under real descriptor exhaustion: a child process with RLIMIT_NOFILE 64 runs the
// server with a budget above what the limit allows, so accept fails with EMFILE; the test
// process is the client and drives the episodes through a pipe.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include <gtest/gtest.h>

#include <cstdio>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "support/child_report.hpp"
#include "support/holding_client.hpp"
#include "support/holding_server.hpp"
#include "support/loopback.hpp"
#include "transient/drivers/server.hpp"

namespace {

using namespace std::chrono_literals;
using namespace transient::test;
using transient::unique_fd;

constexpr rlim_t child_fd_limit = 64;

TEST(ServerExhaustion, PendingClientIsServedAfterEachReleaseWithoutSpinning) {
  child_process child = start_child(
      [](int commands, int reports) { transient::test::run_holding_server(commands, reports, child_fd_limit); });
  transient::test::expect_each_release_serves_the_pending_client(child);
}

// ---- the spare descriptor, and taking it back ----------------------------------------------

// The child's accept4 (one loop, so calls come in order). After an EMFILE with the spare descriptor
// held, the server's next call is the spare descriptor's: it has just freed a descriptor number. When
// armed by command 's', the seam takes that number first, as another thread of the process
// could, so the spare descriptor cannot be re-opened; command 'g' gives the number back.
//
// 's' arms only once no drain is under way (the last accept4 failed). The client the parent
// saw shed was closed in the middle of its drain, which goes on with the spare descriptor given up: a
// client connecting before that drain's last accept4 (the EAGAIN that ends it) is drained
// too, as it should be, and the theft, armed for the next EMFILE, would come too late for it.
namespace theft {
std::atomic<bool> armed{false};
std::atomic<int> stolen{-1};
std::atomic<bool> draining{false};  // the last accept4 succeeded: a drain may still be under way
bool after_emfile = false;          // the loop thread only

int accept4(int fd, sockaddr* address, socklen_t* length, int flags) {
  if (after_emfile && armed.exchange(false)) {
    stolen = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  }
  const int result = ::accept4(fd, address, length, flags);
  after_emfile = result < 0 && errno == EMFILE;
  draining = result >= 0;
  return result;
}

void on_command(char command) {
  if (command == 's') {
    // No client connects until the answer to the next command: once the last accept4 failed,
    // every later one fails too (EMFILE, or EAGAIN in a drain) until the parent's next client.
    for (int i = 0; i < 3000 && draining; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    armed = true;
  } else if (command == 'g') {
    const int fd = stolen.exchange(-1);
    if (fd >= 0) {
      ::close(fd);
    }
  }
}
}  // namespace theft

enum class fate { served, shed, waiting };

void PrintTo(fate f, std::ostream* out) {  // for gtest's messages
  *out << (f == fate::served ? "served" : f == fate::shed ? "shed" : "waiting");
}

// What the child did with a new client within `limit`: served it (the holding server's byte),
// shed it (closed without a byte), or left it waiting in the backlog.
fate fate_of(int client, std::chrono::milliseconds limit) {
  pollfd p{client, POLLIN, 0};
  if (::poll(&p, 1, static_cast<int>(limit.count())) <= 0) {
    return fate::waiting;
  }
  char byte = 0;
  return ::recv(client, &byte, 1, MSG_DONTWAIT) == 1 ? fate::served : fate::shed;
}

TEST(ServerExhaustion, TheEmfileReserveShedsWaitingClientsAndIsTakenBackAfterATheft) {
  child_process child = start_child([](int commands, int reports) {
    transient::test::holding_config config;
    config.fd_limit = child_fd_limit;
    config.shed = transient::shed_mode::close;
    config.sys.accept4 = theft::accept4;
    config.on_command = theft::on_command;
    transient::test::run_holding_server(commands, reports, config);
  });
  const std::string port = child.next("port");
  ASSERT_FALSE(port.empty());
  const auto where = transient::parse_endpoint("127.0.0.1:" + port);

  // Fill the child: once its descriptors run out, a new client is shed at once (real EMFILE,
  // the spare descriptor freed for a moment), not left waiting.
  std::vector<unique_fd> served;
  fate last = fate::served;
  for (int i = 0; i < 100 && last == fate::served; ++i) {
    unique_fd client = transient::test::connect_to(where);
    ASSERT_TRUE(client);
    last = fate_of(client.get(), 2s);
    if (last == fate::served) {
      served.push_back(std::move(client));
    }
  }
  ASSERT_EQ(last, fate::shed) << "after " << served.size() << " clients";
  ASSERT_GT(served.size(), 20U);
  EXPECT_EQ(fate_of(transient::test::connect_to(where).get(), 2s), fate::shed) << "the spare descriptor was taken back";

  // Another thread takes the number the spare descriptor frees: the next client waits (no spare descriptor).
  child.send('s');
  child.send('c');  // commands run in order: the answer says the theft is armed
  ASSERT_FALSE(child.next("cpu").empty());
  const unique_fd robbed = transient::test::connect_to(where);
  ASSERT_EQ(fate_of(robbed.get(), 500ms), fate::waiting);
  // The number comes back: the loop takes its spare descriptor before its next accept, so the waiting
  // client is shed as the mode says, not served on the spare descriptor's descriptor.
  child.send('g');
  EXPECT_EQ(fate_of(robbed.get(), 3s), fate::shed);
  EXPECT_EQ(fate_of(transient::test::connect_to(where).get(), 2s), fate::shed);

  const auto done = quit_and_check(child);
  EXPECT_EQ(done.at("accepted"), static_cast<long>(served.size()));
  EXPECT_EQ(done.at("shed"), 4);
}

// The handler leaks descriptors outside the budget until accept meets EMFILE; the watchdog must
// stop the server with `stalled` and a diagnosis that names regular files and the file.
[[noreturn]] void run_leaking_server(int /*commands*/, int reports) {
  rlimit limit{};
  ::getrlimit(RLIMIT_NOFILE, &limit);
  limit.rlim_cur = child_fd_limit;
  if (::setrlimit(RLIMIT_NOFILE, &limit) != 0) {
    ::_exit(10);
  }
  char path[] = "/tmp/transient_leak_test_XXXXXX";
  unique_fd file(::mkstemp(path));
  std::vector<transient::listener> ls;
  ls.push_back(transient::listen(transient::parse_endpoint("127.0.0.1:0")));
  write_line(reports, "port " + std::to_string(ls[0].local_endpoint().port()));
  transient::server_options options;
  options.policy.stall_timeout = 300ms;
  options.policy.sink = [](const transient::policy_event&) {};
  // Each request keeps its connection (in flight, inside the budget) and leaks four
  // descriptors of one file (outside it), so accept meets EMFILE well below the budget.
  std::vector<transient::connection> in_flight;
  transient::server srv(
      std::move(ls),
      [&](transient::connection c) {
        for (int i = 0; i < 4; ++i) {
          [[maybe_unused]] const int leaked = ::open(path, O_RDONLY | O_CLOEXEC);
        }
        in_flight.push_back(std::move(c));
      },
      options);
  const auto start = std::chrono::steady_clock::now();
  std::error_code ec;
  const transient::stop_info info = srv.run(ec);
  const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start);
  ::unlink(path);
  write_line(reports, "stopped " + std::string(transient::to_string(info.reason)) + " " + std::to_string(took.count()));
  std::string diagnosis = info.diagnosis;
  for (char& c : diagnosis) {
    c = c == '\n' ? '|' : c;
  }
  write_line(reports, "diagnosis " + diagnosis);
  ::_exit(ec == transient::condition::stalled ? 0 : 1);
}

TEST(ServerExhaustion, LeakStopsWithStalledAndADiagnosisNamingTheLeak) {
  child_process child = start_child(&run_leaking_server);
  const std::string port = child.next("port");
  ASSERT_FALSE(port.empty());
  const auto where = transient::parse_endpoint("127.0.0.1:" + port);
  std::vector<unique_fd> clients;
  for (int i = 0; i < 40; ++i) {
    clients.push_back(transient::test::connect_to(where));
  }
  const std::string stopped = child.next("stopped", 10s);
  const std::string diagnosis = child.next("diagnosis");
  EXPECT_EQ(child.wait_exit(), 0) << stopped << "\n" << diagnosis;
  EXPECT_EQ(stopped.substr(0, stopped.find(' ')), "stalled");
  EXPECT_NE(diagnosis.find("likely descriptor leak"), std::string::npos) << diagnosis;
  EXPECT_NE(diagnosis.find("regular file"), std::string::npos) << diagnosis;
  EXPECT_NE(diagnosis.find("/tmp/transient_leak_test_"), std::string::npos) << diagnosis;
  EXPECT_NE(diagnosis.find("RLIMIT_NOFILE soft 64"), std::string::npos) << diagnosis;
}

}  // namespace
