#include "command.hpp"
namespace transient::tool {
int drill(arguments) { return 1; }
}  // namespace transient::tool
