// `transient serve`'s option table: each option's name, value, help and check, in one place.
#include "serve_options.hpp"

#include <array>
#include <charconv>
#include <string>
#include <utility>

namespace transient::tool {
namespace {

constexpr std::string_view serve_text =
    "usage: transient serve [OPTIONS]\n"
    "\n"
    "A small HTTP/1.1 keep-alive responder (every request gets 200 \"ok\") on transient's\n"
    "accept loop: a connection budget taken before accept, pauses that never spin, and a\n"
    "stall watchdog. It prints the verified listening address, then (if NOTIFY_SOCKET is\n"
    "set) tells systemd READY=1, then the descriptor limit and the budget; policy state\n"
    "changes go to stderr. A stall stops it with a diagnosis (exit 1).\n"
    "\n"
    "Signals: SIGTERM, SIGINT, SIGQUIT drain (stop accepting, close the listener, answer the\n"
    "requests in flight, exit 0); a second one ends the drain at once. SIGHUP and SIGUSR2\n"
    "upgrade in place: serve starts the binary on disk with the same arguments, hands it the\n"
    "listeners, and once it serves them (within --upgrade-timeout) drains as on SIGTERM; if\n"
    "the successor fails, serve logs why and keeps serving. SIGUSR1 is logged and ignored.\n";

constexpr std::string_view serve_footer =
    "Requests are limited to 8 KiB; larger or malformed ones get 400 and a close.\n"
    "DURATION: 250ms, 60s, 2m, 1h, or a number of seconds; at most 24h.\n"
    "\n"
    "Started by systemd socket activation (LISTEN_FDS and LISTEN_PID for this process), it\n"
    "serves the one socket passed (verified like any listener; --listen is then refused).\n"
    "With NOTIFY_SOCKET it sends READY=1, STATUS=<health state> on every change and, when\n"
    "WATCHDOG_USEC is set, WATCHDOG=1 at half that interval while accepting works (none once\n"
    "descriptors stay exhausted with no progress), so WatchdogSec= restarts a stuck server.";

template <class T>
std::optional<T> parse_number(std::string_view text, T max) {
  T value{};
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc{} || end != text.data() + text.size() || value > max) {
    return std::nullopt;
  }
  return value;
}

// The value of `choices` named `value`, or refuse() naming them (`names`).
template <class T, std::size_t N>
T choose(const std::array<std::pair<std::string_view, T>, N>& choices, const std::string& flag,
         const std::string& value, std::string_view names) {
  for (const auto& [name, choice] : choices) {
    if (name == value) {
      return choice;
    }
  }
  refuse(flag + ": " + in_quotes(value) + " is not " + std::string(names));
}

// --listen and --metrics: an endpoint; metrics stay on this machine.
endpoint endpoint_value(const std::string& flag, const std::string& value) {
  auto parsed = try_parse_endpoint(value);
  if (!parsed) {
    refuse(flag + ": " + parsed.problem);
  }
  if (flag == "--metrics" && !parsed.value->is_loopback()) {
    refuse("--metrics: " + in_quotes(value) + " is not a loopback address (metrics stay on this machine)");
  }
  return *parsed.value;
}

std::pair<std::uint16_t, std::uint16_t> port_range_value(const std::string& value) {
  const std::size_t dash = value.find('-');
  const auto first = parse_number<std::uint16_t>(std::string_view(value).substr(0, dash), 65535);
  const auto last = dash == std::string::npos
                        ? std::nullopt
                        : parse_number<std::uint16_t>(std::string_view(value).substr(dash + 1), 65535);
  if (!first || !last || *first == 0 || *first > *last) {
    refuse("--port-range: " + in_quotes(value) + " is not a range FIRST-LAST with 1 <= FIRST <= LAST <= 65535");
  }
  return {*first, *last};
}

void add_address_options(CLI::App& table, serve_settings& s) {
  add_value(table, "--listen", "ADDRESS", "where to listen (default 127.0.0.1:8080; port 0: any)",
            [&s](const std::string& v) {
              s.listen_on = endpoint_value("--listen", v);
              s.listen_given = true;
            });
  add_value(table, "--port-range", "FIRST-LAST", "hunt for a free port in this range on the --listen address",
            [&s](const std::string& v) {
              s.port_range = port_range_value(v);
              s.listen_given = true;
            });
}

void add_budget_options(CLI::App& table, serve_settings& s) {
  add_value(table, "--max-connections", "N|auto",
            "connection budget, 1 to 4294967295 (default auto:\nRLIMIT_NOFILE minus a headroom of max(32, 5 %);\n"
            "0 also means auto, as in the library)",
            [&s](const std::string& v) {
              const auto n = v == "auto" ? std::optional<std::uint64_t>(0) : parse_number<std::uint64_t>(v, 0xffffffff);
              if (!n) {
                refuse("--max-connections: " + in_quotes(v) + " is not 'auto' or a number from 0 (auto) to 4294967295");
              }
              s.max_connections = *n;  // 0: auto, as server_options::max_connections
            });
  add_value(
      table, "--fd-limit", "raise|keep",
      "raise the RLIMIT_NOFILE soft limit to the hard limit at start\n(default), or keep it",
      [&s](const std::string& v) {
        s.raise_fd_limit = choose<bool, 2>({{{"raise", true}, {"keep", false}}}, "--fd-limit", v, "raise or keep");
      });
  add_value(table, "--threads", "N", "loops (threads), 1 to 256, each serving the connections it\naccepts (default 1)",
            [&s](const std::string& v) {
              const auto n = parse_number<unsigned>(v, 256);
              if (!n || *n == 0) {
                refuse("--threads: " + in_quotes(v) + " is not a number from 1 to 256");
              }
              s.threads = *n;
            });
}

void add_shedding_options(CLI::App& table, serve_settings& s) {
  add_value(table, "--shed", "queue|close|reset|503",
            "at the budget: leave clients in the backlog (default), close\nthem, reset them, or answer 503",
            [&s](const std::string& v) {
              s.shed = choose<shed_mode, 4>({{{"queue", shed_mode::queue},
                                              {"close", shed_mode::close},
                                              {"reset", shed_mode::reset},
                                              {"503", shed_mode::respond}}},
                                            "--shed", v, "queue, close, reset or 503");
            });
  add_value(table, "--max-per-peer", "N|off",
            "live connections per client address (IPv4, IPv6 /64), 1 to\n1000000; the excess is shed as --shed "
            "says (queue: closed).\nDefault off; 16 to 64 suits clients behind NAT, 2 to 8\ndirect ones",
            [&s](const std::string& v) {
              const auto n = v == "off" ? std::optional<std::uint32_t>(0) : parse_number<std::uint32_t>(v, 1000000);
              if (!n || (*n == 0 && v != "off")) {
                refuse("--max-per-peer: " + in_quotes(v) + " is not 'off' or a number from 1 to 1000000");
              }
              s.max_per_peer = *n;
            });
}

// serve's duration options, their ranges and what their zero means: the one place where a
// duration from the command line is checked. Every one ends at longest_duration, far below
// what std::chrono's arithmetic (a deadline of now plus the duration) can hold.
struct duration_option {
  std::string_view flag;
  std::chrono::milliseconds serve_settings::*field;
  bool zero_allowed;
  std::string_view help;
};
constexpr std::array<duration_option, 6> duration_options{{
    {"--stall-timeout", &serve_settings::stall_timeout, true,  // 0: no watchdog
     "stop when descriptors stay exhausted with no progress this long\n(default 30s; 0 disables)"},
    {"--idle-timeout", &serve_settings::idle_timeout, false,  // 0 would close every connection at once
     "close a connection idle this long (default 60s; 1ms or more)"},
    {"--header-timeout", &serve_settings::header_timeout, false,  // likewise
     "close a connection that has not sent a complete request\nhead this long after connecting or after its last "
     "response,\nor its body this long after the head (default 10s; 1ms or\nmore; slow clients, slowloris)"},
    {"--drain-timeout", &serve_settings::drain_timeout, true,  // 0: no drain
     "after a stop signal: stop accepting, finish requests in\nflight, answer each idle connection's next request "
     "with\nConnection: close, exit when done or after this long\n(default 10s; 0: close everything at once)"},
    {"--max-queue-wait", &serve_settings::max_queue_wait, true,  // 0: no bound
     "answer 503 (with Retry-After) and close a connection that\nwaited longer than this in the accept queue, "
     "never serving\nit: its client has likely given up (default 5s; 0: off)"},
    {"--upgrade-timeout", &serve_settings::upgrade_timeout, false,  // 0 would fail every upgrade
     "on SIGHUP or SIGUSR2: how long the successor has to take the\nlisteners and start accepting, else it is "
     "killed and serve\nserves on (default 10s; 1ms or more)"},
}};

void add_duration_option(CLI::App& table, serve_settings& s, const duration_option& o) {
  add_value(table, std::string(o.flag), "DURATION", std::string(o.help), [&s, &o](const std::string& v) {
    const auto d = parse_duration(v);
    if (!d || (!o.zero_allowed && d->count() == 0)) {
      refuse(std::string(o.flag) + ": " + in_quotes(v) + " is not a duration (250ms, 10s, 2m, 1h) from " +
             (o.zero_allowed ? "0" : "1ms") + " to 24h");
    }
    s.*(o.field) = *d;
  });
}

// The readiness threshold: a fraction from 0 (off) to 1.
double fraction_value(const std::string& value) {
  double f = -1;
  const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), f);
  if (value.empty() || ec != std::errc{} || end != value.data() + value.size() || !(f >= 0 && f <= 1)) {
    refuse("--ready-queue-fraction: " + in_quotes(value) + " is not a fraction from 0 (off) to 1");
  }
  return f;
}

void add_queue_options(CLI::App& table, serve_settings& s) {
  add_value(table, "--backlog", "N",
            "the listen() backlog: clients the accept queue holds, 1 to\n65535, capped by net.core.somaxconn "
            "(default: somaxconn;\nrefused under socket activation, where it is the socket\nunit's Backlog=)",
            [&s](const std::string& v) {
              const auto n = parse_number<int>(v, 65535);
              if (!n || *n < 1) {
                refuse("--backlog: " + in_quotes(v) + " is not a number from 1 to 65535");
              }
              s.backlog = *n;
            });
  add_value(table, "--ready-queue-fraction", "F",
            "/readyz answers 503 while more than this fraction of the\naccept queue's limit is waiting "
            "(default 0.5; 0: off; at\nmost 1)",
            [&s](const std::string& v) { s.ready_queue_fraction = fraction_value(v); });
}

void add_service_options(CLI::App& table, serve_settings& s) {
  add_flag(table, "--fd-store", s.fd_store,
           "keep the listeners in systemd's file descriptor store\n(FDSTORE=1 when NOTIFY_SOCKET is set; the unit "
           "needs\nFileDescriptorStoreMax=), and after a restart take them\nback by name (LISTEN_FDS: \"http\" must "
           "match --listen,\n\"metrics\" --metrics, \"agent\" --agent) instead of opening them");
  add_value(table, "--metrics", "ADDRESS",
            "Prometheus text at http://ADDRESS/metrics, and health for\norchestrators at /healthz (200 unless "
            "stopped or stalled)\nand /readyz (200 only while accepting), loopback only; at\n16 connections a new "
            "one closes the idlest",
            [&s](const std::string& v) { s.metrics = endpoint_value("--metrics", v); });
  add_value(table, "--agent", "ADDRESS",
            "HAProxy's agent-check on ADDRESS (any address): one line per\nconnection, \"up ready N%\" while "
            "/readyz would say 200 (N:\nthe free share of the connection budget), \"up drain\" while\nnot ready "
            "or draining, \"down #...\" once stalled",
            [&s](const std::string& v) { s.agent = endpoint_value("--agent", v); });
  add_value(table, "--engine", "epoll|io_uring",
            "what accepts: epoll (default) or an io_uring multishot accept\n(same policy; connections are served "
            "on epoll either way)",
            [&s](const std::string& v) {
              s.engine =
                  choose<serve_engine, 2>({{{"epoll", serve_engine::epoll}, {"io_uring", serve_engine::io_uring}}},
                                          "--engine", v, "epoll or io_uring");
            });
}

// serve's option table, which takes the values into `s`; `name` heads its usage errors.
std::unique_ptr<CLI::App> make_serve_table(serve_settings& s, const std::string& name) {
  auto table = make_table(name, std::string(serve_text), std::string(serve_footer));
  add_address_options(*table, s);
  add_budget_options(*table, s);
  add_shedding_options(*table, s);
  for (const duration_option& o : duration_options) {
    add_duration_option(*table, s, o);
  }
  add_queue_options(*table, s);
  add_service_options(*table, s);
  return table;
}

}  // namespace

std::optional<std::chrono::milliseconds> parse_duration(std::string_view text) {
  using std::chrono::milliseconds;
  // "ms" before "s", which it also ends with.
  static constexpr std::array<std::pair<std::string_view, milliseconds>, 4> units{{{"ms", milliseconds(1)},
                                                                                   {"s", std::chrono::seconds(1)},
                                                                                   {"m", std::chrono::minutes(1)},
                                                                                   {"h", std::chrono::hours(1)}}};
  milliseconds unit = std::chrono::seconds(1);  // a plain number is seconds
  for (const auto& [suffix, size] : units) {
    if (text.size() > suffix.size() && text.ends_with(suffix)) {
      unit = size;
      text.remove_suffix(suffix.size());
      break;
    }
  }
  // Checked before the multiplication, so no count overflows.
  const auto n = parse_number<std::uint64_t>(
      text, static_cast<std::uint64_t>(milliseconds(longest_duration).count() / unit.count()));
  if (!n) {
    return std::nullopt;
  }
  return unit * static_cast<std::int64_t>(*n);
}

serve_parse_result parse_serve_arguments(arguments args, const serve_table_additions& more) {
  serve_parse_result r;
  const auto table = make_serve_table(r.settings, more.name);
  if (more.add) {
    more.add(*table);
  }
  const table_outcome parsed = parse_table(*table, args);
  r.help = parsed.help;
  r.problem = parsed.problem;
  if (r.problem.empty() && !parsed.extras.empty()) {
    r.problem = "unexpected argument " + in_quotes(parsed.extras.front()) + " (serve takes only options; try --help)";
  }
  return r;
}

}  // namespace transient::tool
