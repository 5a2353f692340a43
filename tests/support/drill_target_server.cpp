// A small HTTP/1.1 keep-alive server with a chosen accept-loop behaviour, for the tests of
// `transient drill --target`: one poll loop, every request answered "200 ok".
//
//   drill_target_server MODE PORT [PIDFILE]
//
//   good         on EMFILE, stops polling the listener until a connection closes (one log line)
//   rearm        on EMFILE, logs and polls again at once (Asio's examples): a spin and a flood
//   sleep        on EMFILE, logs and sleeps a fixed second: late
//   die          on EMFILE, logs and exits 1: dead
//   ignore-term  like good, but ignores SIGTERM
//   fork         like good, but first forks a process that ignores SIGTERM and sleeps
//   close        like good, but closes each connection after answering (as python3 -m http.server)
//   handler      like good, but each answer takes 10 ms of the one thread (a blocking handler:
//                100 answers a second), whatever waited in the accept queue meanwhile
//   hup-reopen   like good, but on SIGHUP closes its listener and every connection, and listens
//                again 300 ms later (a restart that loses requests)
//   hup-leak     like good, but on SIGHUP opens /dev/null and keeps it (a restart that loses
//                nothing but leaves a descriptor behind each time)
//
// MODE may join several with commas ("close,ignore-term").
//
// PIDFILE, if given, receives the pid of the server (or, with fork, of the forked process).
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

void write_pid(const char* path, pid_t pid) {
  if (path == nullptr) {
    return;
  }
  if (FILE* f = std::fopen(path, "w")) {
    std::fprintf(f, "%d\n", static_cast<int>(pid));
    std::fclose(f);
  }
}

int listen_on(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<std::uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
      ::listen(fd, SOMAXCONN) != 0) {
    std::perror("listen");
    std::exit(2);
  }
  return fd;
}

struct client {
  int fd;
  std::string data;
};

volatile sig_atomic_t hangup = 0;

void on_hangup(int /*signal*/) { hangup = 1; }

// SIGHUP sets `hangup`, interrupting poll (no SA_RESTART).
void catch_hangup() {
  struct sigaction action {};
  action.sa_handler = on_hangup;
  ::sigaction(SIGHUP, &action, nullptr);
}

// The restart of the hup-* modes: closes and reopens the listener (and every connection) with
// a pause between, or keeps one more descriptor open.
void restart(bool reopen, int& listener, int port, std::vector<client>& clients) {
  hangup = 0;
  if (!reopen) {
    (void)::open("/dev/null", O_RDONLY | O_CLOEXEC);  // the leak is the point
    return;
  }
  ::close(listener);
  for (const auto& c : clients) {
    ::close(c.fd);
  }
  clients.clear();
  ::usleep(300000);
  listener = listen_on(port);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: drill_target_server MODE PORT [PIDFILE]\n");
    return 2;
  }
  const std::string modes = "," + std::string(argv[1]) + ",";
  const auto is = [&](const char* m) { return modes.find("," + std::string(m) + ",") != std::string::npos; };
  const std::string mode = is("rearm") ? "rearm" : is("sleep") ? "sleep" : is("die") ? "die" : "good";
  const bool close_after_answer = is("close");
  const bool blocking_handler = is("handler");
  const char* pidfile = argc > 3 ? argv[3] : nullptr;
  const bool hup_reopen = is("hup-reopen");
  if (hup_reopen || is("hup-leak")) {
    catch_hangup();
  }
  if (is("ignore-term")) {
    ::signal(SIGTERM, SIG_IGN);
  }
  if (is("fork")) {
    const pid_t child = ::fork();
    if (child == 0) {
      ::signal(SIGTERM, SIG_IGN);
      for (int i = 0; i < 600; ++i) {  // ten minutes at most, should the drill fail to end it
        ::sleep(1);
      }
      ::_exit(0);
    }
    write_pid(pidfile, child);
  } else {
    write_pid(pidfile, ::getpid());
  }
  int listener = listen_on(std::atoi(argv[2]));
  std::vector<client> clients;
  bool paused = false;
  constexpr std::string_view response = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
  while (true) {
    if (hangup != 0) {
      restart(hup_reopen, listener, std::atoi(argv[2]), clients);
    }
    std::vector<pollfd> fds{{listener, static_cast<short>(paused ? 0 : POLLIN), 0}};
    for (const auto& c : clients) {
      fds.push_back({c.fd, POLLIN, 0});
    }
    if (::poll(fds.data(), fds.size(), -1) < 0) {
      continue;
    }
    for (std::size_t i = fds.size() - 1; i >= 1; --i) {
      if ((fds[i].revents & (POLLIN | POLLHUP | POLLERR)) == 0) {
        continue;
      }
      client& c = clients[i - 1];
      char buffer[4096];
      const ssize_t n = ::recv(c.fd, buffer, sizeof buffer, 0);
      if (n <= 0) {
        ::close(c.fd);
        clients.erase(clients.begin() + static_cast<std::ptrdiff_t>(i - 1));
        paused = false;  // a descriptor is free again
        continue;
      }
      c.data.append(buffer, static_cast<std::size_t>(n));
      bool answered = false;
      for (std::size_t end = c.data.find("\r\n\r\n"); end != std::string::npos; end = c.data.find("\r\n\r\n")) {
        c.data.erase(0, end + 4);
        if (blocking_handler) {
          ::usleep(10000);
        }
        (void)::send(c.fd, response.data(), response.size(), MSG_NOSIGNAL);
        answered = true;
      }
      if (answered && close_after_answer) {
        ::close(c.fd);
        clients.erase(clients.begin() + static_cast<std::ptrdiff_t>(i - 1));
        paused = false;
      }
    }
    if ((fds[0].revents & POLLIN) == 0) {
      continue;
    }
    while (true) {
      const int fd = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd >= 0) {
        clients.push_back({fd, {}});
        continue;
      }
      if (errno == EMFILE || errno == ENFILE) {
        std::fprintf(stderr, "accept: %s\n", std::strerror(errno));
        if (mode == "die") {
          // _exit: no exit-time work that needs a descriptor (LeakSanitizer's check in the
          // sanitizer builds aborts when none is free), so the status is the server's own 1.
          std::fflush(stderr);
          ::_exit(1);
        }
        if (mode == "sleep") {
          ::sleep(1);
        } else if (mode != "rearm") {
          paused = true;
        }
      }
      break;  // EAGAIN, or an error handled above
    }
  }
}
