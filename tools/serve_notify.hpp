// systemd's readiness protocol (sd_notify(3)): a datagram "READY=1" to $NOTIFY_SOCKET.
#pragma once

#include <string_view>
#include <system_error>

namespace transient::tool {

/// Sends `state` (e.g. "READY=1") to the socket named by NOTIFY_SOCKET: a path, or an abstract
/// name written with a leading '@'. Returns false (and leaves `ec` clear) when the variable is
/// not set; sets `ec` when it is set but the message could not be sent.
bool notify_supervisor(std::string_view state, std::error_code& ec);

}  // namespace transient::tool
