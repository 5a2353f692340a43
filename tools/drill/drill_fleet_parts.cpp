// The fleet scenario's parts that need no HAProxy (drill_fleet.hpp): a configuration's
// placeholders filled, and `show stat` read.
#include <algorithm>
#include <cstdlib>
#include <stdexcept>

#include "drill_fleet.hpp"

namespace transient::tool {
namespace {

// `line` split at its commas (show stat's CSV quotes nothing).
std::vector<std::string_view> csv_fields(std::string_view line) {
  std::vector<std::string_view> out;
  std::size_t from = 0;
  while (true) {
    const std::size_t comma = line.find(',', from);
    out.push_back(line.substr(from, comma == std::string_view::npos ? std::string_view::npos : comma - from));
    if (comma == std::string_view::npos) {
      return out;
    }
    from = comma + 1;
  }
}

// The column of each field `names` lists, in `header`'s order; empty if one is missing.
std::vector<std::size_t> columns_of(const std::vector<std::string_view>& header,
                                    const std::vector<std::string_view>& names) {
  std::vector<std::size_t> out;
  for (const std::string_view name : names) {
    const auto at = std::find(header.begin(), header.end(), name);
    if (at == header.end()) {
      return {};
    }
    out.push_back(static_cast<std::size_t>(at - header.begin()));
  }
  return out;
}

// One server line read by the columns of pxname, svname, status, weight, stot, check_status,
// wretr and wredis.
std::optional<haproxy_server_stat> server_line(const std::vector<std::string_view>& fields,
                                               const std::vector<std::size_t>& column) {
  if (fields.size() <= *std::max_element(column.begin(), column.end())) {
    return std::nullopt;
  }
  const std::string_view name = fields[column[1]];
  if (name == "FRONTEND" || name == "BACKEND") {
    return std::nullopt;
  }
  haproxy_server_stat s{std::string(fields[column[0]]),
                        std::string(name),
                        std::string(fields[column[2]]),
                        0,
                        0,
                        std::string(fields[column[5]]),
                        0};
  s.retried = std::strtoull(std::string(fields[column[6]]).c_str(), nullptr, 10) +
              std::strtoull(std::string(fields[column[7]]).c_str(), nullptr, 10);
  s.weight = std::strtol(std::string(fields[column[3]]).c_str(), nullptr, 10);
  s.sessions = std::strtoull(std::string(fields[column[4]]).c_str(), nullptr, 10);
  return s;
}

}  // namespace

std::string fill_placeholders(std::string_view text, const std::map<std::string, std::string>& values) {
  std::string out;
  std::size_t from = 0;
  for (std::size_t at = text.find('@'); at != std::string_view::npos; at = text.find('@', from)) {
    const std::size_t end = text.find('@', at + 1);
    if (end == std::string_view::npos) {
      break;
    }
    const auto value = values.find(std::string(text.substr(at + 1, end - at - 1)));
    if (value == values.end()) {
      throw std::invalid_argument("the configuration's placeholder " + std::string(text.substr(at, end - at + 1)) +
                                  " has no value");
    }
    out.append(text.substr(from, at - from)).append(value->second);
    from = end + 1;
  }
  return out.append(text.substr(from));
}

bool haproxy_server_stat::in_rotation() const noexcept {
  const bool up = status.rfind("UP", 0) == 0 || status == "no check";
  return up && weight > 0;
}

std::vector<haproxy_server_stat> parse_show_stat(std::string_view csv) {
  constexpr std::string_view head = "# ";
  if (csv.rfind(head, 0) != 0) {
    return {};
  }
  const std::size_t eol = csv.find('\n');
  const auto column = columns_of(csv_fields(csv.substr(head.size(), eol - head.size())),
                                 {"pxname", "svname", "status", "weight", "stot", "check_status", "wretr", "wredis"});
  std::vector<haproxy_server_stat> out;
  for (std::size_t from = eol; !column.empty() && from != std::string_view::npos && from + 1 < csv.size();) {
    const std::size_t next = csv.find('\n', from + 1);
    const std::string_view line = csv.substr(from + 1, next == std::string_view::npos ? next : next - from - 1);
    if (const auto s = server_line(csv_fields(line), column)) {
      out.push_back(*s);
    }
    from = next;
  }
  return out;
}

}  // namespace transient::tool
