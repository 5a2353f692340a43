// The accept engines of `transient serve` (see serve_uring_loop.hpp).
#include "serve_uring_loop.hpp"

#include <utility>

#include "transient/detail/throw_error.hpp"
#if TRANSIENT_HAVE_URING
#include "transient/uring.hpp"
#endif

namespace transient::tool {
namespace {

// What every engine passes to its acceptor as it is; an engine adds its constructor and how it
// recognises its events.
template <typename Acceptor>
class engine_over : public accept_engine {
 public:
  void on_time(clock::time_point now) override { acceptor_.on_time(now); }
  [[nodiscard]] int timeout_ms(clock::time_point now) const noexcept override { return acceptor_.timeout_ms(now); }
  void stop() noexcept override { acceptor_.stop(); }
  [[nodiscard]] bool done() const noexcept override { return acceptor_.done(); }
  [[nodiscard]] const stop_info& result() const noexcept override { return acceptor_.result(); }
  [[nodiscard]] policy_metrics metrics() const noexcept override { return acceptor_.metrics(); }
  [[nodiscard]] policy_health health() const noexcept override { return acceptor_.health(); }
  [[nodiscard]] const std::shared_ptr<shared_budget>& budget() const noexcept override { return acceptor_.budget(); }
  [[nodiscard]] const endpoint& local_endpoint() const noexcept override { return acceptor_.local_endpoint(); }

 protected:
  template <typename... Args>
  explicit engine_over(Args&&... args) : acceptor_(std::forward<Args>(args)...) {}
  [[nodiscard]] Acceptor& accepting() noexcept { return acceptor_; }

 private:
  Acceptor acceptor_;
};

class epoll_engine final : public engine_over<acceptor> {
 public:
  epoll_engine(int epoll_fd, std::uint64_t first_tag, std::shared_ptr<const listener> source,
               connection_handler handler, acceptor_options options)
      : engine_over(epoll_fd, std::move(source), acceptor_tags{first_tag, first_tag + 1}, std::move(handler),
                    std::move(options)) {}
  bool handle(const epoll_event& event, clock::time_point now) override { return accepting().handle(event, now); }
};

#if TRANSIENT_HAVE_URING
class uring_engine final : public engine_over<uring_acceptor> {
 public:
  uring_engine(int epoll_fd, std::uint64_t tag, std::shared_ptr<const listener> source, connection_handler handler,
               acceptor_options options)
      : engine_over(std::move(source), std::move(handler), std::move(options)), tag_(tag) {
    epoll_event event{};
    event.events = EPOLLIN;
    event.data.u64 = tag_;
    // The ring's descriptor closes with the acceptor, which takes it out of the epoll set.
    if (::epoll_ctl(epoll_fd, EPOLL_CTL_ADD, accepting().native_handle(), &event) != 0) {
      throw std::system_error(transient::detail::last_error(), "serve: epoll_ctl(io_uring)");
    }
  }
  bool handle(const epoll_event& event, clock::time_point now) override {
    if (event.data.u64 != tag_) {
      return false;
    }
    accepting().handle(now);
    return true;
  }

 private:
  std::uint64_t tag_;
};
#endif

}  // namespace

std::unique_ptr<accept_engine> make_accept_engine(serve_engine engine, int epoll_fd, std::uint64_t first_tag,
                                                  std::shared_ptr<const listener> source, connection_handler handler,
                                                  acceptor_options options) {
  if (engine == serve_engine::epoll) {
    return std::make_unique<epoll_engine>(epoll_fd, first_tag, std::move(source), std::move(handler),
                                          std::move(options));
  }
#if TRANSIENT_HAVE_URING
  return std::make_unique<uring_engine>(epoll_fd, first_tag, std::move(source), std::move(handler), std::move(options));
#else
  throw std::system_error(std::make_error_code(std::errc::not_supported),
                          "--engine io_uring: this transient was built without liburing (Debian: liburing-dev)");
#endif
}

}  // namespace transient::tool
