// The loopback HTTP clients of `transient drill`: blocking connect (on loopback it completes
// when the kernel queues the connection, before the server accepts), one request, and a
// bounded wait for the response.
#pragma once

#include <chrono>
#include <string>

#include "transient/sockets/endpoint.hpp"
#include "transient/sockets/unique_fd.hpp"

namespace transient::tool {

/// A connection to `to` with one keep-alive GET already sent; empty on failure.
unique_fd connect_and_request(const endpoint& to);
/// Sends one more keep-alive GET on `fd`; false on failure.
bool send_request(int fd);
/// Waits at most `timeout` for one complete response; returns it ("" on timeout, EOF or error).
std::string read_response(int fd, std::chrono::milliseconds timeout);
/// True if the peer closed `fd` within `timeout` (EOF or reset; data before it is discarded).
bool wait_closed(int fd, std::chrono::milliseconds timeout);
/// Connects, requests, and returns true if "200 OK" arrived within `timeout`.
bool get_ok(const endpoint& to, std::chrono::milliseconds timeout);
/// GET `path` on a new connection; the response's status code, 0 if none came within `timeout`.
int get_status(const endpoint& to, const std::string& path, std::chrono::milliseconds timeout);
/// GET `path` on a new connection; the body of a 200 response, "" otherwise.
std::string get_body(const endpoint& to, const std::string& path, std::chrono::milliseconds timeout);

}  // namespace transient::tool
