// Uses the installed transient package: prints a verdict and exits 0 if it is the expected one.
#include <cerrno>
#include <cstdio>
#include <system_error>

#include <transient/classify.hpp>

int main() {
  const std::error_code ec(EMFILE, std::system_category());
  const transient::verdict v = transient::classify(transient::operation::accept, ec);
  std::printf("accept EMFILE -> %.*s\n", static_cast<int>(transient::to_string(v.what).size()),
              transient::to_string(v.what).data());
  const bool ok = v.what == transient::action::back_off && ec == transient::condition::fd_exhausted;
  return ok ? 0 : 1;
}
