// The io_uring server: the shared server (detail/server_core.hpp) over transient::uring_acceptor,
// each loop a ring per listener it watches and, with several, an epoll set over their rings.
// Accepting is the acceptors' (uring_acceptor.cpp).
#include <sys/epoll.h>

#include <array>
#include <cerrno>

#include "detail/server_core.hpp"
#include "transient/detail/throw_error.hpp"
#include "transient/uring.hpp"

namespace transient {

// The io_uring driver's steps of the shared server.
struct uring_server::impl final : detail::server_core<impl, uring_acceptor> {
  static constexpr std::string_view name = "transient::uring_server";
  static constexpr int max_events = 16;

  impl(std::vector<listener> listeners, connection_handler handler, server_options options, uring_options ring)
      : server_core(std::move(listeners), std::move(handler), std::move(options)), ring_(ring) {
    open_loops();
  }

  static void check_supported() {
    if (std::string why; !uring_available(why)) {
      throw std::system_error(std::make_error_code(std::errc::not_supported), "transient::uring_server: " + why);
    }
  }
  static void request_stop(uring_acceptor& a) noexcept { a.request_stop(); }

  void add_acceptors(loop& l, const std::vector<std::shared_ptr<const listener>>& listeners,
                     const connection_handler& handler, const acceptor_options& settings) const {
    for (const auto& source : listeners) {
      l.acceptors.emplace_back(source, handler, settings, ring_);
    }
    if (l.acceptors.size() > 1) {  // one wait over several rings
      l.epoll.reset(::epoll_create1(EPOLL_CLOEXEC));
      if (!l.epoll) {
        throw std::system_error(detail::last_error(), "epoll_create1");
      }
      for (std::size_t k = 0; k < l.acceptors.size(); ++k) {
        epoll_event event{};
        event.events = EPOLLIN;
        event.data.u64 = k;
        if (::epoll_ctl(l.epoll.get(), EPOLL_CTL_ADD, l.acceptors[k].native_handle(), &event) != 0) {
          throw std::system_error(detail::last_error(), "epoll_ctl(io_uring)");
        }
      }
    }
  }

  // One ring waits in io_uring_enter (which cannot say whether anything came: 1); several in
  // epoll_wait over their descriptors.
  static int wait(loop& l, int timeout, std::error_code& ec) {
    if (!l.epoll) {
      l.acceptors.front().wait(std::chrono::milliseconds(timeout));
      return 1;
    }
    std::array<epoll_event, max_events> events{};
    const int n = ::epoll_wait(l.epoll.get(), events.data(), max_events, timeout);
    if (n < 0 && errno != EINTR) {
      ec = detail::last_error();
    }
    const auto now = clock::now();
    for (int i = 0; i < n; ++i) {
      l.acceptors[events[static_cast<std::size_t>(i)].data.u64].handle(now);
    }
    for (uring_acceptor& a : l.acceptors) {
      a.on_time(now);
    }
    return n;
  }

 private:
  uring_options ring_;
};

uring_server::uring_server(std::vector<listener> listeners, connection_handler handler, server_options options,
                           uring_options ring)
    : impl_(std::make_unique<impl>(std::move(listeners), std::move(handler), std::move(options), ring)) {}

uring_server::~uring_server() = default;

stop_info uring_server::run(std::error_code& ec) { return impl_->run(ec); }
stop_info uring_server::run() { return impl_->run(); }
void uring_server::stop() noexcept { impl_->stop(); }
policy_metrics uring_server::metrics() const { return impl_->metrics(); }
policy_health uring_server::health() const { return impl_->health(); }
std::uint64_t uring_server::submissions() const { return impl_->submissions(); }
const connection_budget& uring_server::budget() const noexcept { return impl_->budget(); }
std::vector<endpoint> uring_server::local_endpoints() const { return impl_->local_endpoints(); }

}  // namespace transient
