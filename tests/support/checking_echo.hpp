// A loop handler that echoes and checks the loop's contract (transient/drivers/server.hpp) as it goes,
// for the tests of servers that serve on the accepting loop.
#pragma once

#include <sys/epoll.h>
#include <sys/socket.h>

#include <array>
#include <atomic>
#include <chrono>
#include <map>
#include <stdexcept>
#include <thread>

#include "transient/drivers/server.hpp"

namespace transient::test {

/// What the handlers of one server saw, across its loops.
struct loop_record {
  std::atomic<int> handlers{0};          ///< Handlers made.
  std::atomic<int> wrong_thread{0};      ///< Calls on another thread than the handler's loop.
  std::atomic<int> accepted{0};          ///< Connections handed to a handler.
  std::atomic<int> accepting_ended{0};   ///< on_accepting_end() calls.
  std::atomic<int> unwatched_events{0};  ///< Events of a descriptor the handler had unwatched.
  std::atomic<int> timers{0};            ///< on_time() calls at or after next_timer().
  bool keep_after_stop = false;          ///< Keep connections after the stop until they end.
  bool throw_on_input = false;           ///< on_ready throws.
  bool close_all_on_input = false;
  bool forget_on_close =
      false;  ///< Close with forget() rather than unwatch().       ///< The first input closes every connection held.
  std::chrono::milliseconds timer{0};  ///< next_timer() this long after the handler is made.
};

/// An echo handler that checks the loop's contract as it goes.
class checking_echo final : public loop_handler, public io_watcher {
 public:
  checking_echo(loop& l, loop_record& record)
      : loop_(l),
        record_(record),
        thread_(std::this_thread::get_id()),
        due_(record.timer.count() > 0 ? l.now() + record.timer : time_point::max()) {
    ++record_.handlers;
  }
  ~checking_echo() override { close_all(); }
  checking_echo(const checking_echo&) = delete;
  checking_echo& operator=(const checking_echo&) = delete;

  void on_connection(connection c) override {
    check_thread();
    loop_.watch(c.native_handle(), EPOLLIN, *this);
    open_.emplace(c.native_handle(), std::move(c));
    ++record_.accepted;
  }
  void on_ready(int fd, std::uint32_t /*events*/) override {
    check_thread();
    if (open_.find(fd) == open_.end()) {
      ++record_.unwatched_events;
      return;
    }
    if (record_.throw_on_input) {
      throw std::runtime_error("handler failed on purpose");
    }
    if (record_.close_all_on_input) {
      close_all();
      return;
    }
    std::array<char, 512> buffer{};
    const ssize_t n = ::recv(fd, buffer.data(), buffer.size(), 0);
    if (n <= 0 || ::send(fd, buffer.data(), static_cast<std::size_t>(n), MSG_NOSIGNAL) != n) {
      close(fd);
    }
  }
  void on_accepting_end() override {
    check_thread();
    ++record_.accepting_ended;
    if (!record_.keep_after_stop) {
      close_all();
    }
  }
  [[nodiscard]] time_point next_timer() const noexcept override { return due_; }
  void on_time(time_point now) override {
    check_thread();
    if (now >= due_) {
      ++record_.timers;
      due_ = time_point::max();
    }
  }

 private:
  void check_thread() {
    if (std::this_thread::get_id() != thread_) {
      ++record_.wrong_thread;
    }
  }
  void close(int fd) {
    if (record_.forget_on_close) {
      loop_.forget(fd);
    } else {
      loop_.unwatch(fd);
    }
    open_.erase(fd);
  }
  void close_all() {
    while (!open_.empty()) {
      close(open_.begin()->first);
    }
  }

  loop& loop_;
  loop_record& record_;
  std::thread::id thread_;
  time_point due_;
  std::map<int, connection> open_;
};

}  // namespace transient::test
