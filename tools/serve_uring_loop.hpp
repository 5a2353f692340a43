// `transient serve --engine io_uring`: one run-to-completion loop whose accept source is a
// transient::uring_acceptor. Its ring's descriptor sits in the loop's epoll set (readable when
// completions wait), so connections are accepted through the ring's multishot accept and
// served on epoll by the same thread, as with the epoll engine.
#pragma once

#include <chrono>
#include <functional>
#include <memory>

#include "serve_loop.hpp"

namespace transient::tool {

/// A serve loop accepting through io_uring (see the file comment). Throws std::system_error:
/// not_supported (and why) where io_uring is unavailable or the command was built without
/// liburing; else as serve_loop.
std::unique_ptr<serve_engine_loop> make_serve_uring_loop(std::chrono::milliseconds idle_timeout, responder respond,
                                                         std::shared_ptr<const listener> source,
                                                         acceptor_options options, std::function<void()> after_accept);

}  // namespace transient::tool
