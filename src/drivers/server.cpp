// The epoll server: the shared server (detail/server_core.hpp) over transient::acceptor, each
// loop an epoll set that its acceptors share. Nothing about accepting is decided here.
#include "transient/drivers/server.hpp"

#include <sys/epoll.h>

#include "drivers/server_core.hpp"

namespace transient {

// The epoll driver's steps of the shared server.
struct server::impl final : detail::server_core<impl, acceptor> {
  static constexpr std::string_view name = "transient::server";

  template <typename Handler>
  impl(std::vector<listener> listeners, Handler handler, server_options options)
      : server_core(std::move(listeners), std::move(handler), std::move(options)) {
    open_loops();
  }

  static void check_supported() noexcept {}

  // The acceptors share the loop's epoll set; an event's tag says which acceptor it is for.
  static void add_acceptors(loop& l, const std::vector<std::shared_ptr<const listener>>& listeners,
                            const connection_handler& handler, const acceptor_options& settings) {
    for (std::size_t k = 0; k < listeners.size(); ++k) {
      l.acceptors.emplace_back(l.epoll.get(), listeners[k], detail::tags_of(k), handler, settings);
    }
  }
};

server::server(std::vector<listener> listeners, connection_handler handler, server_options options)
    : impl_(std::make_unique<impl>(std::move(listeners), std::move(handler), std::move(options))) {}

server::server(std::vector<listener> listeners, loop_handler_factory handlers, server_options options)
    : impl_(std::make_unique<impl>(std::move(listeners), std::move(handlers), std::move(options))) {}

server::~server() = default;

stop_info server::run(std::error_code& ec) { return impl_->run(ec); }
stop_info server::run() { return impl_->run(); }
void server::stop() noexcept { impl_->stop(); }
policy_metrics server::metrics() const { return impl_->metrics(); }
policy_health server::health() const { return impl_->health(); }
const connection_budget& server::budget() const noexcept { return impl_->budget(); }
std::vector<endpoint> server::local_endpoints() const { return impl_->local_endpoints(); }
std::vector<std::optional<listen_queue>> server::accept_queues() const { return impl_->accept_queues(); }

}  // namespace transient
