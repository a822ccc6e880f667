// Error values for the device and vCPU paths: Result<T> holds either a T or an Error that
// carries an errno value and a human-readable context ("KVM_CREATE_VM: Device or resource busy").
#pragma once

#include <cerrno>
#include <string>
#include <utility>
#include <variant>

namespace tern {

// An error: a message naming what failed, and an errno value classifying it (0 when none).
// Errors of failed system calls (FromErrno) also print strerror; validation errors carry an
// errno (EINVAL, ENOMEM, ...) for callers but their message alone is what a user reads.
// Copyable; not tied to any thread.
class Error {
 public:
  explicit Error(std::string message, int errno_value = 0)
      : message_(std::move(message)), errno_value_(errno_value) {}

  // An Error for a failed system call: `context` plus the current errno.
  static Error FromErrno(std::string context) {
    Error error(std::move(context), errno);
    error.system_call_ = true;
    return error;
  }

  const std::string& message() const { return message_; }
  int errno_value() const { return errno_value_; }

  // "message", or "message: strerror(errno)" for a failed system call.
  std::string ToString() const;

  // The same error with "context: " put in front of its message.
  Error WithContext(const std::string& context) const {
    Error error = *this;
    error.message_ = context + ": " + message_;
    return error;
  }

 private:
  std::string message_;
  int errno_value_;
  bool system_call_ = false;
};

// Either a value or an Error (like absl::StatusOr). Accessing value() of an error Result is a
// programming error and aborts.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}      // NOLINT(google-explicit-constructor)
  Result(Error error) : v_(std::move(error)) {}  // NOLINT(google-explicit-constructor)

  bool ok() const { return v_.index() == 0; }
  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  const Error& error() const { return std::get<1>(v_); }

  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

 private:
  std::variant<T, Error> v_;
};

// Result<void>: success or an Error.
template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : error_(std::move(error)), ok_(false) {}  // NOLINT

  bool ok() const { return ok_; }
  const Error& error() const { return error_; }

 private:
  Error error_{""};
  bool ok_ = true;
};

using Status = Result<void>;

inline Status Ok() { return Status(); }

}  // namespace tern

#define TERN_CONCAT_INNER(a, b) a##b
#define TERN_CONCAT(a, b) TERN_CONCAT_INNER(a, b)

// Returns the error of `expr` (a Result) from the enclosing function if it failed.
#define TERN_RETURN_IF_ERROR(expr)                       \
  do {                                                   \
    auto tern_status_ = (expr);                          \
    if (!tern_status_.ok()) return tern_status_.error(); \
  } while (0)

// `TERN_ASSIGN_OR_RETURN(auto x, Foo());` declares x from Foo()'s value or returns its error.
#define TERN_ASSIGN_OR_RETURN(lhs, expr) \
  TERN_ASSIGN_OR_RETURN_IMPL(TERN_CONCAT(tern_result_, __LINE__), lhs, expr)
#define TERN_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                               \
  if (!tmp.ok()) return tmp.error();               \
  lhs = std::move(tmp).value()
