// transient_bench_asio: the standalone Asio adapter against the plain async_accept re-arm
// loop (see bench/support/asio_bench.hpp for the figures; transient_bench_boost_asio is the
// same for Boost.Asio).
//
// Usage: transient_bench_asio [--quick]
#include "support/asio_warnings.hpp"  // first: before any Asio header

#include <asio/io_context.hpp>
#include <asio/post.hpp>
#include <system_error>

#include "transient/adapters/asio.hpp"

namespace net = ::asio;
using net_error_code = std::error_code;
namespace adapter = transient::asio;

#include "support/asio_bench.hpp"

int main(int argc, char** argv) { return run_asio_bench(argc, argv, {"plain async_accept conns/s (median)", "asio"}); }
