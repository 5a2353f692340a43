// The built-in drill's scenario 11, a fleet behind a real HAProxy (see drill_fleet.hpp): three
// `transient-fixture serve` instances, one haproxy the drill starts as a plain child with its
// own files in a temporary folder, client requests through it without pause, and one event
// per instance, one after another: A leaks descriptors until it stalls (and is started again
// at once, as systemd's Restart= would), B is held at its budget by idle connections, C is
// upgraded in place (SIGHUP). HAProxy's own view (its stats socket, polled every 25 ms) says
// when it stopped sending an instance requests and when it sent them again.
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include "drill_client.hpp"
#include "drill_fleet.hpp"
#include "drill_fleet_configs.hpp"
#include "drill_restart.hpp"
#include "drill_target.hpp"
#include "transient/sockets/listener.hpp"

namespace transient::tool {
namespace {

using clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// The interval of the documented configurations' checks (agent-inter, inter): the judged row's
// instances must be out of rotation within two of them.
constexpr milliseconds check_interval{1000};
constexpr double slow_seconds = 1.0;              // a client request slower than this is slow
constexpr milliseconds request_deadline{3000};    // and one without an answer by this is lost
constexpr milliseconds poll_interval{25};         // of HAProxy's stats socket
constexpr milliseconds start_bound{5000};         // an instance's or HAProxy's start
constexpr milliseconds stall_timeout{2000};       // A's --stall-timeout
constexpr milliseconds drain_timeout{1000};       // A's --drain-timeout: HAProxy's idle connections
                                                  // would hold a stalled A 10 s (the default)
constexpr int leak_per_connection = 2;            // A's --leak-per-connection
constexpr std::uint64_t instance_fd_limit = 128;  // room for HAProxy's connections before A's event
constexpr int budget = 16;                        // B's --max-connections

double seconds_between(clock::time_point from, clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

// ---- the load: short and keep-alive clients through HAProxy, each request timed ----

// The load's requests by how they ended.
struct fleet_counts {
  std::uint64_t answered = 0;  // a complete response below 500
  std::uint64_t errors = 0;    // refused, reset, unanswered, or a 5xx (HAProxy's own 502, 503, 504)
  std::uint64_t slow = 0;      // answered or not, ended more than slow_seconds after it began
  std::uint64_t not_sent = 0;  // the drill's own failures (no descriptor, no local port)
  fleet_counts operator-(const fleet_counts& o) const {
    return {answered - o.answered, errors - o.errors, slow - o.slow, not_sent - o.not_sent};
  }
};

// The load through HAProxy: request_load's threads, each request timed and counted. A thread
// pauses 1 ms after each request, a steady stream that leaves two busy cores to HAProxy and
// the instances, and 10 ms after a failed one, as the restart load does.
class fleet_load {
 public:
  explicit fleet_load(const endpoint& at)
      : load_(at, {2, 2, request_deadline, milliseconds(10), milliseconds(1)},
              [this](const request_outcome& r) { return !count(r); }) {}

  fleet_counts counts() const { return {answered_.load(), errors_.load(), slow_.load(), not_sent_.load()}; }
  // The longest a request took since the last call, in seconds.
  double take_slowest() { return static_cast<double>(slowest_us_.exchange(0)) / 1e6; }
  fleet_counts stop() {
    load_.stop();
    return counts();
  }

 private:
  // Counts one request; true if it was answered below 500.
  bool count(const request_outcome& r) {
    const auto took = std::chrono::duration_cast<std::chrono::microseconds>(r.took).count();
    slow_ += took > static_cast<std::int64_t>(slow_seconds * 1e6) ? 1 : 0;
    for (std::int64_t seen = slowest_us_.load(); took > seen && !slowest_us_.compare_exchange_weak(seen, took);) {
    }
    const bool ok = r.end == request_end::answered && r.status > 0 && r.status < 500;
    (ok ? answered_ : r.end == request_end::not_sent ? not_sent_ : errors_) += 1;
    return ok;
  }

  std::atomic<std::uint64_t> answered_{0};
  std::atomic<std::uint64_t> errors_{0};
  std::atomic<std::uint64_t> slow_{0};
  std::atomic<std::uint64_t> not_sent_{0};
  std::atomic<std::int64_t> slowest_us_{0};
  request_load load_;  // last: its threads stop before the counts go
};

// ---- HAProxy's view: its stats socket, polled ----

// What a stats socket at `path` answered to `command` ("" if nothing within 500 ms).
std::string ask_haproxy(const std::string& path, std::string_view command) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (path.size() >= sizeof address.sun_path) {
    return {};
  }
  path.copy(address.sun_path, path.size());
  const unique_fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd || ::connect(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0 ||
      ::send(fd.get(), command.data(), command.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(command.size())) {
    return {};
  }
  std::string out;
  std::array<char, 8192> buffer{};
  const auto deadline = clock::now() + milliseconds(500);
  while (clock::now() < deadline) {
    pollfd p{fd.get(), POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) {
      continue;
    }
    const ssize_t n = ::recv(fd.get(), buffer.data(), buffer.size(), 0);
    if (n <= 0) {
      return out;
    }
    out.append(buffer.data(), static_cast<std::size_t>(n));
  }
  return out;
}

// One poll of the three instances a, b, c (by their server names in the configurations).
struct fleet_view {
  clock::time_point at;
  std::array<haproxy_server_stat, 3> servers;
};

// The three instances' lines of one `show stat`, nullopt unless all three are in it.
std::optional<fleet_view> view_of(const std::vector<haproxy_server_stat>& stats) {
  fleet_view v{clock::now(), {}};
  int found = 0;
  for (const auto& s : stats) {
    if (s.server.size() == 1 && s.server[0] >= 'a' && s.server[0] <= 'c') {
      v.servers.at(static_cast<std::size_t>(s.server[0] - 'a')) = s;
      ++found;
    }
  }
  return found == 3 ? std::optional<fleet_view>(v) : std::nullopt;
}

// Polls HAProxy's stats socket every poll_interval on a thread of its own, keeping each view.
class stat_poller {
 public:
  explicit stat_poller(std::string socket) : socket_(std::move(socket)), thread_([this] { run(); }) {}
  ~stat_poller() {
    stop_.store(true);
    thread_.join();
  }
  stat_poller(const stat_poller&) = delete;
  stat_poller& operator=(const stat_poller&) = delete;

  std::vector<fleet_view> views() const {
    const std::lock_guard lock(mutex_);
    return views_;
  }

 private:
  void run() {
    while (!stop_.load()) {
      if (const auto v = view_of(parse_show_stat(ask_haproxy(socket_, "show stat\n")))) {
        const std::lock_guard lock(mutex_);
        views_.push_back(*v);
      }
      std::this_thread::sleep_for(poll_interval);
    }
  }

  std::string socket_;
  mutable std::mutex mutex_;
  std::vector<fleet_view> views_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// When instance `i` first left rotation at or after `from` (and before `to`); nullopt if it
// stayed in.
std::optional<clock::time_point> left_rotation(const std::vector<fleet_view>& views, std::size_t i,
                                               clock::time_point from, clock::time_point to) {
  for (const auto& v : views) {
    if (v.at >= from && v.at <= to && !v.servers.at(i).in_rotation()) {
      return v.at;
    }
  }
  return std::nullopt;
}

// When HAProxy first sent instance `i` a request after `from` (its stot grew past its value
// at `from`), waiting at most until `until`; nullopt if it did not.
std::optional<clock::time_point> sent_again(const stat_poller& poller, std::size_t i, clock::time_point from,
                                            clock::time_point until) {
  while (true) {
    const auto views = poller.views();
    std::optional<std::uint64_t> before;
    for (const auto& v : views) {
      if (v.at <= from) {
        before = v.servers.at(i).sessions;
      } else if (before && v.servers.at(i).sessions > *before) {
        return v.at;
      }
    }
    if (clock::now() >= until) {
      return std::nullopt;
    }
    std::this_thread::sleep_for(poll_interval);
  }
}

// The requests HAProxy retried (wretr + wredis over the three instances) between `from` and `to`.
std::uint64_t retried_between(const std::vector<fleet_view>& views, clock::time_point from, clock::time_point to) {
  const auto total_at = [&](clock::time_point t) {
    std::uint64_t n = 0;
    for (const auto& v : views) {
      if (v.at <= t) {
        n = v.servers[0].retried + v.servers[1].retried + v.servers[2].retried;
      }
    }
    return n;
  };
  return total_at(to) - total_at(from);
}

// ---- the fleet: three instances and HAProxy, files in a temporary folder ----

// A temporary folder, removed with everything in it.
class temp_folder {
 public:
  temp_folder() {
    std::string name = (std::filesystem::temp_directory_path() / "transient-fleet-XXXXXX").string();
    if (::mkdtemp(name.data()) == nullptr) {
      throw std::system_error(errno, std::generic_category(), "drill: mkdtemp");
    }
    path_ = name;
  }
  ~temp_folder() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  temp_folder(const temp_folder&) = delete;
  temp_folder& operator=(const temp_folder&) = delete;
  [[nodiscard]] const std::filesystem::path& path() const noexcept { return path_; }

 private:
  std::filesystem::path path_;
};

// The last `n` characters of `text` (all of it if shorter).
std::string last_chars(const std::string& text, std::size_t n) {
  return text.size() <= n ? text : "..." + text.substr(text.size() - n);
}

// A child's stderr as one line for a table cell: its lines joined by "; ".
std::string one_line(std::string text) {
  while (!text.empty() && text.back() == '\n') {
    text.pop_back();
  }
  for (std::size_t at = text.find('\n'); at != std::string::npos; at = text.find('\n', at)) {
    text.replace(at, 1, "; ");
  }
  return text;
}

// One instance: its ports, its own options, and the process serving it now.
struct instance {
  std::string name;                // "a", "b", "c": its server's name in the configurations
  std::uint16_t port = 0;          // the service port
  std::uint16_t metrics_port = 0;  // --metrics
  std::uint16_t agent_port = 0;    // --agent
  std::vector<std::string> extra;  // its event's options
  std::unique_ptr<serve_child> child;

  [[nodiscard]] endpoint at() const { return endpoint::loopback_v4(port); }
  [[nodiscard]] endpoint metrics() const { return endpoint::loopback_v4(metrics_port); }
};

// Starts (or starts again) `in` on its ports: the fixture's serve in a process group of its
// own, which an upgraded successor joins. False if it did not listen within start_bound.
bool start_instance(instance& in) {
  child_launch launch;
  launch.program = fixture_path();
  launch.argv = {"transient-fixture", "serve",
                 "--listen",          in.at().to_string(),
                 "--metrics",         in.metrics().to_string(),
                 "--agent",           endpoint::loopback_v4(in.agent_port).to_string()};
  launch.argv.insert(launch.argv.end(), in.extra.begin(), in.extra.end());
  append_serve_engine(launch.argv);
  launch.fd_limit = instance_fd_limit;
  in.child.reset();
  in.child = std::make_unique<serve_child>(launch);
  return in.child->wait_listening(start_bound).has_value();
}

// Ten distinct free loopback ports (HAProxy's and each instance's three); empty if the drill
// found fewer.
std::vector<std::uint16_t> free_ports() {
  constexpr std::size_t wanted = 10;
  std::vector<std::uint16_t> ports;
  for (int tries = 0; tries < 50 && ports.size() < wanted; ++tries) {
    const std::uint16_t p = pick_free_port();
    if (p != 0 && std::find(ports.begin(), ports.end(), p) == ports.end()) {
      ports.push_back(p);
    }
  }
  return ports.size() == wanted ? ports : std::vector<std::uint16_t>{};
}

// The instrumentation the drill adds in a second file, so that the configuration it runs is
// the documented one unchanged: a stats socket in the temporary folder, and a maxconn whose
// descriptors fit the RLIMIT_NOFILE of 1024 the drill gives HAProxy (without one, HAProxy
// derives a larger need from its defaults and refuses to start).
constexpr std::string_view drill_cfg =
    "global\n"
    "    maxconn 200\n"
    "    stats socket @SOCKET@ level admin\n";

void write_file(const std::filesystem::path& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
  if (!out.flush()) {
    throw std::runtime_error("drill: cannot write " + path.string());
  }
}

// The whole fleet of one row: instances, HAProxy, its poller.
struct fleet {
  temp_folder folder;
  std::array<instance, 3> instances;
  std::uint16_t front_port = 0;
  std::unique_ptr<serve_child> haproxy;
  std::unique_ptr<stat_poller> poller;
  std::string problem;  // why it did not start

  [[nodiscard]] std::string socket() const { return (folder.path() / "haproxy.sock").string(); }
};

// The configuration `cfg` filled with the fleet's ports.
std::string fleet_config(std::string_view cfg, const fleet& f) {
  std::map<std::string, std::string> values{{"FRONT_PORT", std::to_string(f.front_port)}};
  for (const auto& in : f.instances) {
    std::string upper = in.name;
    upper[0] = static_cast<char>(upper[0] - 'a' + 'A');
    values[upper + "_PORT"] = std::to_string(in.port);
    values[upper + "_METRICS_PORT"] = std::to_string(in.metrics_port);
    values[upper + "_AGENT_PORT"] = std::to_string(in.agent_port);
  }
  return fill_placeholders(cfg, values);
}

// Starts HAProxy with `cfg` and the drill's file; false (f.problem set) unless its stats
// socket shows the three instances in rotation within start_bound.
bool start_haproxy(fleet& f, std::string_view cfg) {
  const auto documented = f.folder.path() / "haproxy.cfg";
  const auto drill = f.folder.path() / "drill.cfg";
  write_file(documented, fleet_config(cfg, f));
  write_file(drill, fill_placeholders(drill_cfg, {{"SOCKET", f.socket()}}));
  child_launch launch{
      std::string(haproxy_path), {"haproxy", "-db", "-f", documented.string(), "-f", drill.string()}, 1024};
  f.haproxy = std::make_unique<serve_child>(launch);
  const auto deadline = clock::now() + start_bound;
  while (clock::now() < deadline) {
    const auto v = view_of(parse_show_stat(ask_haproxy(f.socket(), "show stat\n")));
    if (v && std::all_of(v->servers.begin(), v->servers.end(), [](const auto& s) { return s.in_rotation(); })) {
      return true;
    }
    std::this_thread::sleep_for(poll_interval);
  }
  f.problem = "HAProxy did not show the three instances in rotation within 5 s: " + f.haproxy->stderr_text();
  return false;
}

// Starts the instances and HAProxy with `cfg`; f.problem says what did not start.
void start_fleet(fleet& f, std::string_view cfg) {
  const auto ports = free_ports();
  if (ports.empty()) {
    f.problem = "no ten free loopback ports";
    return;
  }
  f.front_port = ports[0];
  const std::array<std::vector<std::string>, 3> extra{{
      {"--stall-timeout", std::to_string(stall_timeout.count()) + "ms", "--leak-per-connection",
       std::to_string(leak_per_connection), "--drain-timeout", std::to_string(drain_timeout.count()) + "ms"},
      {"--max-connections", std::to_string(budget)},
      {},
  }};
  for (std::size_t i = 0; i < 3; ++i) {
    f.instances.at(i) = {std::string(1, static_cast<char>('a' + i)),
                         ports[1 + 3 * i],
                         ports[2 + 3 * i],
                         ports[3 + 3 * i],
                         extra.at(i),
                         nullptr};
    if (!start_instance(f.instances.at(i))) {
      f.problem =
          "instance " + f.instances.at(i).name + " did not start: " + one_line(f.instances.at(i).child->stderr_text());
      return;
    }
  }
  if (start_haproxy(f, cfg)) {
    f.poller = std::make_unique<stat_poller>(f.socket());
  }
}

// Ends HAProxy and the instances (each whole process group), reaping them.
void stop_fleet(fleet& f) {
  f.poller.reset();
  if (f.haproxy) {
    f.haproxy->send(SIGTERM);
    f.haproxy->wait_exit(milliseconds(2000));
    f.haproxy.reset();  // SIGKILL if it still runs
  }
  for (auto& in : f.instances) {
    if (in.child) {
      in.child->stop_group(milliseconds(1000));
      in.child.reset();
    }
  }
}

// ---- the events ----

// What one event showed.
struct event_record {
  std::string problem;              // why the event did not happen as planned ("": it did)
  fleet_counts counts;              // the load's requests during the event
  double slowest_s = 0;             // the longest one of them took
  std::uint64_t retried = 0;        // requests HAProxy retried meanwhile (wretr + wredis)
  std::optional<double> stopped_s;  // from the onset until HAProxy took it out of rotation
  std::optional<double> back_s;     // from "could serve again" until HAProxy sent it requests
  double back_bound_s = 0;          // how long the drill waited for that
};

// How long the drill waits for HAProxy to send an instance requests again: a plain check's
// default (inter 2s, rise 2) needs up to two intervals and a bit.
milliseconds back_bound(const drill_settings& s) { return milliseconds(s.quick ? 4500 : 5000); }

// The onset and "could serve again" moments of an event, and its stopped/back figures.
void measure(event_record& e, const fleet& f, std::size_t i, clock::time_point onset, clock::time_point ready,
             const drill_settings& s) {
  const auto until = std::max(std::min(ready + back_bound(s), s.deadline), ready + milliseconds(1000));
  const auto back = sent_again(*f.poller, i, ready, until);
  const auto views = f.poller->views();
  if (const auto left = left_rotation(views, i, onset, back.value_or(until))) {
    e.stopped_s = seconds_between(onset, *left);
    e.back_s = back ? std::optional<double>(seconds_between(ready, *back)) : std::nullopt;
  }
  e.back_bound_s = seconds_between(ready, until);
}

// When `child` first logged a failed accept ("accept degraded"); nullopt if it did not.
std::optional<clock::time_point> degraded_line(const serve_child& child) {
  for (const auto& line : child.stderr_timeline()) {
    if (line.text.find("accept degraded") != std::string::npos) {
      return line.at;
    }
  }
  return std::nullopt;
}

// What became of the drill's direct connections to A, for a leak that did not exhaust it.
struct leak_tally {
  int served = 0, closed = 0, waiting = 0, not_connected = 0;
  [[nodiscard]] std::string text() const {
    return std::to_string(served) + " answered, " + std::to_string(closed) + " closed unanswered, " +
           std::to_string(waiting) + " left waiting, " + std::to_string(not_connected) + " not connected";
  }
};

// A: direct connections, each leaking descriptors, until one made after A logged a failed
// accept waits unaccepted: it keeps A's accepts failing until A stalls. Then A exits, and the
// drill starts it again at once on the same ports. Every accepted connection leaks, so the
// drill goes on past a connection closed unanswered or a wait that only looked blocked.
event_record leak_event(fleet& f, const drill_settings& s) {
  event_record e;
  instance& a = f.instances[0];
  unique_fd pending;
  leak_tally tally;
  bool exhausted = false;
  for (int i = 0; i < 200 && !(exhausted && pending) && clock::now() < s.deadline; ++i) {
    exhausted = degraded_line(*a.child).has_value();  // before this connection
    pending.reset();
    unique_fd fd = connect_and_request(a.at());
    if (!fd) {
      ++tally.not_connected;
      continue;
    }
    switch (drill_detail::await_answer(fd.get(), *a.child, a.at(), instance_fd_limit, milliseconds(3000))) {
      case drill_detail::answer::served: ++tally.served; break;
      case drill_detail::answer::closed: ++tally.closed; break;
      case drill_detail::answer::blocked:
      case drill_detail::answer::timeout:
        ++tally.waiting;
        pending = std::move(fd);
        break;
    }
  }
  a.child->wait_stderr("accept degraded", milliseconds(3000));
  const auto onset = degraded_line(*a.child);
  if (!onset) {
    e.problem = "A's leak did not exhaust its descriptors (" + tally.text() +
                "); A's last lines: " + one_line(last_chars(a.child->stderr_text(), 600));
    return e;
  }
  if (!a.child->wait_exit(stall_timeout + drain_timeout + milliseconds(4000))) {
    e.problem = "A did not exit within its stall and drain timeouts + 4 s; its last lines: " +
                one_line(last_chars(a.child->stderr_text(), 600));
    return e;
  }
  pending.reset();
  if (!start_instance(a)) {
    e.problem = "A did not start again: " + one_line(a.child->stderr_text());
    return e;
  }
  measure(e, f, 0, *onset, clock::now(), s);
  return e;
}

// B: as many idle connections opened directly as its budget (HAProxy's own connections to it
// take places too), held until its /readyz says 503 (the budget is full) and a while after,
// then closed.
event_record full_event(fleet& f, const drill_settings& s) {
  event_record e;
  instance& b = f.instances[1];
  std::vector<unique_fd> idle;
  for (int i = 0; i < budget; ++i) {
    idle.push_back(connect_and_request(b.at()));
  }
  std::optional<clock::time_point> onset;
  const auto deadline = clock::now() + milliseconds(3000);
  while (!onset && clock::now() < deadline) {
    if (get_status(b.metrics(), "/readyz", milliseconds(500)) == 503) {
      onset = clock::now();
    }
    std::this_thread::sleep_for(milliseconds(onset ? 0 : 5));
  }
  if (!onset) {
    e.problem = "B's /readyz did not answer 503 within 3 s of " + std::to_string(budget) + " idle connections";
    return e;
  }
  std::this_thread::sleep_for(milliseconds(s.quick ? 2500 : 3000));  // the hold: what clients see meanwhile
  idle.clear();
  measure(e, f, 1, *onset, clock::now(), s);
  return e;
}

// C: SIGHUP; the old process hands its listeners to a successor and exits (the drill, a
// subreaper, reaps each generation).
event_record upgrade_event(fleet& f, const drill_settings& s, pid_t& serving) {
  event_record e;
  instance& c = f.instances[2];
  const auto onset = clock::now();
  ::kill(serving, SIGHUP);
  const auto deadline = onset + milliseconds(10000);
  std::optional<pid_t> successor;
  bool exited = false;
  while (clock::now() < deadline && !(exited && successor)) {
    exited = exited || (serving == c.child->pid() ? c.child->reap(milliseconds(0)).has_value()
                                                  : ::waitpid(serving, nullptr, WNOHANG) == serving);
    successor = successor ? successor : other_listener(c.port, serving);
    std::this_thread::sleep_for(milliseconds(5));
  }
  if (!exited || !successor) {
    e.problem = !successor ? "C's upgrade started no successor" : "C's old process did not exit";
    return e;
  }
  serving = *successor;
  measure(e, f, 2, onset, clock::now(), s);
  return e;
}

// ---- one row: a configuration through the three events ----

struct row_record {
  std::string problem;                 // the fleet did not start, or the drill failed
  std::array<event_record, 3> events;  // A, B, C
  fleet_counts total;                  // the load's requests over the whole row
};

// Runs the three events, each while the load runs, its counts the difference across it.
void run_events(fleet& f, const drill_settings& s, row_record& rec, fleet_load& load) {
  pid_t serving_c = f.instances[2].child->pid();
  const std::array<const char*, 3> what{"A leaks until it stalls", "B held at its budget", "C upgraded (SIGHUP)"};
  for (std::size_t i = 0; i < 3; ++i) {
    if (clock::now() >= s.deadline) {
      rec.events.at(i).problem = std::string("the row's time ran out before this event: ") + what.at(i);
      return;
    }
    note(s, what.at(i));
    const fleet_counts before = load.counts();
    const auto began = clock::now();
    load.take_slowest();
    rec.events.at(i) = i == 0 ? leak_event(f, s) : i == 1 ? full_event(f, s) : upgrade_event(f, s, serving_c);
    rec.events.at(i).counts = load.counts() - before;
    rec.events.at(i).slowest_s = load.take_slowest();
    rec.events.at(i).retried = retried_between(f.poller->views(), began, clock::now());
    if (!rec.events.at(i).problem.empty()) {
      return;
    }
  }
}

// Lets the load run until it has 50 answers (2 s at most) before the first event.
void warm_up(const fleet_load& load) {
  const auto deadline = clock::now() + milliseconds(2000);
  while (load.counts().answered < 50 && clock::now() < deadline) {
    std::this_thread::sleep_for(milliseconds(5));
  }
}

row_record run_row(std::string_view cfg, const drill_settings& s) {
  const subreaper reaper;  // C's successors become the drill's children, reaped with its group
  row_record rec;
  fleet f;
  start_fleet(f, cfg);
  if (!f.problem.empty()) {
    rec.problem = f.problem;
    stop_fleet(f);
    return rec;
  }
  {
    fleet_load load(endpoint::loopback_v4(f.front_port));
    warm_up(load);
    run_events(f, s, rec, load);
    rec.total = load.stop();
  }
  if (f.haproxy->reap(milliseconds(0))) {  // its stats stopped: the row's figures are void
    rec.problem = "HAProxy exited during the row: " + f.haproxy->stderr_text();
  }
  stop_fleet(f);
  return rec;
}

// ---- the report ----

std::string seconds_text(double s) {
  char buffer[32];
  (void)std::snprintf(buffer, sizeof buffer, "%.2f s", s);
  return buffer;
}

// "out of rotation 0.81 s after ONSET, back 0.95 s after READY", or what did not happen.
std::string rotation_text(const event_record& e, const char* onset, const char* ready) {
  if (!e.stopped_s) {
    return "never out of rotation";
  }
  return "out of rotation " + seconds_text(*e.stopped_s) + " after " + onset + ", " +
         (e.back_s ? "sent requests again " + seconds_text(*e.back_s) + " after " + ready
                   : "not sent requests again within " + seconds_text(e.back_bound_s) + " of " + ready);
}

std::string event_text(const event_record& e, const char* name, const char* onset, const char* ready) {
  if (!e.problem.empty()) {
    return std::string(name) + ": " + e.problem;
  }
  return std::string(name) + ": " + std::to_string(e.counts.errors) + " errors, " + std::to_string(e.counts.slow) +
         " slower than 1 s (slowest " + seconds_text(e.slowest_s) + "), " + std::to_string(e.retried) +
         " retried by HAProxy, " + rotation_text(e, onset, ready);
}

constexpr std::array<const char*, 3> event_names{"A leak", "B full", "C upgrade"};

std::string row_text(const row_record& rec) {
  const std::array<std::pair<const char*, const char*>, 3> moments{{{"its first failed accept", "its restart"},
                                                                    {"its budget filled", "the release"},
                                                                    {"the signal", "the handover"}}};
  std::string out;
  for (std::size_t i = 0; i < 3; ++i) {
    out += (i == 0 ? "" : "; ") +
           event_text(rec.events.at(i), event_names.at(i), moments.at(i).first, moments.at(i).second);
  }
  return out + "; over the run " + std::to_string(rec.total.answered) + " answered, " +
         std::to_string(rec.total.errors) + " errors, " + std::to_string(rec.total.slow) + " slower than 1 s";
}

std::vector<figure> row_figures(const row_record& rec, const std::string& prefix) {
  const auto n = [](std::uint64_t v) { return static_cast<double>(v); };
  std::vector<figure> out{{prefix + "answered", n(rec.total.answered)},
                          {prefix + "errors", n(rec.total.errors)},
                          {prefix + "slow", n(rec.total.slow)},
                          {prefix + "not_sent", n(rec.total.not_sent)}};
  const std::array<const char*, 3> keys{"a_", "b_", "c_"};
  for (std::size_t i = 0; i < 3; ++i) {
    const event_record& e = rec.events.at(i);
    const std::string p = prefix + keys.at(i);
    out.push_back({p + "errors", n(e.counts.errors)});
    out.push_back({p + "slow", n(e.counts.slow)});
    out.push_back({p + "slowest_s", e.slowest_s});
    out.push_back({p + "retried", n(e.retried)});
    out.push_back({p + "stopped_s", e.stopped_s.value_or(NAN)});
    out.push_back({p + "back_s", e.back_s.value_or(NAN)});
  }
  return out;
}

// The row's first problem: the drill's, or an event's that did not happen.
std::string row_problem(const row_record& rec) {
  if (!rec.problem.empty()) {
    return rec.problem;
  }
  for (std::size_t i = 0; i < 3; ++i) {
    if (!rec.events.at(i).problem.empty()) {
      return std::string(event_names.at(i)) + ": " + rec.events.at(i).problem;
    }
  }
  return {};
}

// Why the documented configuration failed its claims; empty when it passed.
std::string judged_problem(const row_record& rec) {
  const double bound = 2 * std::chrono::duration<double>(check_interval).count();
  const auto late = [&](const event_record& e) { return !e.stopped_s || *e.stopped_s > bound; };
  const std::string problem = row_problem(rec);
  return !problem.empty()       ? problem
         : rec.total.errors > 0 ? std::to_string(rec.total.errors) + " client errors: " + row_text(rec)
         : late(rec.events[0]) || late(rec.events[1])
             ? "an instance stayed in rotation longer than 2 check intervals (2 s): " + row_text(rec)
             : "";
}

scenario_result documented_row(const row_record& rec) {
  scenario_result r{"fleet: documented checks", false, "", row_figures(rec, "documented_"), {}, {}, {}};
  const std::string problem = judged_problem(rec);
  r.passed = problem.empty();
  r.detail = r.passed ? row_text(rec) : problem;
  if (!r.passed) {
    r.fix =
        "run the drill again on a quieter machine; if it fails again, the configuration in "
        "examples/fleet/haproxy.cfg.in does not keep clients from a failing instance: report it with the "
        "output of 'transient drill --scenarios 11 --json'";
  }
  return r;
}

// A row shown beside the judged one: `name`, its figures prefixed with `prefix`.
scenario_result shown_row(const row_record& rec, const std::string& name, const std::string& prefix) {
  scenario_result r{name, false, "", row_figures(rec, prefix), {}, {}, {}};
  const std::string problem = row_problem(rec);
  r.passed = problem.empty();
  r.verdict = r.passed ? "SHOWN" : "";
  r.detail = r.passed ? row_text(rec) + " (shown, not judged)" : problem;
  return r;
}

std::vector<scenario_result> no_haproxy() {
  scenario_result r{"fleet: documented checks",
                    false,
                    "no HAProxy at " + std::string(haproxy_path) + ": the fleet scenario runs a real one",
                    {},
                    {},
                    {},
                    {}};
  r.fix =
      "install HAProxy (Debian: apt-get install haproxy; scripts/install-deps.sh installs it), or leave "
      "scenario 11 out (--scenarios 1,2,...,10)";
  return {r};
}

}  // namespace

std::vector<scenario_result> run_fleet(const drill_settings& s) {
  if (::access(std::string(haproxy_path).c_str(), X_OK) != 0) {
    return no_haproxy();
  }
  (void)fixture_path();  // throws fixture_missing before anything starts
  // The three rows share the scenario's time: each its third of 50 s from now, the rest of the
  // bound for the stops. An event that would start after its row's time is not run.
  const auto start = clock::now();
  const auto row_settings = [&](int row) {
    drill_settings r = s;
    r.deadline = start + std::chrono::seconds(50) * (row + 1) / 3;
    return r;
  };
  note(s, "agent checks (examples/fleet/haproxy.cfg.in): three instances behind HAProxy");
  const row_record documented = run_row(fleet_haproxy_cfg, row_settings(0));
  note(s, "/readyz checks (examples/fleet/haproxy-httpchk.cfg.in): the same events");
  const row_record httpchk = run_row(fleet_haproxy_httpchk_cfg, row_settings(1));
  note(s, "plain TCP check: the same events");
  const row_record tcp = run_row(fleet_haproxy_tcp_cfg, row_settings(2));
  return {documented_row(documented), shown_row(httpchk, "fleet: /readyz check", "httpchk_"),
          shown_row(tcp, "fleet: plain TCP check", "tcp_")};
}

}  // namespace transient::tool
