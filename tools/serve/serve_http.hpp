// The HTTP/1.1 request framing of `transient serve`, as a pure function: bytes in, a verdict
// out (incomplete, one complete request, or a bad request). No I/O and no allocation, so every
// case is unit-tested without a socket (tests/unit/serve_http_test.cpp) and fuzzed
// (fuzz/fuzz_serve_http.cpp).
//
// `serve` answers every request with the same tiny response, so it only needs to frame
// requests: find where one ends (the blank line, plus a Content-Length body if any), decide
// whether the connection stays open, and refuse what it cannot frame safely (no CRLF, a
// malformed request line or header, a control character in a field value, Transfer-Encoding,
// a missing Host in HTTP/1.1, more than request_limit bytes) with 400 and a close, as
// RFC 9112 asks of a server.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace transient::tool {

/// The largest request (request line, headers and body) serve accepts; larger ones get 400.
inline constexpr std::size_t request_limit = 8192;
/// Why a request over request_limit is bad: its head alone, or head and body, are too large.
inline constexpr std::string_view head_too_large = "request head larger than 8192 bytes";
inline constexpr std::string_view request_too_large = "request larger than 8192 bytes";  ///< See head_too_large.
static_assert(request_limit == 8192, "head_too_large and request_too_large spell request_limit out");

/// What parse_request found at the start of a buffer.
enum class parse_status : unsigned char {
  incomplete,  ///< No full request yet (and not over the limit): read more.
  complete,    ///< One request of `length` bytes; more may follow (pipelining).
  bad,         ///< Malformed or too large: answer 400 and close. `problem` says why.
};

/// The verdict on the first request of a buffer.
struct parsed_request {
  parse_status status = parse_status::incomplete;  ///< See parse_status.
  std::size_t length = 0;                          ///< complete: bytes of this request, body included.
  std::string_view method;                         ///< complete: "GET", ... (a view into the buffer).
  std::string_view target;                         ///< complete: "/metrics", ... (a view into the buffer).
  bool keep_alive = true;                          ///< complete: the connection stays open afterwards.
  std::string_view problem;                        ///< bad: one line saying what is wrong (static text).
};

namespace detail {

// RFC 9110 tchar: the characters of a token (method, header name).
constexpr bool is_token_char(char c) noexcept {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) {
    return true;
  }
  return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

// is_token_char for every byte, looked up once per character of every request.
inline constexpr auto token_chars = [] {
  std::array<bool, 256> table{};
  for (std::size_t i = 0; i < table.size(); ++i) {
    table[i] = is_token_char(static_cast<char>(i));
  }
  return table;
}();

// Where the CRLF-terminated line that starts at `from` ends.
struct line_end {
  std::size_t cr = std::string_view::npos;  // index of its CR; npos: the buffer ends first
  bool bare = false;                        // a CR without LF or an LF without CR came first
};

// Where the line that starts at `from` ends: at its LF, which must follow a CR (RFC 9112
// 2.2: a bare CR or LF makes the request bad). One search per line: a CR inside the line is
// caught by the checks of the line's parts (no token, target, version or field value holds
// one). Without an LF yet, the line is incomplete unless a CR already has another byte after
// it; a CR that is the buffer's last byte may still get its LF.
constexpr line_end find_line_end(std::string_view s, std::size_t from) noexcept {
  const std::size_t lf = s.find('\n', from);
  if (lf == std::string_view::npos) {
    const std::size_t cr = s.find('\r', from);
    return cr == std::string_view::npos || cr + 1 == s.size() ? line_end{} : line_end{cr, true};
  }
  return lf > from && s[lf - 1] == '\r' ? line_end{lf - 1, false} : line_end{lf, true};
}

// The length of the run of token characters that `s` starts with.
constexpr std::size_t token_length(std::string_view s) noexcept {
  std::size_t n = 0;
  while (n < s.size() && token_chars[static_cast<unsigned char>(s[n])]) {
    ++n;
  }
  return n;
}

// A character of a request target: visible ASCII or above (no space, no control).
constexpr bool is_target_char(char c) noexcept { return static_cast<unsigned char>(c) > 0x20 && c != 0x7f; }

// A character of a field value (RFC 9110 5.5): visible, obs-text, space or tab; never CR,
// LF, NUL or another control.
constexpr bool is_field_char(char c) noexcept {
  return c == '\t' || (static_cast<unsigned char>(c) >= 0x20 && c != 0x7f);
}

// What is wrong with a request line that parse_request's one-pass read refused, examined
// part by part (only bad lines come here).
constexpr std::string_view request_line_problem(std::string_view line) noexcept {
  const std::size_t sp1 = line.find(' ');
  const std::size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos) {
    return "malformed request line (expected METHOD TARGET HTTP/1.1)";
  }
  if (sp1 == 0 || token_length(line) != sp1) {
    return "malformed method";
  }
  const std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  if (target.empty() || !std::all_of(target.begin(), target.end(), is_target_char)) {
    return "malformed request target";
  }
  return "unsupported HTTP version (expected HTTP/1.1 or HTTP/1.0)";
}

constexpr char lower(char c) noexcept { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

constexpr bool iequals(std::string_view a, std::string_view b) noexcept {
  return a.size() == b.size() &&
         std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) { return lower(x) == lower(y); });
}

constexpr std::string_view trim(std::string_view s) noexcept {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) {
    s.remove_prefix(1);
  }
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) {
    s.remove_suffix(1);
  }
  return s;
}

// True if the comma-separated list `value` contains `option` (case-insensitive).
constexpr bool has_option(std::string_view value, std::string_view option) noexcept {
  while (!value.empty()) {
    const std::size_t comma = value.find(',');
    if (iequals(trim(value.substr(0, comma)), option)) {
      return true;
    }
    value = comma == std::string_view::npos ? std::string_view() : value.substr(comma + 1);
  }
  return false;
}

constexpr parsed_request bad(std::string_view problem) noexcept {
  parsed_request r;
  r.status = parse_status::bad;
  r.problem = problem;
  return r;
}

// The request line METHOD SP TARGET SP HTTP/1.x, read in one pass: a token, a space, target
// characters, a space, the version. A line this read refuses is examined again only to say
// what is wrong with it. Sets r.method, r.target and `http11`, or returns the problem.
constexpr std::string_view read_request_line(std::string_view line, parsed_request& r, bool& http11) noexcept {
  const std::size_t sp1 = token_length(line);
  std::size_t sp2 = sp1 + 1;
  while (sp2 < line.size() && is_target_char(line[sp2])) {
    ++sp2;
  }
  const std::string_view version = sp2 < line.size() ? line.substr(sp2 + 1) : std::string_view();
  if (sp1 == 0 || sp2 >= line.size() || line[sp1] != ' ' || sp2 == sp1 + 1 || line[sp2] != ' ' ||
      (version != "HTTP/1.1" && version != "HTTP/1.0")) {
    return request_line_problem(line);
  }
  r.method = line.substr(0, sp1);
  r.target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  http11 = version == "HTTP/1.1";
  return {};
}

// What the header fields said, as far as framing and keep-alive go.
struct head_fields {
  bool host = false;              // a Host header came
  bool close = false;             // Connection: close
  bool keep_alive_asked = false;  // Connection: keep-alive (HTTP/1.0)
  bool have_length = false;       // a Content-Length header came
  std::size_t body = 0;           // its value
};

// A Content-Length value: digits, leading zeros allowed (RFC 9110 8.6); nullopt if malformed.
// Five digits are more than any body under the limit.
constexpr std::optional<std::size_t> content_length(std::string_view value) noexcept {
  if (value.empty() || !std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return std::nullopt;
  }
  const std::string_view digits = value.substr(std::min(value.find_first_not_of('0'), value.size() - 1));
  if (digits.size() > 5) {
    return std::nullopt;
  }
  std::size_t n = 0;
  for (const char c : digits) {
    n = n * 10 + static_cast<std::size_t>(c - '0');
  }
  return n;
}

// Takes the value of the header `name` into `h`; returns the problem, or "".
constexpr std::string_view take_header(std::string_view name, std::string_view value, head_fields& h) noexcept {
  if (iequals(name, "host")) {
    if (h.host) {
      return "more than one Host header";
    }
    h.host = true;
  } else if (iequals(name, "connection")) {
    h.close = h.close || has_option(value, "close");
    h.keep_alive_asked = h.keep_alive_asked || has_option(value, "keep-alive");
  } else if (iequals(name, "transfer-encoding")) {
    return "Transfer-Encoding is not supported";
  } else if (iequals(name, "content-length")) {
    const auto n = content_length(value);
    if (!n) {
      return "malformed Content-Length";
    }
    if (h.have_length && *n != h.body) {
      return "conflicting Content-Length headers";
    }
    h.have_length = true;
    h.body = *n;
  }
  return {};
}

// Reads one header field line, NAME ":" OWS VALUE OWS, into `h`; returns the problem, or "".
constexpr std::string_view read_field(std::string_view field, head_fields& h) noexcept {
  if (field.front() == ' ' || field.front() == '\t') {
    return "obsolete line folding or empty header line";
  }
  const std::size_t colon = token_length(field);
  if (colon == 0 || colon == field.size() || field[colon] != ':') {
    return "malformed header field (expected NAME: VALUE)";
  }
  const std::string_view value = trim(field.substr(colon + 1));
  if (!std::all_of(value.begin(), value.end(), [](char c) { return is_field_char(c); })) {
    return "malformed header field value (a control character)";
  }
  return take_header(field.substr(0, colon), value, h);
}

// The verdict once the head (`head_length` bytes) is read: bad, incomplete (the body has not
// all arrived) or complete.
constexpr parsed_request finish(std::size_t buffer_size, std::size_t head_length, const head_fields& h, bool http11,
                                parsed_request r) noexcept {
  if (head_length > request_limit) {
    return bad(head_too_large);
  }
  if (http11 && !h.host) {
    return bad("HTTP/1.1 request without a Host header");
  }
  if (head_length + h.body > request_limit) {
    return bad(request_too_large);
  }
  if (buffer_size < head_length + h.body) {
    return {};
  }
  r.status = parse_status::complete;
  r.length = head_length + h.body;
  r.keep_alive = http11 ? !h.close : (h.keep_alive_asked && !h.close);
  return r;
}

}  // namespace detail

/// Frames the first request in `buffer` (which may hold several, or part of one). It reads
/// the head once, line by line; a line that breaks the grammar makes the request bad as soon
/// as that line is complete, even if the head is not.
constexpr parsed_request parse_request(std::string_view buffer) noexcept {
  using detail::bad;
  // RFC 9112 2.2: a server should ignore empty lines received before the request line.
  std::size_t start = 0;
  while (buffer.size() - start >= 2 && buffer[start] == '\r' && buffer[start + 1] == '\n') {
    start += 2;
  }
  // Why the parse ends at a line: a bare CR or LF, or no line end yet (read more, unless the
  // buffer is at the limit already); nothing if the line is whole.
  const auto unfinished = [&](const detail::line_end& end) -> std::optional<parsed_request> {
    if (end.bare) {
      return bad("bare CR or LF in the request head (lines end with CRLF)");
    }
    if (end.cr == std::string_view::npos) {
      return buffer.size() >= request_limit ? bad(head_too_large) : parsed_request{};
    }
    return std::nullopt;
  };
  const detail::line_end first = detail::find_line_end(buffer, start);
  if (auto stop = unfinished(first)) {
    return *stop;
  }
  parsed_request r;
  bool http11 = false;
  if (const auto problem = detail::read_request_line(buffer.substr(start, first.cr - start), r, http11);
      !problem.empty()) {
    return bad(problem);
  }
  // Header fields, one per line, up to the empty line that ends the head.
  detail::head_fields h;
  std::size_t at = first.cr + 2;
  for (;;) {
    const detail::line_end end = detail::find_line_end(buffer, at);
    if (auto stop = unfinished(end)) {
      return *stop;
    }
    const std::string_view field = buffer.substr(at, end.cr - at);
    at = end.cr + 2;
    if (field.empty()) {
      return detail::finish(buffer.size(), at, h, http11, r);
    }
    if (const auto problem = detail::read_field(field, h); !problem.empty()) {
      return bad(problem);
    }
  }
}

/// Appends the response serve gives every request to `out`: 200, "ok" (no body for HEAD).
/// Each case is one constant text, so a response is a single append.
inline void append_ok_response(const parsed_request& request, std::string& out) {
  static constexpr std::string_view open = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok";
  static constexpr std::string_view closing =
      "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
  const std::string_view text = request.keep_alive ? open : closing;
  out += request.method == "HEAD" ? text.substr(0, text.size() - 2) : text;
}

/// The response serve gives every request: 200, "ok" (no body for HEAD).
inline std::string ok_response(const parsed_request& request) {
  std::string out;
  append_ok_response(request, out);
  return out;
}

/// A response with `status` ("404 Not Found"), a content type and a body.
inline std::string text_response(std::string_view status, std::string_view content_type, std::string_view body,
                                 bool keep_alive) {
  std::string out = "HTTP/1.1 ";
  out += status;
  out += "\r\nContent-Type: ";
  out += content_type;
  out += "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
  out += keep_alive ? "\r\n" : "Connection: close\r\n\r\n";
  out += body;
  return out;
}

/// The 400 response to a bad request (the connection is closed after it).
inline std::string bad_request_response(std::string_view problem) {
  return text_response("400 Bad Request", "text/plain", std::string(problem) + "\n", false);
}

}  // namespace transient::tool
