// `transient`: dispatches to the sub-commands listed below.
#include <array>
#include <iostream>
#include <string_view>
#include <vector>

#include "command.hpp"
#include "transient/version.hpp"

namespace {

struct command_entry {
  std::string_view name;
  std::string_view summary;
  int (*run)(transient::tool::arguments);
};

constexpr std::array commands{
    command_entry{"explain", "what an errno means for a socket operation (or --table)", &transient::tool::explain},
    command_entry{"who", "which processes listen on a port; flags duplicate listeners", &transient::tool::who},
    command_entry{"serve", "an HTTP/1.1 keep-alive responder on transient's accept loop", &transient::tool::serve},
    command_entry{"drill", "runs serve (or --target, any server) through failure scenarios; exit 0 if all pass",
                  &transient::tool::drill},
};

void print_usage(std::ostream& out) {
  out << "usage: transient COMMAND [ARGS...]\n\ncommands:\n";
  for (const auto& command : commands) {
    out << "  " << command.name << std::string(10 - command.name.size(), ' ') << command.summary << '\n';
  }
  out << "\n'transient COMMAND --help' describes a command; 'transient --version' prints the version.\n";
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string_view> args(argv + 1, argv + argc);
  if (args.empty()) {
    print_usage(std::cerr);
    return transient::tool::exit_usage;
  }
  if (args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    print_usage(std::cout);
    return 0;
  }
  if (args[0] == "--version" || args[0] == "-V") {
    std::cout << "transient " << TRANSIENT_VERSION_STRING << '\n';
    return 0;
  }
  for (const auto& command : commands) {
    if (command.name == args[0]) {
      return command.run(transient::tool::arguments(args).subspan(1));
    }
  }
  std::cerr << "transient: unknown command '" << args[0] << "' (try 'transient --help')\n";
  return transient::tool::exit_usage;
}
