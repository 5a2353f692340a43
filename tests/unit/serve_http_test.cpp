// The request framing of `transient serve` (tools/serve/serve_http.hpp): a pure function, tested
// byte by byte without a socket.
#include <gtest/gtest.h>

#include <initializer_list>
#include <string>

#include "../../tools/serve/serve_http.hpp"

namespace {

using transient::tool::parse_request;
using transient::tool::parse_status;

// Each text is refused with a reason.
void expect_all_bad(std::initializer_list<const char*> texts) {
  for (const char* text : texts) {
    const auto r = parse_request(text);
    EXPECT_EQ(r.status, parse_status::bad) << text;
    EXPECT_FALSE(r.problem.empty()) << text;
  }
}

TEST(ServeHttp, OneCompleteRequest) {
  const std::string text = "GET /x HTTP/1.1\r\nHost: a\r\n\r\n";
  const auto r = parse_request(text);
  ASSERT_EQ(r.status, parse_status::complete) << r.problem;
  EXPECT_EQ(r.length, text.size());
  EXPECT_EQ(r.method, "GET");
  EXPECT_EQ(r.target, "/x");
  EXPECT_TRUE(r.keep_alive);
}

TEST(ServeHttp, IncompleteUntilTheBlankLine) {
  const std::string text = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
  for (std::size_t n = 0; n < text.size(); ++n) {
    EXPECT_EQ(parse_request(text.substr(0, n)).status, parse_status::incomplete) << n;
  }
}

TEST(ServeHttp, PipelinedRequestsAreFramedOneByOne) {
  const std::string first = "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n";
  const std::string second = "HEAD /2 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
  const std::string both = first + second + "GET /3";
  const auto a = parse_request(both);
  ASSERT_EQ(a.status, parse_status::complete);
  EXPECT_EQ(a.length, first.size());
  const auto b = parse_request(std::string_view(both).substr(a.length));
  ASSERT_EQ(b.status, parse_status::complete);
  EXPECT_EQ(b.target, "/2");
  EXPECT_FALSE(b.keep_alive);
  EXPECT_EQ(parse_request(std::string_view(both).substr(a.length + b.length)).status, parse_status::incomplete);
}

TEST(ServeHttp, ContentLengthBodyBelongsToTheRequest) {
  const std::string text = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET";
  EXPECT_EQ(parse_request(text.substr(0, text.size() - 5)).status, parse_status::incomplete);
  const auto r = parse_request(text);
  ASSERT_EQ(r.status, parse_status::complete);
  EXPECT_EQ(r.length, text.size() - 3);
}

TEST(ServeHttp, ContentLengthMayHaveLeadingZeros) {
  const std::string text = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 000003\r\n\r\nabcGET";
  const auto r = parse_request(text);
  ASSERT_EQ(r.status, parse_status::complete) << r.problem;
  EXPECT_EQ(r.length, text.size() - 3);
  EXPECT_EQ(parse_request("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0000000000\r\n\r\n").status,
            parse_status::complete);
  // Leading zeros do not hide a body too large: 9000 bytes is over the limit however written.
  EXPECT_EQ(parse_request("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0009000\r\n\r\n").status, parse_status::bad);
  EXPECT_EQ(parse_request("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\n").status, parse_status::bad);
}

TEST(ServeHttp, KeepAliveRules) {
  EXPECT_FALSE(parse_request("GET / HTTP/1.0\r\n\r\n").keep_alive);
  EXPECT_TRUE(parse_request("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
  EXPECT_FALSE(parse_request("GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade, close\r\n\r\n").keep_alive);
  EXPECT_TRUE(parse_request("GET / HTTP/1.1\r\nhost: a\r\nconnection: keep-alive\r\n\r\n").keep_alive);
}

TEST(ServeHttp, LeadingEmptyLinesAreIgnored) {
  const auto r = parse_request("\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n");
  EXPECT_EQ(r.status, parse_status::complete);
  EXPECT_EQ(r.length, 4U + 27U);
}

TEST(ServeHttp, SizeLimit) {
  // Exactly 8192 bytes is accepted; one more is refused, with or without the blank line yet.
  const std::string head = "GET / HTTP/1.1\r\nHost: a\r\nX: ";
  const std::string fits = head + std::string(8192 - head.size() - 4, 'a') + "\r\n\r\n";
  ASSERT_EQ(fits.size(), 8192U);
  EXPECT_EQ(parse_request(fits).status, parse_status::complete);
  const std::string too_big = head + std::string(8192 - head.size() - 3, 'a') + "\r\n\r\n";
  EXPECT_EQ(parse_request(too_big).status, parse_status::bad);
  EXPECT_EQ(parse_request(std::string(8191, 'G')).status, parse_status::incomplete);
  EXPECT_EQ(parse_request(std::string(8192, 'G')).status, parse_status::bad);
  EXPECT_EQ(parse_request("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9000\r\n\r\n").status, parse_status::bad);
}

TEST(ServeHttp, MalformedRequestsAreBad) {
  expect_all_bad({
      "GET /\r\n\r\n",                                     // no version
      "GET  / HTTP/1.1\r\nHost: a\r\n\r\n",                // two spaces
      "GET / HTTP/2.0\r\nHost: a\r\n\r\n",                 // unsupported version
      "G(T / HTTP/1.1\r\nHost: a\r\n\r\n",                 // not a token
      "GET / HTTP/1.1\r\n\r\n",                            // HTTP/1.1 without Host
      "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",      // two Hosts
      "GET / HTTP/1.1\r\nHost: a\r\nNo colon\r\n\r\n",     // header without a colon
      "GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n",  // space in a header name
      "GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",      // obsolete folding
      "GET / HTTP/1.1\nHost: a\r\n\r\n",                   // bare LF
      "GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n",              // bare CR
      "\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",               // bare LF first
      "GET / HTTP/1.1\r\nHost: a\r\r\n\r\n",               // bare CR last
      "GET / HTTP/1.1\r\nHost: a\r\nX: \n\r\n\r\n",        // bare LF in a later line
      "GET /a\rb HTTP/1.1\r\nHost: a\r\n\r\n",             // bare CR in the request target
      "GET / HTTP/1.1\r\r\nHost: a\r\n\r\n",               // bare CR ending the request line
      "GET / HTTP/1.1\r\nHo\rst: a\r\n\r\n",               // bare CR in a header name
      "GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
  });
}

// RFC 9110 5.5: a field value holds no CR, LF, NUL or other control character (a tab and
// bytes above 0x7f are allowed).
TEST(ServeHttp, AControlCharacterInAFieldValueIsBad) {
  expect_all_bad({
      "GET / HTTP/1.1\r\nHost: a\x01b\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: a\r\nX: \x1f\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: a\r\nX: a\x7f\r\n\r\n",
  });
  const std::string with_nul("GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n", 35);
  EXPECT_EQ(parse_request(with_nul).status, parse_status::bad);
  const auto fine = parse_request("GET / HTTP/1.1\r\nHost: a\r\nX: a\tb \xc3\xa9\r\n\r\n");
  EXPECT_EQ(fine.status, parse_status::complete) << fine.problem;
}

// A line that breaks the grammar is refused as soon as it is complete: the server need not
// wait for (or buffer) the rest of a head it will refuse anyway. A CR that ends the buffer
// is not bare yet: its LF may be in the next read.
TEST(ServeHttp, ABadLineIsBadBeforeTheHeadIsComplete) {
  expect_all_bad({
      "G(T / HTTP/1.1\r\n",
      "GET / HTTP/1.1\nHo",
      "GET / HTTP/1.1\r\nHost: a\rb",
      "GET / HTTP/1.1\r\nNo colon\r\n",
      "GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n",
  });
  EXPECT_EQ(parse_request("GET / HTTP/1.1\r").status, parse_status::incomplete);
  EXPECT_EQ(parse_request("GET / HTTP/1.1\r\nHost: a\r").status, parse_status::incomplete);
  EXPECT_EQ(parse_request("GET / HTTP/1.1\r\nHost: a\r\n").status, parse_status::incomplete);
}

TEST(ServeHttp, Responses) {
  const auto get = parse_request("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
  EXPECT_EQ(transient::tool::ok_response(get),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok");
  const auto head = parse_request("HEAD / HTTP/1.0\r\n\r\n");
  EXPECT_EQ(transient::tool::ok_response(head),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(
      transient::tool::bad_request_response("x"),
      "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nx\n");
}

}  // namespace
