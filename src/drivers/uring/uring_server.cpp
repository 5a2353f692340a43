// The io_uring server: the shared server (detail/server_core.hpp) over transient::uring_acceptor,
// each loop a ring per listener it watches, whose descriptor sits in the loop's epoll set.
// Accepting is the acceptors' (uring_acceptor.cpp).
#include "drivers/server_core.hpp"
#include "transient/drivers/uring.hpp"

namespace transient {

// The io_uring driver's steps of the shared server.
struct uring_server::impl final : detail::server_core<impl, uring_acceptor> {
  static constexpr std::string_view name = "transient::uring_server";

  template <typename Handler>
  impl(std::vector<listener> listeners, Handler handler, server_options options, uring_options ring)
      : server_core(std::move(listeners), std::move(handler), std::move(options)), ring_(ring) {
    open_loops();
  }

  static void check_supported() {
    if (std::string why; !uring_available(why)) {
      throw std::system_error(std::make_error_code(std::errc::not_supported), "transient::uring_server: " + why);
    }
  }

  // A ring per listener, its descriptor in the loop's epoll set (readable when completions wait).
  void add_acceptors(loop& l, const std::vector<std::shared_ptr<const listener>>& listeners,
                     const connection_handler& handler, const acceptor_options& settings) const {
    for (std::size_t k = 0; k < listeners.size(); ++k) {
      l.acceptors.emplace_back(l.epoll.get(), listeners[k], detail::tags_of(k), handler, settings, ring_);
    }
  }

 private:
  uring_options ring_;
};

uring_server::uring_server(std::vector<listener> listeners, connection_handler handler, server_options options,
                           uring_options ring)
    : impl_(std::make_unique<impl>(std::move(listeners), std::move(handler), std::move(options), ring)) {}

uring_server::uring_server(std::vector<listener> listeners, loop_handler_factory handlers, server_options options,
                           uring_options ring)
    : impl_(std::make_unique<impl>(std::move(listeners), std::move(handlers), std::move(options), ring)) {}

uring_server::~uring_server() = default;

stop_info uring_server::run(std::error_code& ec) { return impl_->run(ec); }
stop_info uring_server::run() { return impl_->run(); }
void uring_server::stop() noexcept { impl_->stop(); }
policy_metrics uring_server::metrics() const { return impl_->metrics(); }
policy_health uring_server::health() const { return impl_->health(); }
std::uint64_t uring_server::submissions() const { return impl_->submissions(); }
const connection_budget& uring_server::budget() const noexcept { return impl_->budget(); }
std::vector<endpoint> uring_server::local_endpoints() const { return impl_->local_endpoints(); }
std::vector<std::optional<listen_queue>> uring_server::accept_queues() const { return impl_->accept_queues(); }

}  // namespace transient
