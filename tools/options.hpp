// The commands' option tables. Each command declares its options once, as a CLI11 table
// (CLI::App): the option's name, the name of its value, its help, and the callback that checks
// and takes the value. The table parses the command line and prints --help; the functions here
// give every command the same parse, the same one-line usage errors and the same help layout.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "command.hpp"

namespace transient::tool {

/// A command's empty table, named `name` ("transient serve"), whose --help prints `text` (the
/// usage lines and what the command does), then the options, then `footer`.
[[nodiscard]] std::unique_ptr<CLI::App> make_table(std::string name, std::string text, std::string footer = {});

/// Adds to `table` the option `name` ("--listen"), whose value --help shows as `value_name`;
/// `take` checks the value and keeps it, or calls refuse(). Given twice, the last value counts.
CLI::Option* add_value(CLI::App& table, const std::string& name, const std::string& value_name, const std::string& help,
                       const std::function<void(const std::string&)>& take);

/// Adds to `table` the flag `name` ("--json"), which sets `set`.
CLI::Option* add_flag(CLI::App& table, const std::string& name, bool& set, const std::string& help);

/// `text` in single quotes, as usage errors show a value: 'soon'.
[[nodiscard]] std::string in_quotes(std::string_view text);

/// Ends the parse from an option's callback with the usage error `message` (one line).
[[noreturn]] void refuse(const std::string& message);

/// What parse_table found.
struct table_outcome {
  bool help = false;                ///< --help or -h was given, and the help is printed.
  std::string problem;              ///< Non-empty: the usage error (one line, no newline).
  std::vector<std::string> extras;  ///< Words the table has no place for (not options).
};

/// Parses `args` with `table`. --help or -h anywhere prints the help on stdout and wins; an
/// unknown option, an option without its value and a refused value are the problem.
[[nodiscard]] table_outcome parse_table(CLI::App& table, arguments args);

}  // namespace transient::tool
