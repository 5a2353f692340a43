// Parsing and help of the commands' option tables (options.hpp).
#include "options.hpp"

#include <algorithm>
#include <iostream>
#include <stdexcept>
#include <utility>

namespace transient::tool {
namespace {

// The help's layout: the command's own text (usage lines first), then the options in columns
// wide enough for serve's longest "--option VALUE", then the footer. CLI11's "Usage:" line is
// left out: the command's text gives its usage lines, which say more.
class table_formatter final : public CLI::Formatter {
 public:
  table_formatter() { column_width(27); }
  std::string make_usage(const CLI::App* /*app*/, std::string /*name*/) const override { return {}; }
  // The option's value only: its group and help say what it needs and excludes.
  std::string make_option_opts(const CLI::Option* option) const override {
    return option->get_type_name().empty() ? std::string() : " " + option->get_type_name();
  }
  // CLI11 puts two blank lines between its parts; one is enough.
  std::string make_help(const CLI::App* app, std::string name, CLI::AppFormatMode mode) const override {
    std::string help = CLI::Formatter::make_help(app, std::move(name), mode);
    for (std::size_t at = help.find("\n\n\n"); at != std::string::npos; at = help.find("\n\n\n", at)) {
      help.erase(at, 1);
    }
    return help;
  }
};

// What refuse() throws: a value's usage error, worded by the option's callback.
struct refused : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The one line for a parse error CLI11 raised; a missing value is named after its option.
std::string problem_of(const CLI::ParseError& e, const CLI::App& table) {
  const std::string what = e.what();
  const std::string try_help = " (try '" + table.get_name() + " --help')";
  if (dynamic_cast<const CLI::ArgumentMismatch*>(&e) != nullptr) {
    return what.substr(0, what.find(':')) + " needs a value" + try_help;
  }
  return what + try_help;
}

}  // namespace

std::unique_ptr<CLI::App> make_table(std::string name, std::string text, std::string footer) {
  auto table = std::make_unique<CLI::App>(std::move(text), std::move(name));
  table->formatter(std::make_shared<table_formatter>());
  table->footer(std::move(footer));
  table->allow_extras();  // parse_table words what the table has no place for
  table->option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  return table;
}

CLI::Option* add_value(CLI::App& table, const std::string& name, const std::string& value_name, const std::string& help,
                       const std::function<void(const std::string&)>& take) {
  return table.add_option_function<std::string>(name, take, help)->type_name(value_name);
}

CLI::Option* add_flag(CLI::App& table, const std::string& name, bool& set, const std::string& help) {
  return table.add_flag(name, set, help);
}

// Appended piece by piece: `"'" + std::string(s)` trips g++ 12's false -Wrestrict at -O3 (GCC bug 105329).
std::string in_quotes(std::string_view text) { return std::string(1, '\'').append(text).append(1, '\''); }

void refuse(const std::string& message) { throw refused(message); }

table_outcome parse_table(CLI::App& table, arguments args) {
  table_outcome out;
  if (std::find_if(args.begin(), args.end(), [](std::string_view a) { return a == "--help" || a == "-h"; }) !=
      args.end()) {
    std::cout << table.help();
    out.help = true;
    return out;
  }
  std::vector<std::string> reversed(args.rbegin(), args.rend());  // CLI11 takes the words last first
  try {
    table.parse(reversed);
  } catch (const refused& e) {
    out.problem = e.what();
    return out;
  } catch (const CLI::ParseError& e) {
    out.problem = problem_of(e, table);
    return out;
  }
  for (const std::string& word : table.remaining()) {
    if (word.size() > 1 && word[0] == '-' && (word[1] < '0' || word[1] > '9')) {  // "-1" is a value
      out.problem = "unknown option " + in_quotes(word) + " (try '" + table.get_name() + " --help')";
      return out;
    }
    out.extras.push_back(word);
  }
  return out;
}

}  // namespace transient::tool
