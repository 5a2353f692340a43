// `transient explain OPERATION ERRNO [--json]` and `transient explain --table`.
#include <cctype>
#include <charconv>
#include <iostream>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

#include "command.hpp"
#include "json.hpp"
#include "transient/classify.hpp"
#include "transient/errno_name.hpp"

namespace transient::tool {
namespace {

constexpr std::string_view explain_help =
    "usage: transient explain OPERATION ERRNO [--json]\n"
    "       transient explain --table\n"
    "\n"
    "Says what an error means for one socket operation: the action to take, every\n"
    "condition the error matches, and advice.\n"
    "\n"
    "  OPERATION  accept, connect, read, write, bind or listen (recv and send are read\n"
    "             and write, accept4 is accept)\n"
    "  ERRNO      a name (EMFILE, emfile, EWOULDBLOCK) or a number (24)\n"
    "  --json     one JSON object: operation, errno, value, action, decided_by,\n"
    "             conditions, advice\n"
    "  --table    the whole table as Markdown: every classified errno by operation\n";

constexpr std::string_view operations_accepted = "accept, connect, read (recv), write (send), bind, listen";

int usage_error(const std::string& message) {
  std::cerr << "transient explain: " << message << '\n';
  return exit_usage;
}

std::string conditions_text(const std::error_code& ec, std::string_view separator, bool quoted) {
  std::string out;
  for (const condition c : all_conditions) {
    if (ec == c) {
      if (!out.empty()) {
        out += separator;
      }
      out += quoted ? json_quote(to_string(c)) : std::string(to_string(c));
    }
  }
  return out;
}

// The errno value named by `text`: a name, case-insensitive, or a decimal number.
std::optional<int> parse_errno(std::string_view text, std::string& problem) {
  const bool numeric = !text.empty() && (std::isdigit(static_cast<unsigned char>(text[0])) != 0 ||
                                         (text.size() > 1 && (text[0] == '-' || text[0] == '+')));
  if (!numeric) {
    if (auto value = errno_value(text)) {
      return value;
    }
    problem =
        "unknown errno name '" + std::string(text) + "' (expected a Linux errno name such as EMFILE, or a number)";
    return std::nullopt;
  }
  const auto values = all_errno_values();
  const std::string range = std::to_string(values.front()) + "-" + std::to_string(values.back());
  long long value = 0;
  const auto [end, ec] = std::from_chars(text.data() + (text[0] == '+' ? 1 : 0), text.data() + text.size(), value);
  if (ec == std::errc::result_out_of_range ||
      (ec == std::errc{} && end == text.data() + text.size() && (value < values.front() || value > values.back()))) {
    problem = "errno " + std::string(text) + " is out of range (Linux defines " + range + ")";
    return std::nullopt;
  }
  if (ec != std::errc{} || end != text.data() + text.size()) {
    problem.assign(1, '\'').append(text).append("' is not an errno name or number");
    return std::nullopt;
  }
  if (errno_name(static_cast<int>(value)).empty()) {
    problem = "Linux defines no errno " + std::string(text) + " (values " + range + " have gaps)";
    return std::nullopt;
  }
  return static_cast<int>(value);
}

void print_one(operation op, int value, bool json) {
  const std::error_code ec(value, std::system_category());
  const verdict v = classify(op, ec);
  const std::string_view name = errno_name(value);
  if (json) {
    std::cout << "{\"operation\":" << json_quote(to_string(op)) << ",\"errno\":" << json_quote(name)
              << ",\"value\":" << value << ",\"action\":" << json_quote(to_string(v.what))
              << ",\"decided_by\":" << json_quote(to_string(v.why)) << ",\"conditions\":["
              << conditions_text(ec, ",", true) << "],\"advice\":" << json_quote(v.advice) << "}\n";
    return;
  }
  std::cout << to_string(op) << ' ' << name << " (" << value << "): " << to_string(v.what) << '\n'
            << "  decided by: " << to_string(v.why) << '\n'
            << "  conditions: " << conditions_text(ec, ", ", false) << '\n'
            << "  advice:     " << v.advice << '\n';
}

void print_table() {
  std::cout << "| errno | value | conditions |";
  for (int op = 0; op < operation_count; ++op) {
    std::cout << ' ' << to_string(static_cast<operation>(op)) << " |";
  }
  std::cout << "\n|---|---|---|";
  for (int op = 0; op < operation_count; ++op) {
    std::cout << "---|";
  }
  std::cout << '\n';
  for (const int value : all_errno_values()) {
    const std::error_code ec(value, std::system_category());
    if (ec == condition::unclassified) {
      continue;  // summarized by the last row
    }
    std::cout << "| " << errno_name(value) << " | " << value << " | " << conditions_text(ec, ", ", false) << " |";
    for (int op = 0; op < operation_count; ++op) {
      const verdict v = classify(static_cast<operation>(op), ec);
      std::cout << ' ' << to_string(v.what) << " (" << to_string(v.why) << ") |";
    }
    std::cout << '\n';
  }
  // Every unclassified errno gets the operation's rule for "anything else"; ENOENT stands for them.
  const std::error_code other(ENOENT, std::system_category());
  std::cout << "| anything else | | unclassified |";
  for (int op = 0; op < operation_count; ++op) {
    std::cout << ' ' << to_string(classify(static_cast<operation>(op), other).what) << " |";
  }
  std::cout << '\n';
}

}  // namespace

int explain(arguments args) {
  bool json = false;
  bool table = false;
  std::vector<std::string_view> positional;
  for (const std::string_view arg : args) {
    if (arg == "--help" || arg == "-h") {
      std::cout << explain_help;
      return 0;
    }
    if (arg == "--json") {
      json = true;
    } else if (arg == "--table") {
      table = true;
    } else if (arg.size() > 1 && arg[0] == '-' && std::isdigit(static_cast<unsigned char>(arg[1])) == 0) {
      return usage_error("unknown option '" + std::string(arg) + "' (accepted: --json, --table, --help)");
    } else {
      positional.push_back(arg);
    }
  }
  if (table) {
    if (!positional.empty() || json) {
      return usage_error("--table takes no other argument");
    }
    print_table();
    return 0;
  }
  if (positional.size() != 2) {
    return usage_error(positional.empty() ? "missing OPERATION and ERRNO (e.g. 'transient explain accept EMFILE')"
                       : positional.size() == 1
                           ? "missing ERRNO after the operation (a name such as EMFILE, or a number)"
                           : "too many arguments (expected OPERATION ERRNO)");
  }
  const auto op = parse_operation(positional[0]);
  if (!op) {
    return usage_error("unknown operation '" + std::string(positional[0]) +
                       "' (accepted: " + std::string(operations_accepted) + ")");
  }
  std::string problem;
  const auto value = parse_errno(positional[1], problem);
  if (!value) {
    return usage_error(problem);
  }
  print_one(*op, *value, json);
  return 0;
}

}  // namespace transient::tool
