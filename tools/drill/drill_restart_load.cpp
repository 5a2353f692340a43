// The restart scenario's load and its counting (see drill_restart.hpp): every request ends in
// exactly one of answered, refused, reset, unanswered (or not sent, the drill's own failure).
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "drill_restart.hpp"

namespace transient::tool {
namespace {

using clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr std::string_view request_text = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";

int wait_ms(clock::time_point deadline) {
  const auto left = std::chrono::ceil<milliseconds>(deadline - clock::now()).count();
  return static_cast<int>(std::clamp<std::int64_t>(left, 0, 60000));
}

// What an errno of a connection means for its request; anything but a reset is unanswered
// once connected (a timeout, or an error the server caused some other way).
request_end end_of_errno(int error) {
  return error == ECONNRESET || error == EPIPE ? request_end::reset : request_end::unanswered;
}

// What a failed connect means: nothing listened, a reset, a SYN that went unanswered until
// the deadline, or the drill's own failure (no local port or descriptor).
request_end end_of_connect_errno(int error) {
  switch (error) {
    case ECONNREFUSED: return request_end::refused;
    case ECONNRESET: return request_end::reset;
    case ETIMEDOUT: return request_end::unanswered;
    default: return request_end::not_sent;
  }
}

// A non-blocking connect to `at` completed by `deadline` into `out`; nullopt once connected,
// else how the request ended.
std::optional<request_end> connect_by(const endpoint& at, clock::time_point deadline, unique_fd& out) {
  sockaddr_storage address{};
  const socklen_t length = at.to_sockaddr(address);
  unique_fd fd(::socket(address.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) {
    return request_end::not_sent;
  }
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&address), length) != 0) {
    if (errno != EINPROGRESS) {
      return end_of_connect_errno(errno);
    }
    pollfd p{fd.get(), POLLOUT, 0};
    if (::poll(&p, 1, wait_ms(deadline)) <= 0) {
      return request_end::unanswered;
    }
    int error = 0;
    socklen_t size = sizeof error;
    ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &error, &size);
    if (error != 0) {
      return end_of_connect_errno(error);
    }
  }
  out = std::move(fd);
  return std::nullopt;
}

bool send_all(int fd, std::string_view text, request_end& end) {
  while (!text.empty()) {
    const ssize_t n = ::send(fd, text.data(), text.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EAGAIN) {
      pollfd p{fd, POLLOUT, 0};
      ::poll(&p, 1, 10);
      continue;
    }
    if (n < 0) {
      end = end_of_errno(errno);
      return false;
    }
    text.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

// The value of header `name` (lower case, with its colon) in `head`, lower-cased; "" if absent.
std::string header_value(const std::string& head, std::string_view name) {
  std::string lower = head;
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  const std::size_t at = lower.find(std::string("\r\n") + std::string(name));
  if (at == std::string::npos) {
    return {};
  }
  const std::size_t from = lower.find_first_not_of(' ', at + 2 + name.size());
  return from == std::string::npos ? std::string() : lower.substr(from, lower.find("\r\n", from) - from);
}

// A response read so far: complete once its head and Content-Length bytes of body arrived.
struct response {
  std::string bytes;
  bool complete = false;
  bool close = false;  // Connection: close
  int status = 0;      // the status line's code

  void add(const char* data, std::size_t n) {
    bytes.append(data, n);
    const std::size_t end = bytes.find("\r\n\r\n");
    if (end == std::string::npos || bytes.rfind("HTTP/1.", 0) != 0) {
      return;
    }
    const std::string head = bytes.substr(0, end + 2);
    const std::string length = header_value(head, "content-length:");
    close = header_value(head, "connection:") == "close";
    status = std::atoi(head.c_str() + std::string_view("HTTP/1.1 ").size());
    complete = !length.empty() && bytes.size() >= end + 4 + std::strtoull(length.c_str(), nullptr, 10);
  }
};

// Reads one response on `fd` until `deadline`: answered once complete (its status code in
// `status`); EOF before it is unanswered, an error a reset or unanswered (end_of_errno).
request_end read_answer(int fd, clock::time_point deadline, bool& close, int& status) {
  response r;
  std::array<char, 4096> buffer{};
  while (!r.complete) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, wait_ms(deadline)) <= 0) {
      return request_end::unanswered;
    }
    const ssize_t n = ::recv(fd, buffer.data(), buffer.size(), 0);
    if (n == 0) {
      return request_end::unanswered;
    }
    if (n < 0 && errno != EAGAIN && errno != EINTR) {
      return end_of_errno(errno);
    }
    if (n > 0) {
      r.add(buffer.data(), static_cast<std::size_t>(n));
    }
  }
  close = r.close;
  status = r.status;
  return request_end::answered;
}

// Sends the request on `fd` and reads its answer by `deadline`.
request_end request_on(int fd, clock::time_point deadline, bool& close, int& status) {
  request_end end = request_end::answered;
  if (!send_all(fd, request_text, end)) {
    return end;
  }
  return read_answer(fd, deadline, close, status);
}

// True if the server closed (or reset) the idle connection `fd`: it may, after a complete answer.
bool closed_while_idle(int fd) {
  pollfd p{fd, POLLIN | POLLRDHUP, 0};
  return ::poll(&p, 1, 0) > 0;
}

// The status code of an answer, for a caller that asks for it (`status` may be null).
void report_status(int* status, int code) {
  if (status != nullptr) {
    *status = code;
  }
}

}  // namespace

request_end short_request(const endpoint& at, milliseconds deadline, int* status) {
  report_status(status, 0);
  const auto until = clock::now() + deadline;
  unique_fd fd;
  if (const auto failed = connect_by(at, until, fd)) {
    return *failed;
  }
  bool close = false;
  int code = 0;
  const request_end end = request_on(fd.get(), until, close, code);
  report_status(status, code);
  return end;
}

request_end keepalive_client::next(milliseconds deadline, int* status) {
  report_status(status, 0);
  const auto until = clock::now() + deadline;
  if (fd_ && closed_while_idle(fd_.get())) {
    fd_.reset();
  }
  if (!fd_) {
    if (const auto failed = connect_by(at_, until, fd_)) {
      return *failed;
    }
  }
  bool close = false;
  int code = 0;
  const request_end end = request_on(fd_.get(), until, close, code);
  if (end != request_end::answered || close) {
    fd_.reset();
  }
  report_status(status, code);
  return end;
}

request_load::request_load(const endpoint& at, const load_shape& shape, request_observer observe)
    : at_(at), shape_(shape), observe_(std::move(observe)) {
  for (int i = 0; i < shape.short_threads; ++i) {
    threads_.emplace_back([this] { run_short(); });
  }
  for (int i = 0; i < shape.keepalive_threads; ++i) {
    threads_.emplace_back([this] { run_keepalive(); });
  }
}

request_load::~request_load() { stop(); }

void request_load::stop() {
  stop_.store(true);
  for (auto& t : threads_) {
    if (t.joinable()) {
      t.join();
    }
  }
}

void request_load::observe(request_end end, int status, clock::time_point began) {
  const bool failed = observe_({end, status, clock::now() - began});
  std::this_thread::sleep_for(failed ? shape_.pause_after_loss : shape_.pause_after_answer);
}

void request_load::run_short() {
  while (!stop_.load()) {
    const auto began = clock::now();
    int status = 0;
    const request_end end = short_request(at_, shape_.deadline, &status);
    observe(end, status, began);
  }
}

void request_load::run_keepalive() {
  keepalive_client client(at_);
  while (!stop_.load()) {
    const auto began = clock::now();
    int status = 0;
    const request_end end = client.next(shape_.deadline, &status);
    observe(end, status, began);
  }
}

restart_load::restart_load(const endpoint& at, const load_shape& shape)
    : load_(at, shape, [this](const request_outcome& r) {
        counts_.at(static_cast<std::size_t>(r.end)).fetch_add(1);
        return r.end != request_end::answered;
      }) {}

request_counts restart_load::counts() const noexcept {
  const auto at = [this](request_end e) { return counts_.at(static_cast<std::size_t>(e)).load(); };
  return {at(request_end::answered), at(request_end::refused), at(request_end::reset), at(request_end::unanswered),
          at(request_end::not_sent)};
}

request_counts restart_load::stop() {
  load_.stop();
  return counts();
}

bool run_between_restarts(const restart_load& load) {
  constexpr milliseconds at_least{100};
  constexpr milliseconds at_most{2000};
  constexpr std::uint64_t answers = 50;
  const auto start = clock::now();
  const std::uint64_t target = load.counts().answered + answers;
  while (clock::now() - start < at_least || load.counts().answered < target) {
    if (clock::now() - start >= at_most) {
      return false;
    }
    std::this_thread::sleep_for(milliseconds(1));
  }
  return true;
}

int open_descriptors(pid_t pid) {
  DIR* dir = ::opendir(("/proc/" + std::to_string(pid) + "/fd").c_str());
  if (dir == nullptr) {
    return -1;
  }
  int count = 0;
  while (const dirent* entry = ::readdir(dir)) {
    count += entry->d_name[0] != '.' ? 1 : 0;
  }
  ::closedir(dir);
  return count;
}

std::optional<handover_line> parse_handover_line(const std::string& line) {
  constexpr std::string_view head = "upgrade: first accept ";
  constexpr std::string_view middle = " ms after the signal to PID ";
  const std::size_t at = line.find(head);
  const std::size_t mid = line.find(middle);
  if (at == std::string::npos || mid == std::string::npos || mid < at) {
    return std::nullopt;
  }
  char* end = nullptr;
  const double ms = std::strtod(line.c_str() + at + head.size(), &end);
  const long old = std::strtol(line.c_str() + mid + middle.size(), nullptr, 10);
  if (end != line.c_str() + mid || old <= 0) {
    return std::nullopt;
  }
  return handover_line{ms, static_cast<pid_t>(old)};
}

std::optional<pid_t> parse_took_over_line(const std::string& line) {
  constexpr std::string_view head = "upgrade: PID ";
  const std::size_t at = line.find(head);
  if (at == std::string::npos || line.find(" took over", at) == std::string::npos) {
    return std::nullopt;
  }
  const long pid = std::strtol(line.c_str() + at + head.size(), nullptr, 10);
  return pid > 0 ? std::optional<pid_t>(static_cast<pid_t>(pid)) : std::nullopt;
}

}  // namespace transient::tool
