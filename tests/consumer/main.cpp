// Uses transient as a user would: classifies an error, opens a verified listener, checks the
// version macros. Exits 0 only if everything is as expected.
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <system_error>

#include <transient/errors/classify.hpp>
#include <transient/sockets/listener.hpp>
#include <transient/version.hpp>

#ifndef EXPECTED_VERSION
#define EXPECTED_VERSION ""
#endif

int main() {
  const std::error_code ec(EMFILE, std::system_category());
  const transient::verdict v = transient::classify(transient::operation::accept, ec);
  std::printf("transient %s: accept EMFILE -> %.*s\n", TRANSIENT_VERSION_STRING,
              static_cast<int>(transient::to_string(v.what).size()), transient::to_string(v.what).data());
  if (v.what != transient::action::back_off || ec != transient::condition::fd_exhausted) {
    return 1;
  }
  if (std::strlen(EXPECTED_VERSION) != 0 && std::strcmp(EXPECTED_VERSION, TRANSIENT_VERSION_STRING) != 0) {
    std::printf("version.hpp says %s, expected %s\n", TRANSIENT_VERSION_STRING, EXPECTED_VERSION);
    return 1;
  }
  static_assert(TRANSIENT_VERSION ==
                TRANSIENT_VERSION_MAJOR * 10000 + TRANSIENT_VERSION_MINOR * 100 + TRANSIENT_VERSION_PATCH);
  std::error_code listen_error;
  const transient::listener l = transient::listen(transient::parse_endpoint("127.0.0.1:0"), {}, listen_error);
  if (listen_error) {
    std::printf("listen failed: %s\n", listen_error.message().c_str());
    return 1;
  }
  std::printf("listening on %s\n", l.local_endpoint().to_string().c_str());
  return 0;
}
