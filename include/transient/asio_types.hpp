// transient/asio_types.hpp: the public types of the standalone Asio adapter (asio.hpp): its
// options, the socket it hands out, its report, and the budget its loops share. They are
// written once for both flavours of Asio (asio_flavour_types.hpp); this header instantiates
// them for standalone Asio in namespace transient::asio.
#pragma once

#if !defined(ASIO_STANDALONE) && !defined(ASIO_VERSION)
#define ASIO_STANDALONE 1  // the adapter is for standalone Asio, without Boost
#endif

#include <asio/any_io_executor.hpp>
#include <asio/ip/tcp.hpp>
#include <system_error>

#define TRANSIENT_ASIO_FLAVOUR asio
#define TRANSIENT_ASIO_NET ::asio
#define TRANSIENT_ASIO_ERROR_CODE std::error_code
#include "transient/asio_flavour_types.hpp"  // IWYU pragma: export
#undef TRANSIENT_ASIO_FLAVOUR
#undef TRANSIENT_ASIO_NET
#undef TRANSIENT_ASIO_ERROR_CODE
