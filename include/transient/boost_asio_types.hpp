// transient/boost_asio_types.hpp: the public types of the Boost.Asio adapter
// (boost_asio.hpp), the same as standalone Asio's (asio_types.hpp) in namespace
// transient::boost_asio: loop_options, accepted_socket, loop_report, refusal_writer,
// shared_budget. Written once for both flavours (asio_flavour_types.hpp).
#pragma once

#include <utility>  // first: Boost 1.74's awaitable.hpp uses std::exchange without including it (C++20)

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/system/error_code.hpp>

#define TRANSIENT_ASIO_FLAVOUR boost_asio
#define TRANSIENT_ASIO_NET ::boost::asio
#define TRANSIENT_ASIO_ERROR_CODE ::boost::system::error_code
#include "transient/asio_flavour_types.hpp"  // IWYU pragma: export
#undef TRANSIENT_ASIO_FLAVOUR
#undef TRANSIENT_ASIO_NET
#undef TRANSIENT_ASIO_ERROR_CODE
