// Helpers for the throwing half of each overload pair.
#pragma once

#include <cerrno>
#include <string>
#include <system_error>

namespace transient::detail {

/// Throws std::system_error(ec, what) if `ec` holds an error.
inline void throw_if(const std::error_code& ec, const char* what) {
  if (ec) {
    throw std::system_error(ec, what);
  }
}

/// Throws std::system_error(ec, what) if `ec` holds an error (for a composed message).
inline void throw_if(const std::error_code& ec, const std::string& what) {
  if (ec) {
    throw std::system_error(ec, what);
  }
}

/// A std::system_error whose what() says the code's reason once. std::system_error(ec,
/// what) appends ": " + ec.message() to `what`; a message that already says it (a listen
/// report's "listen on 127.0.0.1:80: bind: Permission denied", a parse error's "invalid
/// endpoint '...': ...") would then repeat it. Callers catch it as std::system_error.
class system_error_said_once : public std::system_error {
 public:
  /// `message` is what() if it contains ec.message(); otherwise what() is message + ": " +
  /// ec.message(), as std::system_error's.
  system_error_said_once(const std::error_code& ec, const std::string& message)
      : std::system_error(ec, message),
        text_(message.find(ec.message()) != std::string::npos ? message : std::system_error::what()) {}

  /// The message, with the code's reason once.
  [[nodiscard]] const char* what() const noexcept override { return text_.c_str(); }

 private:
  std::string text_;
};

/// Throws system_error_said_once(ec, message) if `ec` holds an error: for a message that
/// may already name the code's reason.
inline void throw_said_once_if(const std::error_code& ec, const std::string& message) {
  if (ec) {
    throw system_error_said_once(ec, message);
  }
}

/// The calling thread's errno as a std::error_code in the system category.
inline std::error_code last_error() noexcept { return {errno, std::system_category()}; }

}  // namespace transient::detail
