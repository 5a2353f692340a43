// The metrics port of `transient serve` (see serve_metrics.hpp).
#include "serve_metrics.hpp"

#include "../json.hpp"

namespace transient::tool {

std::string health_json(const health_report& h) {
  return "{\"state\":" + json_quote(h.state) + ",\"reason\":" + json_quote(h.reason) + "}\n";
}

std::string metrics_response(const parsed_request& request, const std::function<std::string()>& text,
                             const std::function<health_report()>& health) {
  if (request.method != "GET" && request.method != "HEAD") {
    std::string response =
        text_response("405 Method Not Allowed", "text/plain", "only GET and HEAD\n", request.keep_alive);
    response.insert(response.find("\r\n") + 2, "Allow: GET, HEAD\r\n");
    return response;
  }
  const std::string_view path = request.target.substr(0, request.target.find('?'));
  std::string response;
  if (path == "/metrics") {
    response = text_response("200 OK", "text/plain; version=0.0.4", text(), request.keep_alive);
  } else if (path == "/healthz" || path == "/readyz") {
    const health_report h = health ? health() : health_report{};
    const bool ok = path == "/healthz" ? h.live : h.ready;
    response = text_response(ok ? "200 OK" : "503 Service Unavailable", "application/json", health_json(h),
                             request.keep_alive);
  } else {
    return text_response("404 Not Found", "text/plain", "not found: try /metrics, /healthz or /readyz\n",
                         request.keep_alive);
  }
  if (request.method == "HEAD") {
    response.erase(response.find("\r\n\r\n") + 4);
  }
  return response;
}

metrics_endpoint::metrics_endpoint(listener l, std::function<std::string()> text,
                                   std::function<health_report()> health) {
  server_options options = side_port_options("metrics", metrics_connections);
  auto respond = [text = std::move(text), health = std::move(health)](const parsed_request& r, std::string& out) {
    out += metrics_response(r, text, health);
  };
  std::vector<listener> listeners;
  listeners.push_back(std::move(l));
  server_ = std::make_unique<server>(
      std::move(listeners),
      [respond = std::move(respond)](loop& on) {
        connection_limits limits;
        limits.drain = {};  // a probe or a scrape is not worth a drain
        auto connections = std::make_unique<connection_loop>(on, limits, respond);
        connections->set_evict_when_full(true);
        return connections;
      },
      std::move(options));
  thread_ = run_side_port(*server_, "metrics");
}

void metrics_endpoint::stop() noexcept { server_->stop(); }

metrics_endpoint::~metrics_endpoint() {
  stop();
  thread_.join();
}

}  // namespace transient::tool
