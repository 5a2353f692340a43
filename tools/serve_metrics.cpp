// The metrics port of `transient serve` (see serve_metrics.hpp).
#include "serve_metrics.hpp"

#include <iostream>

namespace transient::tool {

std::string metrics_response(const parsed_request& request, const std::function<std::string()>& text) {
  const std::string_view path = request.target.substr(0, request.target.find('?'));
  if (path != "/metrics") {
    return text_response("404 Not Found", "text/plain", "not found: try /metrics\n", request.keep_alive);
  }
  std::string response = text_response("200 OK", "text/plain; version=0.0.4", text(), request.keep_alive);
  if (request.method == "HEAD") {
    response.erase(response.find("\r\n\r\n") + 4);
  }
  return response;
}

metrics_endpoint::metrics_endpoint(listener l, std::function<std::string()> text) {
  io_ = std::make_unique<connection_io>(std::chrono::seconds(60), [text = std::move(text)](const parsed_request& r) {
    return metrics_response(r, text);
  });
  server_options options;
  options.max_connections = 8;          // scrapers only
  options.policy.stall_timeout = {};    // the main server's watchdog decides
  options.diagnostics_reserve = false;  // never diagnoses (no watchdog)
  options.policy.sink = [](const policy_event& e) {
    if (e.kind != policy_event_kind::diagnosis) {
      const std::string line = "transient serve (metrics port): " + format(e) + "\n";
      [[maybe_unused]] const ssize_t n = ::write(2, line.data(), line.size());
    }
  };
  std::vector<listener> listeners;
  listeners.push_back(std::move(l));
  connection_io* io = io_.get();
  server_ = std::make_unique<server>(
      std::move(listeners), [io](connection c) { io->add(std::move(c)); }, std::move(options));
  io_thread_ = std::thread([io] { io->run(); });
  server_thread_ = std::thread([this] {
    std::error_code ec;
    const stop_info info = server_->run(ec);
    if (ec) {
      std::cerr << "transient serve: metrics port stopped: " << ec.message() << '\n';
    }
  });
}

void metrics_endpoint::stop() noexcept {
  server_->stop();
  io_->stop();
}

metrics_endpoint::~metrics_endpoint() {
  stop();
  server_thread_.join();
  io_thread_.join();
}

}  // namespace transient::tool
