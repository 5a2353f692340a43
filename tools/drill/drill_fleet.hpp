// The built-in drill's scenario 11, a fleet behind a real HAProxy: three serve instances, one
// haproxy started by the drill, a steady stream of client requests through it, and one event
// per instance (a leak until it stalls, a full budget, an in-place upgrade). This header's
// first half (the configuration's placeholders, HAProxy's `show stat`) needs no HAProxy, so
// that a test can check it on canned input.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "drill_report.hpp"
#include "drill_scenarios.hpp"

namespace transient::tool {

/// Where the fleet scenario looks for HAProxy (Debian's `haproxy` package).
inline constexpr std::string_view haproxy_path = "/usr/sbin/haproxy";

/// `text` with every @NAME@ replaced by values.at(NAME). Throws std::invalid_argument naming
/// the first placeholder that has no value, so that a configuration never reaches HAProxy
/// half filled.
[[nodiscard]] std::string fill_placeholders(std::string_view text, const std::map<std::string, std::string>& values);

/// One server's line of HAProxy's `show stat` (the stats socket's CSV).
struct haproxy_server_stat {
  std::string proxy;           ///< pxname: its backend.
  std::string server;          ///< svname.
  std::string status;          ///< "UP", "UP 1/3" (going down), "DOWN", "DRAIN", "MAINT", "no check".
  long weight = 0;             ///< Its effective weight (0 while drained by an agent).
  std::uint64_t sessions = 0;  ///< stot: the sessions HAProxy sent it so far.
  std::string check;           ///< check_status of its last check: "L7OK", "L7TOUT", "L4CON", "" (none).
  /// wretr + wredis: requests HAProxy sent it and then had to retry (on it or on another).
  std::uint64_t retried = 0;
  /// Whether HAProxy sends it new requests: UP (going down or not) or unchecked, weight above 0.
  [[nodiscard]] bool in_rotation() const noexcept;
};

/// The servers of a `show stat` answer (FRONTEND and BACKEND lines left out), its columns found
/// by the header line ("# pxname,svname,..."); empty if the header or a needed column is missing.
[[nodiscard]] std::vector<haproxy_server_stat> parse_show_stat(std::string_view csv);

/// 11. A fleet behind HAProxy, three rows: the documented configuration's, with the agent check
/// (judged: no client error across the three events, the leaking and the full instance out of
/// rotation within 2 check intervals), the documented alternative's, /readyz on the metrics
/// port, and a plain TCP check's, both shown beside it.
std::vector<scenario_result> run_fleet(const drill_settings& s);

}  // namespace transient::tool
