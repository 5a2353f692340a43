// The io_uring engine of `transient serve` (see serve_uring_loop.hpp).
#include "serve_uring_loop.hpp"

#include <algorithm>

#if TRANSIENT_HAVE_URING
#include "transient/detail/throw_error.hpp"
#include "transient/uring.hpp"
#endif

namespace transient::tool {

#if TRANSIENT_HAVE_URING
namespace {

// The ring's epoll tag, above every descriptor number (connections use those).
constexpr std::uint64_t ring_tag = accept_source::first_source_tag;

class serve_uring_loop final : public accept_source, public serve_engine_loop {
 public:
  serve_uring_loop(std::chrono::milliseconds idle_timeout, responder respond, std::shared_ptr<const listener> source,
                   acceptor_options options, std::function<void()> after_accept)
      : io_(idle_timeout, std::move(respond)),
        acceptor_(
            std::move(source),
            [this, after = std::move(after_accept)](connection c) {
              io_.add(std::move(c));
              if (after) {
                after();
              }
            },
            std::move(options)) {
    epoll_event event{};
    event.events = EPOLLIN;
    event.data.u64 = ring_tag;
    if (::epoll_ctl(io_.epoll_fd(), EPOLL_CTL_ADD, acceptor_.native_handle(), &event) != 0) {
      throw std::system_error(transient::detail::last_error(), "serve: epoll_ctl(io_uring)");
    }
  }
  serve_uring_loop(const serve_uring_loop&) = delete;
  serve_uring_loop& operator=(const serve_uring_loop&) = delete;
  ~serve_uring_loop() override = default;

  void run() override {
    next_publish_ = clock::now() + publish_every;
    io_.run(*this);
    publish();
  }
  void stop() noexcept override { acceptor_.stop(); }
  [[nodiscard]] const stop_info& result() const noexcept override { return acceptor_.result(); }
  [[nodiscard]] policy_metrics metrics() const override {
    const std::lock_guard lock(mutex_);
    return published_;
  }
  [[nodiscard]] const std::shared_ptr<shared_budget>& budget() const noexcept override { return acceptor_.budget(); }
  [[nodiscard]] const endpoint& local_endpoint() const noexcept override { return acceptor_.local_endpoint(); }
  [[nodiscard]] connection_loop& connections() noexcept override { return io_; }

  bool handle(const epoll_event& event, clock::time_point now) override {
    if (event.data.u64 != ring_tag) {
      return false;
    }
    acceptor_.handle(now);
    changed_ = true;
    return true;
  }
  void on_time(clock::time_point now) override {
    acceptor_.on_time(now);
    if (now >= next_publish_) {
      if (changed_) {
        publish();
      }
      next_publish_ = now + publish_every;
    }
  }
  [[nodiscard]] int timeout_ms(clock::time_point now) const override {
    const int accept_timeout = acceptor_.timeout_ms(now);
    if (!changed_) {
      return accept_timeout;
    }
    const auto until_publish =
        std::max<std::int64_t>(0, std::chrono::ceil<std::chrono::milliseconds>(next_publish_ - now).count());
    const int publish_timeout = static_cast<int>(std::min<std::int64_t>(until_publish, publish_every.count()));
    return accept_timeout < 0 ? publish_timeout : std::min(accept_timeout, publish_timeout);
  }
  [[nodiscard]] bool done() const override { return acceptor_.done(); }

 private:
  static constexpr auto publish_every = std::chrono::milliseconds(100);
  void publish() {
    const policy_metrics now = acceptor_.metrics();
    const std::lock_guard lock(mutex_);
    published_ = now;
    changed_ = false;
  }

  connection_loop io_;  // first: the ring's descriptor is in its epoll set
  uring_acceptor acceptor_;
  mutable std::mutex mutex_;  // guards published_
  policy_metrics published_;
  clock::time_point next_publish_{};
  bool changed_ = false;
};

}  // namespace

std::unique_ptr<serve_engine_loop> make_serve_uring_loop(std::chrono::milliseconds idle_timeout, responder respond,
                                                         std::shared_ptr<const listener> source,
                                                         acceptor_options options, std::function<void()> after_accept) {
  return std::make_unique<serve_uring_loop>(idle_timeout, std::move(respond), std::move(source), std::move(options),
                                            std::move(after_accept));
}

#else

std::unique_ptr<serve_engine_loop> make_serve_uring_loop(std::chrono::milliseconds /*idle_timeout*/,
                                                         responder /*respond*/,
                                                         std::shared_ptr<const listener> /*source*/,
                                                         acceptor_options /*options*/,
                                                         std::function<void()> /*after_accept*/) {
  throw std::system_error(std::make_error_code(std::errc::not_supported),
                          "--engine io_uring: this transient was built without liburing (Debian: liburing-dev)");
}

#endif

}  // namespace transient::tool
