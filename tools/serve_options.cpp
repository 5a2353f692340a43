// Parsing of `transient serve`'s command line.
#include "serve_options.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <string>
#include <utility>

namespace transient::tool {

const std::string_view serve_help =
    "usage: transient serve [OPTIONS]\n"
    "\n"
    "A small HTTP/1.1 keep-alive responder (every request gets 200 \"ok\") on transient's\n"
    "accept loop: a connection budget taken before accept, pauses that never spin, and a\n"
    "stall watchdog. It prints the verified listening address, then (if NOTIFY_SOCKET is\n"
    "set) tells systemd READY=1, then the descriptor limit and the budget; policy state\n"
    "changes go to stderr. A stall stops it with a diagnosis (exit 1).\n"
    "\n"
    "Signals: SIGTERM, SIGINT, SIGQUIT drain (stop accepting, close the listener, answer the\n"
    "requests in flight, exit 0); a second one ends the drain at once. SIGHUP, SIGUSR1 and\n"
    "SIGUSR2 are logged and ignored.\n"
    "\n"
    "  --listen ADDRESS         where to listen (default 127.0.0.1:8080; port 0: any)\n"
    "  --port-range FIRST-LAST  hunt for a free port in this range on the --listen address\n"
    "  --max-connections N|auto connection budget, 1 to 4294967295 (default auto:\n"
    "                           RLIMIT_NOFILE minus a headroom of max(32, 5 %);\n"
    "                           0 also means auto, as in the library)\n"
    "  --fd-limit raise|keep    raise the RLIMIT_NOFILE soft limit to the hard limit at start\n"
    "                           (default), or keep it\n"
    "  --threads N              loops (threads), 1 to 256, each serving the connections it\n"
    "                           accepts (default 1)\n"
    "  --shed queue|close|reset|503\n"
    "                           at the budget: leave clients in the backlog (default), close\n"
    "                           them, reset them, or answer 503\n"
    "  --stall-timeout DURATION stop when descriptors stay exhausted with no progress this long\n"
    "                           (default 30s; 0 disables)\n"
    "  --idle-timeout DURATION  close a connection idle this long (default 60s; 1ms or more)\n"
    "  --header-timeout DURATION\n"
    "                           close a connection that has not sent a complete request\n"
    "                           head this long after connecting or after its last response,\n"
    "                           or its body this long after the head (default 10s; 1ms or\n"
    "                           more; slow clients, slowloris)\n"
    "  --max-per-peer N|off     live connections per client address (IPv4, IPv6 /64), 1 to\n"
    "                           1000000; the excess is shed as --shed says (queue: closed).\n"
    "                           Default off; 16 to 64 suits clients behind NAT, 2 to 8\n"
    "                           direct ones\n"
    "  --drain-timeout DURATION after a stop signal: stop accepting, finish requests in\n"
    "                           flight, close idle connections, exit when done or after\n"
    "                           this long (default 10s; 0: close everything at once)\n"
    "  --metrics ADDRESS        Prometheus text at http://ADDRESS/metrics, and health for\n"
    "                           orchestrators at /healthz (200 unless stopped or stalled)\n"
    "                           and /readyz (200 only while accepting), loopback only; at\n"
    "                           16 connections a new one closes the idlest\n"
    "  --engine epoll|io_uring  what accepts: epoll (default) or an io_uring multishot accept\n"
    "                           (same policy; connections are served on epoll either way)\n"
    "\n"
    "Requests are limited to 8 KiB; larger or malformed ones get 400 and a close.\n"
    "DURATION: 250ms, 60s, 2m, 1h, or a number of seconds; at most 24h.\n"
    "\n"
    "Started by systemd socket activation (LISTEN_FDS and LISTEN_PID for this process), it\n"
    "serves the one socket passed (verified like any listener; --listen is then refused).\n"
    "With NOTIFY_SOCKET it sends READY=1, STATUS=<health state> on every change and, when\n"
    "WATCHDOG_USEC is set, WATCHDOG=1 at half that interval while accepting works (none once\n"
    "descriptors stay exhausted with no progress), so WatchdogSec= restarts a stuck server.\n";

namespace {

template <class T>
std::optional<T> parse_number(std::string_view text, T max) {
  T value{};
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc{} || end != text.data() + text.size() || value > max) {
    return std::nullopt;
  }
  return value;
}

// Appended piece by piece: `"'" + std::string(s)` trips g++ 12's false -Wrestrict at -O3 (GCC bug 105329).
std::string quoted(std::string_view s) { return std::string(1, '\'').append(s).append(1, '\''); }

// serve's duration options, their ranges and what their zero means: the one place where a
// duration from the command line is checked. Every one ends at longest_duration, far below
// what std::chrono's arithmetic (a deadline of now plus the duration) can hold.
struct duration_option {
  std::string_view flag;
  std::chrono::milliseconds serve_settings::*field;
  bool zero_allowed;
};
constexpr std::array<duration_option, 4> duration_options{{
    {"--stall-timeout", &serve_settings::stall_timeout, true},     // 0: no watchdog
    {"--idle-timeout", &serve_settings::idle_timeout, false},      // 0 would close every connection at once
    {"--header-timeout", &serve_settings::header_timeout, false},  // likewise
    {"--drain-timeout", &serve_settings::drain_timeout, true},     // 0: no drain
}};

const duration_option* find_duration_option(std::string_view flag) {
  const auto* it = std::find_if(duration_options.begin(), duration_options.end(),
                                [flag](const duration_option& o) { return o.flag == flag; });
  return it == duration_options.end() ? nullptr : it;
}

std::string duration_problem(const duration_option& o, std::string_view value) {
  return std::string(o.flag) + ": " + quoted(value) + " is not a duration (250ms, 10s, 2m, 1h) from " +
         (o.zero_allowed ? "0" : "1ms") + " to 24h";
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

serve_parse_result parse_serve_arguments(arguments args) {
  serve_parse_result r;
  serve_settings& s = r.settings;
  const auto fail = [&r](std::string problem) {
    r.problem = std::move(problem);
    return r;
  };
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string_view flag = args[i];
    if (flag == "--help" || flag == "-h") {
      r.help = true;
      return r;
    }
    if (flag.empty() || flag[0] != '-') {
      return fail("unexpected argument " + quoted(flag) + " (serve takes only options; try --help)");
    }
    const bool known = flag == "--listen" || flag == "--port-range" || flag == "--max-connections" ||
                       flag == "--threads" || flag == "--shed" || find_duration_option(flag) != nullptr ||
                       flag == "--metrics" || flag == "--engine" || flag == "--max-per-peer" || flag == "--fd-limit";
    if (!known) {
      return fail("unknown option " + quoted(flag) + " (try 'transient serve --help')");
    }
    if (i + 1 >= args.size()) {
      return fail(std::string(flag) + " needs a value (try 'transient serve --help')");
    }
    const std::string_view value = args[++i];
    if (flag == "--listen" || flag == "--metrics") {
      auto parsed = try_parse_endpoint(value);
      if (!parsed) {
        return fail(std::string(flag) + ": " + parsed.problem);
      }
      if (flag == "--metrics") {
        if (!parsed.value->is_loopback()) {
          return fail("--metrics: " + quoted(value) + " is not a loopback address (metrics stay on this machine)");
        }
        s.metrics = *parsed.value;
      } else {
        s.listen_on = *parsed.value;
        s.listen_given = true;
      }
    } else if (flag == "--port-range") {
      const std::size_t dash = value.find('-');
      const auto first = parse_number<std::uint16_t>(value.substr(0, dash), 65535);
      const auto last =
          dash == std::string_view::npos ? std::nullopt : parse_number<std::uint16_t>(value.substr(dash + 1), 65535);
      if (!first || !last || *first == 0 || *first > *last) {
        return fail("--port-range: " + quoted(value) + " is not a range FIRST-LAST with 1 <= FIRST <= LAST <= 65535");
      }
      s.port_range = std::make_pair(*first, *last);
      s.listen_given = true;
    } else if (flag == "--max-connections") {
      if (value == "auto") {
        s.max_connections = 0;
      } else {
        const auto n = parse_number<std::uint64_t>(value, 0xffffffffULL);
        if (!n) {
          return fail("--max-connections: " + quoted(value) + " is not 'auto' or a number from 0 (auto) to 4294967295");
        }
        s.max_connections = *n;  // 0: auto, as server_options::max_connections
      }
    } else if (flag == "--threads") {
      const auto n = parse_number<unsigned>(value, 256);
      if (!n || *n == 0) {
        return fail("--threads: " + quoted(value) + " is not a number from 1 to 256");
      }
      s.threads = *n;
    } else if (flag == "--shed") {
      if (value == "queue") {
        s.shed = shed_mode::queue;
      } else if (value == "close") {
        s.shed = shed_mode::close;
      } else if (value == "reset") {
        s.shed = shed_mode::reset;
      } else if (value == "503") {
        s.shed = shed_mode::respond;
      } else {
        return fail("--shed: " + quoted(value) + " is not queue, close, reset or 503");
      }
    } else if (const duration_option* o = find_duration_option(flag)) {
      const auto d = parse_duration(value);
      if (!d || (!o->zero_allowed && d->count() == 0)) {
        return fail(duration_problem(*o, value));
      }
      s.*(o->field) = *d;
    } else if (flag == "--max-per-peer") {
      const auto n = value == "off" ? std::optional<std::uint32_t>(0) : parse_number<std::uint32_t>(value, 1000000);
      if (!n || (*n == 0 && value != "off")) {
        return fail("--max-per-peer: " + quoted(value) + " is not 'off' or a number from 1 to 1000000");
      }
      s.max_per_peer = *n;
    } else if (flag == "--fd-limit") {
      if (value != "raise" && value != "keep") {
        return fail("--fd-limit: " + quoted(value) + " is not raise or keep");
      }
      s.raise_fd_limit = value == "raise";
    } else {  // --engine
      if (value == "epoll") {
        s.engine = serve_engine::epoll;
      } else if (value == "io_uring") {
        s.engine = serve_engine::io_uring;
      } else {
        return fail("--engine: " + quoted(value) + " is not epoll or io_uring");
      }
    }
  }
  return r;
}

}  // namespace transient::tool
