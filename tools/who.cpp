// `transient who PORT [--json]`: which processes listen on a port, and whether two sockets
// listen on one address (a duplicate listener: exit 1).
#include <algorithm>
#include <iomanip>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "command.hpp"
#include "json.hpp"
#include "options.hpp"
#include "transient/sockets/listener.hpp"

namespace transient::tool {
namespace {

constexpr std::string_view who_text =
    "usage: transient who PORT [--json]\n"
    "\n"
    "Lists every LISTEN socket on PORT in this network namespace (from a netlink sock_diag\n"
    "dump, or /proc/net/tcp and tcp6 where that is unavailable) with the processes holding\n"
    "it (from /proc/PID/fd): address, accept queue, pid, command and socket inode. The\n"
    "queue is QUEUED/LIMIT, as ss -ltn shows Recv-Q and Send-Q: connections waiting to be\n"
    "accepted and the most the queue holds (LIMIT is ? from /proc/net/tcp, which does not\n"
    "show it). Processes that cannot be read (another user's, without privilege) are\n"
    "reported as unknown owners.\n"
    "\n"
    "Exit status: 0 listeners listed (or none), 1 two sockets listen on one address\n"
    "(a duplicate listener, e.g. a SO_REUSEPORT group nobody meant), 2 bad usage.\n";

int usage_error(const std::string& message) {
  std::cerr << "transient who: " << message << '\n';
  return exit_usage;
}

std::optional<std::uint16_t> parse_port(std::string_view text) {
  if (text.empty() || text.size() > 5 ||
      !std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return std::nullopt;
  }
  const unsigned long value = std::stoul(std::string(text));
  if (value < 1 || value > 65535) {
    return std::nullopt;
  }
  return static_cast<std::uint16_t>(value);
}

// duplicate[i]: entry i shares its address (or overlaps it as wildcard/specific) with another.
std::vector<bool> find_duplicates(const std::vector<listen_entry>& entries) {
  std::vector<bool> duplicate(entries.size(), false);
  for (std::size_t i = 0; i < entries.size(); ++i) {
    for (std::size_t j = i + 1; j < entries.size(); ++j) {
      if (addresses_overlap(entries[i].address, entries[j].address)) {
        duplicate[i] = duplicate[j] = true;
      }
    }
  }
  return duplicate;
}

std::string unknown_owner_text(const listen_entry& entry) {
  return entry.owners_unknown()
             ? "(unknown: " + std::to_string(entry.unreadable_processes) + " processes could not be read)"
             : "(no process found)";
}

// "3/8": connections waiting and the queue's limit, "3/?" when the limit is unknown.
std::string queue_cell(const listen_entry& entry) {
  return std::to_string(entry.queued) + '/' + (entry.queue_limit ? std::to_string(*entry.queue_limit) : "?");
}

// The JSON value of the queue's limit: null when unknown.
std::string queue_limit_json(const listen_entry& entry) {
  return entry.queue_limit ? std::to_string(*entry.queue_limit) : "null";
}

constexpr std::size_t max_command_width = 60;

// A table cell for a command line. The program's name is what a reader looks for, so a long
// command loses its directories first ("/very/long/path/prog --flag" -> ".../prog --flag") and
// only then its tail. The JSON form always carries the whole command.
std::string command_cell(const std::string& command) {
  if (command.size() <= max_command_width) {
    return command;
  }
  std::string shown = command;
  const std::size_t program_end = std::min(command.find(' '), command.size());
  const std::size_t slash = command.rfind('/', program_end == 0 ? 0 : program_end - 1);
  if (slash != std::string::npos && slash < program_end) {
    shown = ".../" + command.substr(slash + 1);
  }
  if (shown.size() > max_command_width) {
    shown = shown.substr(0, max_command_width - 3) + "...";
  }
  return shown;
}

void print_table(std::uint16_t port, const std::vector<listen_entry>& entries, const std::vector<bool>& duplicate) {
  if (entries.empty()) {
    std::cout << "nobody listens on port " << port << '\n';
    return;
  }
  std::size_t width = 7;
  std::size_t queue_width = 5;
  std::size_t command_width = 7;
  for (const auto& entry : entries) {
    width = std::max(width, entry.address.to_string().size());
    queue_width = std::max(queue_width, queue_cell(entry).size());
    command_width = std::max(command_width, unknown_owner_text(entry).size());
    for (const auto& owner : entry.owners) {
      command_width = std::max(command_width, command_cell(printable(owner.command)).size());
    }
  }
  const auto row = [&](const std::string& address, const std::string& queue, const std::string& pid,
                       const std::string& command, const std::string& inode, bool flagged) {
    std::cout << std::left << std::setw(static_cast<int>(width) + 2) << address
              << std::setw(static_cast<int>(queue_width) + 2) << queue << std::setw(9) << pid
              << std::setw(static_cast<int>(command_width) + 2) << command << inode << (flagged ? "  DUPLICATE" : "")
              << '\n';
  };
  row("ADDRESS", "QUEUE", "PID", "COMMAND", "INODE", false);
  for (std::size_t i = 0; i < entries.size(); ++i) {
    const auto& entry = entries[i];
    const std::string inode = std::to_string(entry.inode);
    if (entry.owners.empty()) {
      row(entry.address.to_string(), queue_cell(entry), "?", unknown_owner_text(entry), inode, duplicate[i]);
    }
    for (const auto& owner : entry.owners) {
      row(entry.address.to_string(), queue_cell(entry), std::to_string(owner.pid),
          command_cell(printable(owner.command)), inode, duplicate[i]);
    }
  }
}

void print_json(std::uint16_t port, const std::vector<listen_entry>& entries, const std::vector<bool>& duplicate,
                bool any_duplicate) {
  std::ostringstream out;
  out << "{\"port\":" << port << ",\"duplicate\":" << (any_duplicate ? "true" : "false") << ",\"listeners\":[";
  for (std::size_t i = 0; i < entries.size(); ++i) {
    const auto& entry = entries[i];
    out << (i == 0 ? "" : ",") << "{\"address\":" << json_quote(entry.address.to_string())
        << ",\"inode\":" << entry.inode << ",\"cookie\":" << entry.cookie << ",\"uid\":" << entry.uid
        << ",\"queued\":" << entry.queued << ",\"queue_limit\":" << queue_limit_json(entry)
        << ",\"duplicate\":" << (duplicate[i] ? "true" : "false")
        << ",\"owners_unknown\":" << (entry.owners_unknown() ? "true" : "false") << ",\"owners\":[";
    for (std::size_t k = 0; k < entry.owners.size(); ++k) {
      out << (k == 0 ? "" : ",") << "{\"pid\":" << entry.owners[k].pid
          << ",\"command\":" << json_quote(entry.owners[k].command) << '}';
    }
    out << "]}";
  }
  out << "]}\n";
  std::cout << out.str();
}

// Lists the listeners on `port`; 1 if two listen on one address.
int report(std::uint16_t port, bool json) {
  std::error_code ec;
  const auto entries = who_listens(port, ec);
  if (ec) {
    std::cerr << "transient who: cannot read the kernel's LISTEN sockets (sock_diag, /proc/net/tcp): " << ec.message()
              << '\n';
    return 1;
  }
  const auto duplicate = find_duplicates(entries);
  const bool any_duplicate = std::find(duplicate.begin(), duplicate.end(), true) != duplicate.end();
  if (json) {
    print_json(port, entries, duplicate, any_duplicate);
  } else {
    print_table(port, entries, duplicate);
    if (any_duplicate) {
      std::cout << "duplicate listener: more than one socket listens on one address of port " << port
                << "; connections are split between them\n";
    }
  }
  return any_duplicate ? 1 : 0;
}

}  // namespace

int who(arguments args) {
  bool json = false;
  std::string port_text;
  const auto table = make_table("transient who", std::string(who_text));
  table->add_option("PORT", port_text, "a TCP port, 1-65535")->type_name("");
  add_flag(*table, "--json", json,
           "one JSON object: port, duplicate, listeners[address, inode, cookie (0:\nunknown, from /proc), uid, "
           "queued, queue_limit (null: unknown, from\n/proc), duplicate, owners_unknown, owners[pid, command]]");
  const table_outcome parsed = parse_table(*table, args);
  if (parsed.help) {
    return 0;
  }
  if (!parsed.problem.empty()) {
    return usage_error(parsed.problem);
  }
  if (!parsed.extras.empty()) {
    return usage_error("expected one PORT, got " + in_quotes(port_text) + " and " + in_quotes(parsed.extras.front()));
  }
  if (table->count("PORT") == 0) {
    return usage_error("missing PORT (usage: transient who PORT [--json])");
  }
  const auto port = parse_port(port_text);
  if (!port) {
    return usage_error(in_quotes(port_text) + " is not a TCP port (expected a number from 1 to 65535)");
  }
  return report(*port, json);
}

}  // namespace transient::tool
