// The steps the drill's scenarios share (see drill_steps.hpp).
#include "drill_steps.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/socket.h>

#include <algorithm>
#include <thread>

#include "drill_client.hpp"

namespace transient::tool {
namespace {

using clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// No answer this long, and no sign either way (not_accepting): the target no longer accepts.
constexpr milliseconds answer_bound{2000};
constexpr milliseconds connect_bound{1000};
// Each client of a burst keeps its connection this long after its answer.
constexpr milliseconds hold{20};

// What the target does with the client on `fd`: the outcome, or waiting as soon as the target
// is seen not accepting it, or after answer_bound.
probe_outcome fill_outcome(const target_settings& s, const exhausted_target& x, int fd) {
  const auto& at = x.server->at();
  const auto deadline = std::min(clock::now() + answer_bound, s.deadline);
  while (clock::now() < deadline) {
    const probe_outcome o = await_outcome(fd, at, s.protocol, milliseconds(5));
    if (o != probe_outcome::waiting) {
      return o;
    }
    if (drill_detail::not_accepting(*x.server->process(), at, s.fd_limit)) {
      return probe_outcome::waiting;
    }
  }
  return probe_outcome::waiting;
}

// The held connections that the target has closed since it answered them.
std::size_t closed_by_target(const std::vector<unique_fd>& held) {
  return static_cast<std::size_t>(std::count_if(
      held.begin(), held.end(), [](const unique_fd& fd) { return wait_closed(fd.get(), milliseconds(0)); }));
}

// Why the table could not be filled: the target closed what it answered, or the limit did not bind.
void not_filled(const target_settings& s, exhausted_target& x, std::size_t answered) {
  const std::size_t closed = closed_by_target(x.held);
  const std::string peak = x.peak_descriptors < 0 ? "?" : std::to_string(x.peak_descriptors);
  if (closed * 2 >= x.held.size() && !x.held.empty()) {
    x.verdict = "CANNOT FILL";
    x.problem = "the server closed " + std::to_string(closed) + " of the " + std::to_string(x.held.size()) +
                " connections it answered (it does not keep connections: at most " + peak +
                " descriptors open at once), so the drill could not fill its descriptor table (RLIMIT_NOFILE " +
                std::to_string(s.fd_limit) + ")";
    x.fix = s.protocol == target_protocol::http
                ? "to drill a server that closes each connection after answering, run the drill with --protocol tcp: "
                  "it then holds connections that send no request, which the server keeps open while it waits"
                : "the server closes connections that send nothing: the drill cannot hold its descriptors";
    return;
  }
  x.verdict = clock::now() >= s.deadline ? "CANNOT FILL" : "NO LIMIT";
  x.problem = clock::now() >= s.deadline
                  ? "the scenario's time ran out after " + std::to_string(answered) +
                        " answered connections, before the server's descriptors ran out (at most " + peak + " open)"
                  : "still serving after " + std::to_string(answered) + " held connections (at most " + peak +
                        " descriptors open in one process): RLIMIT_NOFILE " + std::to_string(s.fd_limit) +
                        " did not bind";
}

// A client of a burst.
struct burst_client {
  unique_fd fd;
  clock::time_point since;
  std::optional<clock::time_point> served;
  bool done = false;
};

// One look at the burst's clients: a TCP client not reset or closed for `hold` counts as
// served; a served one closes after `hold`, a lost one is done. Adds the clients still
// awaiting an answer to `fds` and `which`.
void sweep_burst(const target_settings& s, std::vector<burst_client>& all, burst_result& r, std::size_t& finished,
                 std::vector<pollfd>& fds, std::vector<burst_client*>& which) {
  for (auto& c : all) {
    if (c.done) {
      continue;
    }
    if (c.fd && !c.served && s.protocol == target_protocol::tcp && clock::now() - c.since >= hold) {
      c.served = clock::now();
      ++r.served;
    }
    if (!c.fd || (c.served && clock::now() - *c.served >= hold)) {
      c.fd.reset();  // releases the target's place (or the client was lost)
      c.done = true;
      ++finished;
      continue;
    }
    if (!c.served) {
      fds.push_back({c.fd.get(), POLLIN, 0});
      which.push_back(&c);
    }
  }
}

// Reads what the polled clients got: an answer (HTTP) serves them, a reset or close loses them.
void read_burst(const target_settings& s, std::vector<pollfd>& fds, std::vector<burst_client*>& which,
                burst_result& r) {
  for (std::size_t k = 0; k < fds.size(); ++k) {
    if ((fds[k].revents & (POLLIN | POLLHUP | POLLERR)) == 0) {
      continue;
    }
    char byte = 0;
    if (::recv(which[k]->fd.get(), &byte, 1, MSG_PEEK | MSG_DONTWAIT) > 0 && s.protocol == target_protocol::http) {
      which[k]->served = clock::now();
      ++r.served;
    } else {
      which[k]->fd.reset();  // reset or closed without an answer: lost
    }
  }
}

// Waits (at most 2 s) until the accept queue of `at` is empty; false if it never was.
bool wait_drained(const endpoint& at) {
  const auto bound = clock::now() + std::chrono::seconds(2);
  while (listen_queue_length(at) > 0 && clock::now() < bound) {
    std::this_thread::sleep_for(milliseconds(10));
  }
  return listen_queue_length(at) <= 0;
}

}  // namespace

target_settings reference_target(const drill_settings& s, serve_program program, const std::vector<std::string>& args) {
  target_settings t;
  const bool naive = program == serve_program::fixture_naive;
  t.command = {program == serve_program::serve ? self_path() : fixture_path(), naive ? "naive" : "serve", "--listen",
               "127.0.0.1:{port}"};
  t.command.insert(t.command.end(), args.begin(), args.end());
  if (!naive) {
    append_serve_engine(t.command);
  }
  t.label = naive ? "the naive loop" : "transient serve";
  t.fd_limit = child_fd_limit;
  t.quick = s.quick;
  t.progress = s.progress;
  t.deadline = s.deadline;
  return t;
}

void note(const target_settings& s, const std::string& text) {
  if (s.progress) {
    s.progress(text);
  }
}

double median(std::vector<double> v) {
  if (v.empty()) {
    return NAN;
  }
  std::sort(v.begin(), v.end());
  return v.size() % 2 == 1 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

double ms_since(clock::time_point t) { return std::chrono::duration<double, std::milli>(clock::now() - t).count(); }

std::string status_text(int status) {
  return status > 128 ? "killed by signal " + std::to_string(status - 128) : "exit status " + std::to_string(status);
}

void fill_target(const target_settings& s, exhausted_target& x) {
  const auto& at = x.server->at();
  const std::size_t cap = s.fd_limit + 64;
  int slow_answers = 0;  // accepted, unanswered clients in a row
  std::size_t answered = 0;
  for (std::size_t i = 0; i < cap && clock::now() < s.deadline; ++i) {
    unique_fd fd = connect_bounded(at, connect_bound, std::nullopt, s.protocol == target_protocol::http);
    const probe_outcome o = fd ? fill_outcome(s, x, fd.get()) : probe_outcome::reset;
    x.peak_descriptors = std::max(x.peak_descriptors, x.server->process()->max_open_descriptors());
    if (const auto status = x.server->exited()) {
      x.verdict = "DEAD";
      x.problem = "exited (" + status_text(*status) + ") as its descriptors ran out, at " +
                  std::to_string(x.held.size()) + " connections";
      return;
    }
    // Accepted but not answered yet (a loop that sleeps after accepting, as the next accept
    // failed on the full table even with no client queued): the target has it; go on.
    if (o == probe_outcome::waiting && slow_answers < 4 && listen_queue_length(at) == 0) {
      ++slow_answers;
      x.held.push_back(std::move(fd));
      x.live.fetch_add(1);
      continue;
    }
    if (o != probe_outcome::served) {
      x.probe = std::move(fd);
      x.probe_state = o;
      return;
    }
    slow_answers = 0;
    ++answered;
    x.held.push_back(std::move(fd));
    x.live.fetch_add(1);
  }
  not_filled(s, x, answered);
}

void start_exhausted(const target_settings& s, exhausted_target& x) {
  x.server = std::make_unique<target_server>(s);
  if (!x.server->problem().empty()) {
    x.verdict = "NO START";
    x.problem = x.server->problem();
    return;
  }
  fill_target(s, x);
}

trial run_trial(const target_settings& s, exhausted_target& x, milliseconds wait, milliseconds stuck,
                const drill_detail::sampler& clock0) {
  trial t;
  const auto& at = x.server->at();
  if (x.probe_state == probe_outcome::waiting) {
    x.probe_state = await_outcome(x.probe.get(), at, s.protocol, wait);
  } else {
    std::this_thread::sleep_for(wait);
  }
  t.probe = x.probe_state;
  if (t.probe == probe_outcome::served) {  // served with no release: the target freed something itself
    t.recovery_ms = 0;
    x.held.push_back(std::move(x.probe));
    return t;
  }
  const drill_detail::cpu_wait waited(*x.server->process());
  const auto released = clock::now();
  x.held.erase(x.held.begin());  // the target's descriptor for it frees once it sees the close
  x.live.fetch_sub(1);
  t.mark.released = clock0.at(released);
  unique_fd client = std::move(x.probe);
  if (t.probe != probe_outcome::waiting) {  // the probe was dropped: does a new client get in?
    client = connect_bounded(at, connect_bound, std::nullopt, s.protocol == target_protocol::http);
  }
  const probe_outcome o = client ? await_outcome(client.get(), at, s.protocol, stuck) : probe_outcome::reset;
  if (t.probe == probe_outcome::waiting) {
    t.probe = o;
  }
  if (o == probe_outcome::served) {
    const auto served = clock::now();
    t.recovery_ms = std::chrono::duration<double, std::milli>(served - released).count();
    t.cpu_wait_ms = std::min(waited.ms(), *t.recovery_ms);
    t.mark.served = clock0.at(served);
    t.mark.latency_ms = *t.recovery_ms;
    x.held.push_back(std::move(client));
    x.live.fetch_add(1);
  }
  return t;
}

std::vector<release_mark> trials_result::marks() const {
  std::vector<release_mark> out;
  for (const auto& t : trials) {
    if (t.mark.released > 0) {
      out.push_back(t.mark);
    }
  }
  return out;
}

double trials_result::worst(bool own_time) const {
  const std::vector<double>& v = own_time ? own : recoveries;
  return v.empty() ? NAN : *std::max_element(v.begin(), v.end());
}

double trials_result::count(probe_outcome o) const {
  return static_cast<double>(std::count_if(trials.begin(), trials.end(), [&](const trial& t) { return t.probe == o; }));
}

trials_result run_trials(const target_settings& s, exhausted_target& x, const std::vector<milliseconds>& waits,
                         milliseconds stuck, const drill_detail::sampler& clock0) {
  trials_result r;
  for (std::size_t i = 0; i < waits.size() && r.verdict.empty(); ++i) {
    const std::string number = std::to_string(i + 1);
    note(s, "trial " + number + "/" + std::to_string(waits.size()) + ": release one after " +
                std::to_string(waits[i].count()) + " ms exhausted");
    if (clock::now() >= s.deadline) {
      r.verdict = "CANNOT FILL";
      r.detail = "the scenario's time ran out before trial " + number;
      break;
    }
    if (i > 0 && !x.probe) {
      fill_target(s, x);  // the next probe: exhausted again
    }
    if (!x.problem.empty()) {
      r.verdict = x.verdict;
      r.detail = "trial " + number + ": " + x.problem;
      r.fix = x.fix;
      break;
    }
    const trial& t = r.trials.emplace_back(run_trial(s, x, waits[i], stuck, clock0));
    if (const auto status = x.server->exited()) {
      r.verdict = "DEAD";
      r.detail = "exited (" + status_text(*status) + ") while its descriptors were exhausted";
    } else if (!t.recovery_ms) {
      r.verdict = "STUCK";
      r.detail = "trial " + number + ": no client served within " + std::to_string(stuck.count()) +
                 " ms of a release (the waiting client " + std::string(outcome_name(t.probe)) + ")";
    } else {
      r.recoveries.push_back(*t.recovery_ms);
      r.own.push_back(*t.recovery_ms - t.cpu_wait_ms);
    }
  }
  return r;
}

burst_result client_burst(const target_settings& s, const target_server& server, std::size_t clients,
                          std::chrono::seconds bound) {
  burst_result r;
  const auto start = clock::now();
  std::vector<burst_client> all(clients);
  for (auto& c : all) {  // all at once: the kernel queues what the target does not accept yet
    if (clock::now() < s.deadline - std::chrono::seconds(5)) {  // a full backlog makes each connect wait its bound
      c.fd = connect_bounded(server.at(), connect_bound, std::nullopt, s.protocol == target_protocol::http);
    }
    c.since = clock::now();
  }
  std::size_t finished = 0;
  // The answers are read from when every client has connected (a small backlog makes the
  // connects slow): none is counted lost for want of a look.
  const auto deadline = std::min(clock::now() + bound, s.deadline);
  while (finished < clients && clock::now() < deadline) {
    std::vector<pollfd> fds;
    std::vector<burst_client*> which;
    sweep_burst(s, all, r, finished, fds, which);
    if (::poll(fds.data(), fds.size(), 5) > 0) {
      read_burst(s, fds, which, r);
    }
  }
  r.drained = s.protocol != target_protocol::tcp || wait_drained(server.at());
  r.seconds = std::chrono::duration<double>(clock::now() - start).count();
  return r;
}

namespace {

// Sends requests on `fd`, each after the answer to the one before, until the server closes it
// or `deadline`; true if it closed.
bool closed_after_next_requests(int fd, clock::time_point deadline) {
  constexpr milliseconds answer_wait{50};
  while (clock::now() < deadline) {
    (void)send_request(fd);
    const auto left = std::max(std::chrono::ceil<milliseconds>(deadline - clock::now()), milliseconds(0));
    if (wait_closed(fd, std::min(left, answer_wait))) {
      return true;
    }
  }
  return false;
}

}  // namespace

sigterm_result sigterm_and_wait_closed(const target_server& server, const std::vector<unique_fd>& held,
                                       clock::time_point deadline, bool next_request) {
  sigterm_result r;
  r.sent = clock::now();
  server.signal(SIGTERM);
  for (const auto& fd : held) {
    const auto left = std::max(std::chrono::ceil<milliseconds>(deadline - clock::now()), milliseconds(0));
    const bool closed = next_request ? closed_after_next_requests(fd.get(), deadline) : wait_closed(fd.get(), left);
    r.closed += closed ? 1 : 0;
  }
  r.stop_ms = ms_since(r.sent);
  return r;
}

slow_attack_result slow_attack(const target_settings& s, const target_server& server, std::size_t count, bool half_sent,
                               milliseconds window) {
  slow_attack_result a;
  a.start = clock::now();
  for (std::size_t i = 0; i < count; ++i) {
    unique_fd fd = connect_bounded(server.at(), connect_bound, endpoint::v4({127, 0, 0, 2}, 0), false);
    if (!fd) {
      break;
    }
    if (half_sent && s.protocol == target_protocol::http) {
      constexpr std::string_view partial = "GET / HTTP/1.1\r\nHost: slow\r\n";  // never finished
      (void)::send(fd.get(), partial.data(), partial.size(), MSG_NOSIGNAL);
    }
    a.idle.push_back(std::move(fd));
  }
  // The target takes them in (or sheds them): its accept queue empties and it sleeps again
  // (bounded: a spinning target never sleeps).
  const auto settle = clock::now() + milliseconds(2000);
  while (listen_queue_length(server.at()) > 0 && clock::now() < settle) {
    std::this_thread::sleep_for(milliseconds(2));
  }
  drill_detail::wait_asleep(*server.process(), milliseconds(500));
  for (const auto& fd : a.idle) {
    a.held += wait_closed(fd.get(), milliseconds(0)) ? 0 : 1;
  }
  const drill_detail::cpu_wait waited(*server.process());
  const auto asked = clock::now();
  const unique_fd other =
      connect_bounded(server.at(), connect_bound, endpoint::v4({127, 0, 0, 3}, 0), s.protocol == target_protocol::http);
  a.other = other ? await_outcome(other.get(), server.at(), s.protocol, window) : probe_outcome::reset;
  if (a.other == probe_outcome::served) {
    a.other_ms = ms_since(asked);
    a.other_cpu_wait_ms = waited.ms();
  }
  return a;
}

}  // namespace transient::tool
