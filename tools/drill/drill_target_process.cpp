// Starting a drill target and talking to it (see drill_target.hpp): the command line split
// like a shell's words, a free port, readiness, bounded connects, and what became of a client.
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <fstream>
#include <sstream>
#include <thread>

#include "drill_client.hpp"
#include "drill_target.hpp"
#include "transient/sockets/listener.hpp"

namespace transient::tool {
namespace {

using clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

int wait_ms(clock::time_point deadline) {
  const auto left = std::chrono::ceil<milliseconds>(deadline - clock::now()).count();
  return static_cast<int>(std::clamp<std::int64_t>(left, 0, 60000));
}

std::string ms_text(milliseconds ms) { return std::to_string(ms.count()) + " ms"; }

// Newlines in `path` from byte `from` on; a file that shrank (rotated) counts from 0.
std::pair<std::uint64_t, std::uint64_t> file_growth(const std::string& path, std::uint64_t from) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return {0, 0};
  }
  in.seekg(0, std::ios::end);
  const auto size = static_cast<std::uint64_t>(in.tellg());
  const std::uint64_t start = size < from ? 0 : from;
  in.seekg(static_cast<std::streamoff>(start));
  std::array<char, 65536> buffer{};
  std::uint64_t lines = 0;
  std::uint64_t read = 0;
  constexpr std::uint64_t read_cap = std::uint64_t{64} << 20U;  // beyond it, lines are estimated
  while (read < read_cap && in.read(buffer.data(), buffer.size()), in.gcount() > 0) {
    const auto n = static_cast<std::size_t>(in.gcount());
    lines +=
        static_cast<std::uint64_t>(std::count(buffer.begin(), buffer.begin() + static_cast<std::ptrdiff_t>(n), '\n'));
    read += n;
  }
  const std::uint64_t bytes = size - start;
  if (read < bytes && read > 0) {
    lines = lines * bytes / read;
  }
  return {lines, bytes};
}

std::uint64_t file_size(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? static_cast<std::uint64_t>(st.st_size) : 0;
}

}  // namespace

std::chrono::seconds target_scenario_bound(bool quick) { return std::chrono::seconds(quick ? 20 : 40); }

std::string target_fix(const std::string& verdict) {
  static const std::vector<std::pair<std::string, std::string>> fixes{
      {"SPIN",
       "stop polling the listener while accept fails with EMFILE or ENFILE, and resume when a connection closes "
       "(or after a backoff)"},
      {"FLOOD", "log the first failed accept of an episode and a summary when it ends, not every failure"},
      {"LATE", "resume accepting as soon as a connection closes (a close frees a descriptor), not after a fixed sleep"},
      {"STUCK", "after EMFILE, resume accepting when a connection closes: the pause must end on a release"},
      {"DEAD", "treat EMFILE and ENFILE from accept as a temporary condition: pause accepting and keep running"},
      {"LOST",
       "keep waiting clients in the listen queue: stop accepting at your limit instead of accepting and closing "
       "them, and listen with a backlog of at least the burst (listen(fd, SOMAXCONN))"},
      {"IGNORES SIGTERM", "on SIGTERM close the listener, finish or close the open connections, and exit"},
      {"UNCLEAN STOP", "on SIGTERM close every connection and exit with status 0"},
      {"LEFT PROCESSES", "stop the processes you fork before you exit (or signal your process group)"},
      {"STARVED",
       "bound the time a client may take to send its request (a header timeout) and cap connections "
       "per address"},
      {"NO START",
       "make the command listen on 127.0.0.1:{port} and answer within --ready-timeout; the drill writes the port "
       "it picked where {port} stands"},
      {"NO LIMIT",
       "run the server so that its RLIMIT_NOFILE applies to the process that accepts (no raising it, "
       "no helper process holding the connections)"},
      {"CANNOT FILL", "drill it with --protocol tcp, where the drill holds connections that send no request"},
      {"WASTE",
       "do not serve a connection that waited in the accept queue longer than your clients wait: shed it at "
       "accept (transient: max_queue_wait), and keep the backlog near what you serve within a client's timeout"},
      {"UNANSWERED", "answer every connection you accept, if only with a 503, before your clients' timeout"},
      {"RESTART LOSS",
       "restart without closing the listener: hand it to the new process (transient's hand_over_listeners, "
       "systemd's file descriptor store, nginx's binary upgrade), stop accepting only once the new process "
       "accepts, and answer every request already read, and the next one on each keep-alive connection, "
       "with Connection: close before closing it"},
      {"LEFT DESCRIPTORS",
       "close in the new process what the old one handed over and it does not use (the handover "
       "channel, duplicates), and let each old process exit"},
      {"NO LOAD",
       "the load saw no answer across a restart, so nothing was judged: run the drill on a quieter "
       "machine, or check that the server answers GET / between restarts"},
      {"RESTART FAILED",
       "make the --restart command succeed on its own first (exit status 0); {pid} is the "
       "server's pid, {port} its port"},
      {"DOWN", "the server did not answer again after the restart command: check its log for why"},
  };
  std::string out;
  for (const auto& [word, fix] : fixes) {
    // A combined verdict ("SPIN+FLOOD") gets the fix of each part.
    const std::size_t at = verdict.find(word);
    const bool whole =
        at != std::string::npos && (at + word.size() == verdict.size() || verdict[at + word.size()] == '+');
    if (whole && (at == 0 || verdict[at - 1] == '+')) {
      out += (out.empty() ? "" : "; ") + fix;
    }
  }
  return out.empty() ? "see the verdict's threshold below" : out;
}

std::vector<std::pair<std::string, std::string>> target_threshold_lines() {
  using namespace target_threshold;
  const auto number = [](double v) { return std::to_string(static_cast<long long>(v)); };
  return {{"spin",
           "the process group is runnable (on a CPU or waiting for one, /proc/PID/task/*/schedstat) more "
           "than " +
               number(spin_runnable_percent) + " % of the time, or on a CPU more than " + number(spin_cpu_percent) +
               " %, while exhausted"},
          {"flood", "more than " + number(flood_lines_per_s) + " log lines a second while exhausted"},
          {"late", "a waiting client served more than " + ms_text(late_recovery) +
                       " after a release (worst trial), not counting time the target and the drill waited for a CPU"},
          {"stuck", "no client served within " + ms_text(stuck_after_release) + " of a release"},
          {"dead", "the server exited while exhausted"},
          {"lost", "a client of the backpressure scenario reset, closed or not served"},
          {"ignores sigterm",
           "the process, or whatever holds its port, still runs (listens) " + ms_text(stop_within) + " after SIGTERM"},
          {"unclean stop", "connections not closed or no exit within " + ms_text(stop_within) +
                               " of SIGTERM, an exit status other than 0 or SIGTERM's, or processes left"},
          {"cannot fill",
           "the drill could not fill the server's descriptor table (it closes what it answered, "
           "or the scenario's time ran out): nothing was judged"},
          {"starved", "a client from another address not served within " + ms_text(other_address_within) +
                          " while slow clients hold connections"},
          {"waste", "overload: a client answered after its 1 s deadline, when it had gone"},
          {"unanswered", "overload: a connected client never answered (closed, reset or silent until the watch ended)"},
          {"restart loss",
           "restart: a request refused, reset, or without an answer (EOF, or none within 2 s) while the "
           "--restart command ran"},
          {"left descriptors",
           "restart: the processes listening on the port hold more descriptors after the restarts "
           "than before"}};
}

std::optional<std::vector<std::string>> split_words(std::string_view text, std::string& problem) {
  std::vector<std::string> words;
  std::string word;
  bool in_word = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == ' ' || c == '\t' || c == '\n') {
      if (in_word) {
        words.push_back(std::move(word));
        word.clear();
        in_word = false;
      }
      continue;
    }
    in_word = true;
    if (c == '\\') {
      if (++i == text.size()) {
        problem = "the command ends with a backslash";
        return std::nullopt;
      }
      if (text[i] != '\n') {  // backslash-newline joins lines
        word.push_back(text[i]);
      }
    } else if (c == '\'') {
      const std::size_t close = text.find('\'', i + 1);
      if (close == std::string_view::npos) {
        problem = "unterminated single quote in the command";
        return std::nullopt;
      }
      word.append(text.substr(i + 1, close - i - 1));
      i = close;
    } else if (c == '"') {
      for (++i;; ++i) {
        if (i >= text.size()) {
          problem = "unterminated double quote in the command";
          return std::nullopt;
        }
        if (text[i] == '"') {
          break;
        }
        if (text[i] == '\\' && i + 1 < text.size() &&
            std::string_view("\"\\$`").find(text[i + 1]) != std::string_view::npos) {
          ++i;
        }
        word.push_back(text[i]);
      }
    } else {
      word.push_back(c);
    }
  }
  if (in_word) {
    words.push_back(std::move(word));
  }
  if (words.empty()) {
    problem = "the command is empty";
    return std::nullopt;
  }
  return words;
}

std::string resolve_program(const std::string& program) {
  if (program.find('/') != std::string::npos) {
    return ::access(program.c_str(), X_OK) == 0 ? program : "";
  }
  const char* path = std::getenv("PATH");
  std::istringstream dirs(path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin");
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    std::string candidate = (dir.empty() ? "." : dir) + "/" + program;
    struct stat st {};
    if (::stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(candidate.c_str(), X_OK) == 0) {
      return candidate;
    }
  }
  return "";
}

std::uint16_t pick_free_port() {
  const unique_fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_storage address{};
  const socklen_t length = endpoint::loopback_v4(0).to_sockaddr(address);
  if (!fd || ::bind(fd.get(), reinterpret_cast<const sockaddr*>(&address), length) != 0) {
    return 0;
  }
  sockaddr_in bound{};
  socklen_t bound_length = sizeof bound;
  if (::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&bound), &bound_length) != 0) {
    return 0;
  }
  return ntohs(bound.sin_port);
}

target_server::target_server(const target_settings& s) {
  const std::uint16_t port = pick_free_port();
  if (port == 0) {
    problem_ = "no free loopback port";
    return;
  }
  at_ = endpoint::loopback_v4(port);
  child_launch launch;
  launch.fd_limit = s.fd_limit;
  for (const auto& word : s.command) {
    std::string w = word;
    for (std::size_t at = w.find("{port}"); at != std::string::npos; at = w.find("{port}", at)) {
      w.replace(at, 6, std::to_string(port));
    }
    launch.argv.push_back(std::move(w));
  }
  launch.program = resolve_program(launch.argv.front());
  if (launch.program.empty()) {
    problem_ = "cannot run '" + launch.argv.front() + "': not found or not executable";
    return;
  }
  for (const auto& file : s.log_files) {
    log_offsets_.emplace_back(file, file_size(file));
  }
  child_ = std::make_unique<serve_child>(launch);
  wait_ready(s);
}

bool target_server::wait_ready(const target_settings& s) {
  const auto deadline = clock::now() + s.ready_timeout;
  bool connected = false;
  while (clock::now() < deadline) {
    if (const auto status = exited()) {
      problem_ = "did not start: exited with status " + std::to_string(*status) +
                 (*status == 127 ? " (exec failed)" : "") + " before it answered";
      return false;
    }
    const unique_fd fd = connect_bounded(at_, milliseconds(200), std::nullopt, s.protocol == target_protocol::http);
    if (fd) {
      connected = true;
      const auto left = std::min(milliseconds(wait_ms(deadline)), milliseconds(500));
      if (await_outcome(fd.get(), at_, s.protocol, left) == probe_outcome::served) {
        return true;
      }
    }
    std::this_thread::sleep_for(milliseconds(20));
  }
  problem_ = connected ? "accepted but never answered GET / within the ready timeout (" + ms_text(s.ready_timeout) + ")"
                       : "never listened on " + at_.to_string() + " within the ready timeout (" +
                             ms_text(s.ready_timeout) + ")";
  return false;
}

std::optional<int> target_server::exited() const { return child_ ? child_->wait_exit(milliseconds(0)) : std::nullopt; }

std::pair<std::uint64_t, std::uint64_t> target_server::log_volume() const {
  if (!child_) {
    return {0, 0};
  }
  const output_volume written = child_->written();
  std::uint64_t lines = written.stdout_lines + written.stderr_lines;
  std::uint64_t bytes = written.stdout_bytes + written.stderr_bytes;
  for (const auto& [file, from] : log_offsets_) {
    const auto [l, b] = file_growth(file, from);
    lines += l;
    bytes += b;
  }
  return {lines, bytes};
}

double target_server::cpu_seconds() const { return child_ ? child_->group_cpu_seconds() : 0; }

std::string_view outcome_name(probe_outcome o) {
  switch (o) {
    case probe_outcome::served: return "served";
    case probe_outcome::reset: return "reset";
    case probe_outcome::closed: return "closed";
    case probe_outcome::waiting: return "still waiting";
  }
  return "?";
}

unique_fd connect_bounded(const endpoint& to, milliseconds timeout, const std::optional<endpoint>& source,
                          bool request) {
  sockaddr_storage address{};
  const socklen_t length = to.to_sockaddr(address);
  unique_fd fd(::socket(address.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) {
    return {};
  }
  // Linux bounds a blocking connect by SO_SNDTIMEO: a target whose backlog is full (the SYN
  // dropped) cannot hold the drill for the minutes of SYN retries.
  const timeval bound{static_cast<time_t>(timeout.count() / 1000),
                      static_cast<suseconds_t>((timeout.count() % 1000) * 1000)};
  ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &bound, sizeof bound);
  if (source) {
    sockaddr_storage from{};
    const socklen_t from_length = source->to_sockaddr(from);
    if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&from), from_length) != 0) {
      return {};
    }
  }
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&address), length) != 0) {
    return {};
  }
  if (request && !send_request(fd.get())) {
    return {};
  }
  return fd;
}

probe_outcome await_outcome(int fd, const endpoint& to, target_protocol protocol, milliseconds timeout) {
  const auto deadline = clock::now() + timeout;
  while (true) {
    // TCP: the client is served once the listen queue is empty again (checked every ms).
    if (protocol == target_protocol::tcp && listen_queue_length(to) == 0) {
      return probe_outcome::served;
    }
    pollfd p{fd, POLLIN, 0};
    const int wait = protocol == target_protocol::tcp ? std::min(wait_ms(deadline), 1) : wait_ms(deadline);
    if (::poll(&p, 1, wait) > 0) {
      char byte = 0;
      const ssize_t n = ::recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
      if (n > 0) {
        return probe_outcome::served;  // any answer: the server accepted and replied
      }
      if (n == 0) {
        return probe_outcome::closed;
      }
      if (errno != EAGAIN && errno != EINTR) {
        return probe_outcome::reset;
      }
    }
    if (clock::now() >= deadline) {
      return probe_outcome::waiting;
    }
  }
}

}  // namespace transient::tool
