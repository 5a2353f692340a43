// A server for a forked child under a low RLIMIT_NOFILE, driven through pipes by a test or a
// benchmark: it holds every connection it accepts (so descriptors run out and accept fails
// with EMFILE) until told to release one.
//
// Protocol. The child writes "port N" first. Commands, one byte each: 'r' releases the oldest
// connection; 'c' asks for "cpu MICROSECONDS events N" (its CPU time so far, and the policy
// events that would be log lines: degraded, summaries, recovered); 'q' (or end of file) stops
// the server. It then writes "done clean 0|1 accepted N shed N degraded N summaries N
// recovered N flaps N" (flaps: counted in the lines that end episodes) and "fds BEFORE AFTER" (its descriptors before
// the server existed and after it was gone). A test may see every command first (holding_config::on_command), e.g. to
// drive a syscall seam it installed. 'e' asks for "answers accepted N emfile_since N all N": what the
// accepts have answered so far (seen through the syscall seam, behind any fake the test installed):
// connections, EMFILE answers since the latest connection, and answers of any kind; a test drives its
// episodes from these instead of guessing from time whether the child has run out of descriptors.
#pragma once

#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <deque>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "support/child_report.hpp"
#include "support/loopback.hpp"
#include "transient/drivers/server.hpp"
#include "transient/testing/syscalls.hpp"

namespace transient::test {

/// How the holding server runs.
struct holding_config {
  rlim_t fd_limit = 64;                ///< Its soft RLIMIT_NOFILE.
  shed_mode shed = shed_mode::queue;   ///< Not queue: the spare descriptor sheds waiting clients.
  syscalls sys{};                      ///< The server's syscall seam.
  void (*on_command)(char) = nullptr;  ///< Sees every command byte before the server does.
};

/// The accepts' answers in the holding server's process (one server per forked child), counted by
/// wrappers around the syscall seam's accept4 and uring_accept_result, which call what the test
/// installed. Under one mutex, so that a report never pairs a count with an older EMFILE count.
namespace holding_answers {
inline std::mutex mutex;
inline long accepted = 0;      // answers that were connections
inline long emfile_since = 0;  // EMFILE answers since the latest connection
inline long all = 0;           // every answer
inline int (*inner_accept4)(int, sockaddr*, socklen_t*, int) = ::accept4;
inline int (*inner_uring_accept_result)(int) = uring_accept_result_as_posted;

inline void note(bool connection, bool emfile) {
  const std::lock_guard lock(mutex);
  ++all;
  if (connection) {
    ++accepted;
    emfile_since = 0;
  } else if (emfile) {
    ++emfile_since;
  }
}

inline int accept4(int fd, sockaddr* address, socklen_t* length, int flags) {
  const int result = inner_accept4(fd, address, length, flags);
  const int error = errno;
  note(result >= 0, result < 0 && error == EMFILE);
  errno = error;
  return result;
}

inline int uring_accept_result(int result) {
  const int answer = inner_uring_accept_result(result);
  note(answer >= 0, answer == -EMFILE);
  return answer;
}

/// "answers accepted N emfile_since N all N".
inline std::string report() {
  const std::lock_guard lock(mutex);
  return "answers accepted " + std::to_string(accepted) + " emfile_since " + std::to_string(emfile_since) + " all " +
         std::to_string(all);
}
}  // namespace holding_answers

/// Runs the holding server (transient::server, or a driver with its constructor and
/// contract, e.g. transient::uring_server) in this (forked) process as `config` says; reads commands from
/// `commands`, writes reports to `reports`, then exits (status 10 if the limit could not be
/// set, else 0).
template <typename Server = server>
[[noreturn]] void run_holding_server(int commands, int reports, const holding_config& config) {
  rlimit limit{};
  ::getrlimit(RLIMIT_NOFILE, &limit);
  limit.rlim_cur = config.fd_limit;
  if (::setrlimit(RLIMIT_NOFILE, &limit) != 0) {
    ::_exit(10);
  }
  const int fds_before = open_descriptor_count();
  std::array<std::atomic<int>, 6> events{};  // by policy_event_kind
  std::atomic<long> flaps{0};
  {
    std::mutex mutex;
    std::deque<connection> held;
    std::vector<listener> ls;
    ls.push_back(listen(parse_endpoint("127.0.0.1:0")));
    write_line(reports, "port " + std::to_string(ls[0].local_endpoint().port()));
    server_options options;
    options.max_connections = 1000;  // above the limit: the kernel says EMFILE first
    options.policy.stall_timeout = std::chrono::milliseconds(0);
    options.policy.sink = [&](const policy_event& e) {
      events[static_cast<std::size_t>(e.kind)]++;
      if (e.kind == policy_event_kind::recovered || e.kind == policy_event_kind::stopped) {
        flaps += static_cast<long>(e.flaps);  // the flaps of the episode this event ends
      }
    };
    options.policy.shed = config.shed;
    syscalls seam = config.sys;
    holding_answers::inner_accept4 = config.sys.accept4;
    holding_answers::inner_uring_accept_result = config.sys.uring_accept_result;
    seam.accept4 = holding_answers::accept4;
    seam.uring_accept_result = holding_answers::uring_accept_result;
    options.sys = &seam;
    Server srv(
        std::move(ls),
        [&](connection c) {
          ::send(c.native_handle(), "a", 1, MSG_NOSIGNAL);
          const std::lock_guard lock(mutex);
          held.push_back(std::move(c));
        },
        options);
    std::thread control([&] {
      char command = 0;
      while (::read(commands, &command, 1) == 1 && command != 'q') {
        if (config.on_command != nullptr) {
          config.on_command(command);
        }
        if (command == 'r') {
          const std::lock_guard lock(mutex);
          if (!held.empty()) {
            held.pop_front();
          }
        } else if (command == 'c') {
          const int lines = events[0] + events[1] + events[2];
          write_line(reports, "cpu " + std::to_string(cpu_microseconds()) + " events " + std::to_string(lines));
        } else if (command == 'e') {
          write_line(reports, holding_answers::report());
        }
      }
      srv.stop();
    });
    const stop_info info = srv.run();
    control.join();
    held.clear();
    std::ostringstream done;
    const policy_metrics metrics = srv.metrics();
    done << "done clean " << (info.ok() ? 1 : 0) << " accepted " << metrics.accepted << " shed "
         << metrics.shed[static_cast<std::size_t>(shed_reason::budget)] << " degraded " << events[0] << " summaries "
         << events[1] << " recovered " << events[2] << " flaps " << flaps;
    write_line(reports, done.str());
  }
  write_line(reports, "fds " + std::to_string(fds_before) + " " + std::to_string(open_descriptor_count()));
  ::_exit(0);
}

/// run_holding_server with the default configuration and a soft limit of `fd_limit`.
template <typename Server = server>
[[noreturn]] void run_holding_server(int commands, int reports, rlim_t fd_limit) {
  holding_config config;
  config.fd_limit = fd_limit;
  run_holding_server<Server>(commands, reports, config);
}

}  // namespace transient::test
