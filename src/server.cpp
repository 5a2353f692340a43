// The epoll server: the shared server (detail/server_core.hpp) over transient::acceptor, each
// loop an epoll set that its acceptors share. Nothing about accepting is decided here.
#include "transient/server.hpp"

#include <sys/epoll.h>

#include <array>
#include <cerrno>

#include "detail/server_core.hpp"
#include "transient/detail/throw_error.hpp"

namespace transient {

// The epoll driver's steps of the shared server.
struct server::impl final : detail::server_core<impl, acceptor> {
  static constexpr std::string_view name = "transient::server";
  static constexpr int max_events = 64;

  impl(std::vector<listener> listeners, connection_handler handler, server_options options)
      : server_core(std::move(listeners), std::move(handler), std::move(options)) {
    open_loops();
  }

  static void check_supported() noexcept {}
  static void request_stop(acceptor& a) noexcept { a.request_stop(); }

  // One epoll set per loop; an event's tag says which acceptor it is for (tags_of).
  static void add_acceptors(loop& l, const std::vector<std::shared_ptr<const listener>>& listeners,
                            const connection_handler& handler, const acceptor_options& settings) {
    l.epoll.reset(::epoll_create1(EPOLL_CLOEXEC));
    if (!l.epoll) {
      throw std::system_error(detail::last_error(), "epoll_create1");
    }
    for (std::size_t k = 0; k < listeners.size(); ++k) {
      l.acceptors.emplace_back(l.epoll.get(), listeners[k], detail::tags_of(k), handler, settings);
    }
  }

  int wait(loop& l, int timeout, std::error_code& ec) {
    std::array<epoll_event, max_events> events{};
    const int n = options().sys.epoll_wait(l.epoll.get(), events.data(), max_events, timeout);
    if (n < 0 && errno != EINTR) {
      ec = detail::last_error();
    }
    const auto now = clock::now();
    for (int i = 0; i < n; ++i) {
      const epoll_event& e = events[static_cast<std::size_t>(i)];
      const auto index = static_cast<std::size_t>(e.data.u64 / 2);
      if (index < l.acceptors.size()) {
        l.acceptors[index].handle(e, now);
      }
    }
    for (acceptor& a : l.acceptors) {
      a.on_time(now);
    }
    return n;
  }
};

server::server(std::vector<listener> listeners, connection_handler handler, server_options options)
    : impl_(std::make_unique<impl>(std::move(listeners), std::move(handler), std::move(options))) {}

server::~server() = default;

stop_info server::run(std::error_code& ec) { return impl_->run(ec); }
stop_info server::run() { return impl_->run(); }
void server::stop() noexcept { impl_->stop(); }
policy_metrics server::metrics() const { return impl_->metrics(); }
policy_health server::health() const { return impl_->health(); }
const connection_budget& server::budget() const noexcept { return impl_->budget(); }
std::vector<endpoint> server::local_endpoints() const { return impl_->local_endpoints(); }

}  // namespace transient
