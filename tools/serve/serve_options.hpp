// The command line of `transient serve`, parsed by its option table into plain settings (no
// I/O), so that every bad flag gets one clear line and exit status 2 before anything is opened.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "../command.hpp"
#include "../options.hpp"
#include "transient/policy/accept_policy.hpp"
#include "transient/sockets/endpoint.hpp"

namespace transient::tool {

/// What accepts connections (they are served on epoll either way).
enum class serve_engine : unsigned char {
  epoll,     ///< transient::acceptor in the loop's epoll set (default).
  io_uring,  ///< transient::uring_acceptor, its ring's descriptor in the loop's epoll set.
};

/// The settings of `transient serve`.
struct serve_settings {
  endpoint listen_on = endpoint::loopback_v4(8080);                     ///< --listen (ignored with --port-range).
  std::optional<std::pair<std::uint16_t, std::uint16_t>> port_range;    ///< --port-range FIRST-LAST.
  std::uint64_t max_connections = 0;                                    ///< --max-connections (0: auto).
  unsigned threads = 1;                                                 ///< --threads.
  shed_mode shed = shed_mode::queue;                                    ///< --shed (respond = "503").
  std::chrono::milliseconds stall_timeout = std::chrono::seconds(30);   ///< --stall-timeout.
  std::chrono::milliseconds idle_timeout = std::chrono::seconds(60);    ///< --idle-timeout.
  std::chrono::milliseconds header_timeout = std::chrono::seconds(10);  ///< --header-timeout.
  std::uint32_t max_per_peer = 0;                                       ///< --max-per-peer (0: off).
  std::chrono::milliseconds drain_timeout = std::chrono::seconds(10);   ///< --drain-timeout.
  bool raise_fd_limit = true;                                           ///< --fd-limit raise (default) or keep.
  bool listen_given = false;                  ///< --listen or --port-range was given (refused under socket activation).
  std::optional<endpoint> metrics;            ///< --metrics ADDRESS.
  std::optional<endpoint> agent;              ///< --agent ADDRESS (HAProxy's agent-check).
  serve_engine engine = serve_engine::epoll;  ///< --engine.
  int backlog = 0;                            ///< --backlog, 1 to 65535 (0: the kernel's maximum, somaxconn).
  /// --max-queue-wait: a connection that waited longer in the accept queue is answered 503 and
  /// closed (0: off).
  std::chrono::milliseconds max_queue_wait = std::chrono::seconds(5);
  /// --ready-queue-fraction: /readyz says 503 while the queue holds more than this fraction of
  /// its limit (0: off; at most 1).
  double ready_queue_fraction = 0.5;
  /// --upgrade-timeout: how long a successor started by SIGHUP or SIGUSR2 has to take the
  /// listeners and report ready (1 ms to 24 h).
  std::chrono::milliseconds upgrade_timeout = std::chrono::seconds(10);
  /// --fd-store: store the listeners in systemd's file descriptor store at start-up, and take
  /// them back by name ("http", "metrics", "agent") when systemd passes them (LISTEN_FDS).
  bool fd_store = false;
};

/// What parse_serve_arguments returns: settings, or help requested, or one line of problem.
struct serve_parse_result {
  serve_settings settings;  ///< Valid when problem is empty and help is false.
  bool help = false;        ///< --help was given (and the help printed).
  std::string problem;      ///< Non-empty: the usage error (one line, no newline).
};

/// What a program built on serve changes in serve's option table (the test fixture's knobs).
struct serve_table_additions {
  std::string name = "transient serve";  ///< The command's name in --help and usage errors.
  std::function<void(CLI::App&)> add;    ///< Adds (or removes) options; may be empty.
};

/// Parses serve's arguments with serve's table, changed by `more`; --help prints the table's help.
[[nodiscard]] serve_parse_result parse_serve_arguments(arguments args, const serve_table_additions& more = {});

/// The longest duration any option of the command takes.
inline constexpr std::chrono::hours longest_duration{24};

/// Parses a duration: "250ms", "60s", "2m", "1h", or a plain number of seconds, from 0 to
/// longest_duration. nullopt if invalid or longer.
[[nodiscard]] std::optional<std::chrono::milliseconds> parse_duration(std::string_view text);

}  // namespace transient::tool
