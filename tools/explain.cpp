// `transient explain [--platform P] OPERATION CODE [--json]` and
// `transient explain --table [--platform P]`.
#include <cctype>
#include <charconv>
#include <iostream>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

#include "command.hpp"
#include "json.hpp"
#include "options.hpp"
#include "transient/errors/classify.hpp"

namespace transient::tool {
namespace {

constexpr std::string_view explain_text =
    "usage: transient explain [--platform PLATFORM] OPERATION ERRNO [--json]\n"
    "       transient explain --table [--platform PLATFORM]\n"
    "\n"
    "Says what an error means for one socket operation: the action to take, every\n"
    "condition the error matches, and advice.\n";

// What the command line asks.
struct explain_request {
  std::string operation;             // OPERATION
  std::string code;                  // ERRNO
  bool json = false;                 // --json
  bool table = false;                // --table
  platform on = platform::linux_os;  // --platform
};

std::unique_ptr<CLI::App> explain_table(explain_request& r) {
  auto table = make_table("transient explain", std::string(explain_text));
  table
      ->add_option("OPERATION", r.operation,
                   "accept, connect, read, write, bind or listen (recv and send are read\nand write, accept4 is "
                   "accept)")
      ->type_name("");
  table->add_option("ERRNO", r.code, "a name (EMFILE, emfile, EWOULDBLOCK) or a number (24)")->type_name("");
  add_flag(*table, "--json", r.json,
           "one JSON object: operation, errno, value, action, decided_by,\nconditions, advice");
  add_flag(*table, "--table", r.table, "the whole table as Markdown: every classified errno by operation");
  add_value(*table, "--platform", "PLATFORM",
            "linux (the default), freebsd, macos or windows: that platform's\ncodes (WSAEMFILE, 10024; on the BSDs "
            "ECONNABORTED is 53) and their\ntable; each is classified by the Linux errno of the same meaning",
            [&r](const std::string& v) {
              const auto parsed = parse_platform(v);
              if (!parsed) {
                refuse("unknown platform " + in_quotes(v) + " (accepted: linux, freebsd, macos, windows)");
              }
              r.on = *parsed;
            });
  return table;
}

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

// The code named or numbered `text` on platform `p` (not Linux).
std::optional<platform_error> parse_platform_code(platform p, std::string_view text, std::string& problem) {
  const bool numeric = !text.empty() && std::isdigit(static_cast<unsigned char>(text[0])) != 0;
  std::optional<platform_error> found;
  if (numeric) {
    int value = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec == std::errc{} && end == text.data() + text.size()) {
      found = find_platform_error(p, value);
    }
  } else {
    found = find_platform_error(p, text);
  }
  if (!found) {
    problem.assign(1, '\'').append(text);  // appended: g++ 12's false -Wrestrict (GCC bug 105329)
    problem += "' is not a socket error code transient knows on " + std::string(to_string(p)) +
               " (see 'transient explain --table --platform " + std::string(to_string(p)) + "')";
  }
  return found;
}

void print_platform_one(platform p, operation op, const platform_error& e, bool json) {
  const std::error_code same(e.linux_errno, std::system_category());
  const verdict v = classify(p, op, e.value);
  if (json) {
    std::cout << "{\"platform\":" << json_quote(to_string(p)) << ",\"operation\":" << json_quote(to_string(op))
              << ",\"errno\":" << json_quote(e.name) << ",\"value\":" << e.value
              << ",\"linux_errno\":" << json_quote(errno_name(e.linux_errno))
              << ",\"action\":" << json_quote(to_string(v.what)) << ",\"decided_by\":" << json_quote(to_string(v.why))
              << ",\"conditions\":[" << conditions_text(same, ",", true) << "],\"advice\":" << json_quote(v.advice)
              << "}\n";
    return;
  }
  std::cout << to_string(op) << ' ' << e.name << " (" << e.value << " on " << to_string(p) << "): " << to_string(v.what)
            << '\n'
            << "  same as:    " << errno_name(e.linux_errno) << " on Linux\n"
            << "  decided by: " << to_string(v.why) << '\n'
            << "  conditions: " << conditions_text(same, ", ", false) << '\n'
            << "  advice:     " << v.advice << '\n';
}

void print_platform_table(platform p) {
  std::cout << "| " << to_string(p) << " code | value | as Linux | conditions |";
  for (int op = 0; op < operation_count; ++op) {
    std::cout << ' ' << to_string(static_cast<operation>(op)) << " |";
  }
  std::cout << "\n|---|---|---|---|";
  for (int op = 0; op < operation_count; ++op) {
    std::cout << "---|";
  }
  std::cout << '\n';
  for (const platform_error& e : platform_errors(p)) {
    const std::error_code same(e.linux_errno, std::system_category());
    std::cout << "| " << e.name << " | " << e.value << " | " << errno_name(e.linux_errno) << " | "
              << conditions_text(same, ", ", false) << " |";
    for (int op = 0; op < operation_count; ++op) {
      const verdict v = classify(p, static_cast<operation>(op), e.value);
      std::cout << ' ' << to_string(v.what) << " (" << to_string(v.why) << ") |";
    }
    std::cout << '\n';
  }
  std::cout << "| anything else | | | unclassified |";
  for (int op = 0; op < operation_count; ++op) {
    std::cout << ' ' << to_string(classify(p, static_cast<operation>(op), -1).what) << " |";
  }
  std::cout << '\n';
}

// Explains r.code for r.operation, on r.on.
int explain_one(const explain_request& r) {
  const auto op = parse_operation(r.operation);
  if (!op) {
    return usage_error("unknown operation " + in_quotes(r.operation) +
                       " (accepted: " + std::string(operations_accepted) + ")");
  }
  std::string problem;
  if (r.on != platform::linux_os) {
    const auto code = parse_platform_code(r.on, r.code, problem);
    if (!code) {
      return usage_error(problem);
    }
    print_platform_one(r.on, *op, *code, r.json);
    return 0;
  }
  const auto value = parse_errno(r.code, problem);
  if (!value) {
    return usage_error(problem);
  }
  print_one(*op, *value, r.json);
  return 0;
}

}  // namespace

int explain(arguments args) {
  explain_request r;
  const auto table = explain_table(r);
  const table_outcome parsed = parse_table(*table, args);
  if (parsed.help) {
    return 0;
  }
  const std::size_t given = table->count("OPERATION") + table->count("ERRNO");
  if (!parsed.problem.empty() || !parsed.extras.empty()) {
    return usage_error(parsed.problem.empty() ? "too many arguments (expected OPERATION ERRNO)" : parsed.problem);
  }
  if (r.table) {
    if (given > 0 || r.json) {
      return usage_error("--table takes no other argument");
    }
    if (r.on == platform::linux_os) {
      print_table();
    } else {
      print_platform_table(r.on);
    }
    return 0;
  }
  if (given != 2) {
    return usage_error(given == 0 ? "missing OPERATION and ERRNO (e.g. 'transient explain accept EMFILE')"
                                  : "missing ERRNO after the operation (a name such as EMFILE, or a number)");
  }
  return explain_one(r);
}

}  // namespace transient::tool
