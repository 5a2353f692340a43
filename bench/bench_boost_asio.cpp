// transient_bench_boost_asio: the Boost.Asio adapter against the plain Boost async_accept
// re-arm loop (Beast's listener does the same), with the figures of transient_bench_asio
// (see bench/support/asio_bench.hpp) under JSON keys starting "boost_asio_".
//
// Usage: transient_bench_boost_asio [--quick]
#include "transient/adapters/boost_asio.hpp"  // first: it includes <utility> before Boost.Asio (g++ 12, C++20)

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/system/error_code.hpp>

namespace net = ::boost::asio;
using net_error_code = ::boost::system::error_code;
namespace adapter = transient::boost_asio;

#include "support/asio_bench.hpp"

int main(int argc, char** argv) {
  return run_asio_bench(argc, argv, {"plain Boost async_accept conns/s (median)", "boost_asio"});
}
