// Errors are values: every fallible operation returns Result<T>.
#pragma once

#include <string>
#include <string_view>

#include "common/expected.hpp"

namespace vmckpt {

// What kind of failure; the CLI maps these to exit codes and JSON "code" strings.
enum class Errc {
  invalidArgument,  // the user's input is wrong
  notFound,         // a named thing does not exist
  alreadyExists,    // a name is taken
  wrongState,       // operation not allowed in the object's current state
  io,               // a syscall failed (errno set)
  timeout,          // a deadline passed
  protocol,         // a peer sent something we cannot accept
  qmp,              // QEMU answered a command with an error
  processFailed,    // a child process failed or died
  unsupported,      // this host cannot do it
  corrupt,          // data on disk is damaged or of an unknown format
  internal,         // our own bug
};

std::string_view errcName(Errc code);

class [[nodiscard]] Error {
 public:
  Error(Errc code, std::string message, int sysErrno = 0)
      : code_(code), message_(std::move(message)), errno_(sysErrno) {}

  // An error from a failed syscall: "<what>: <strerror(err)>".
  static Error fromErrno(std::string_view what, int err);

  Errc code() const { return code_; }
  int sysErrno() const { return errno_; }
  const std::string& message() const { return message_; }

  // Prefixes context as the error travels up: "snapshot vm1: " + message.
  Error context(std::string_view ctx) const&;
  Error context(std::string_view ctx) &&;

  // For QMP errors: QEMU's error class ("GenericError", "CommandNotFound", ...).
  const std::string& qmpClass() const { return qmpClass_; }
  Error& withQmpClass(std::string cls) {
    qmpClass_ = std::move(cls);
    return *this;
  }

 private:
  Errc code_;
  std::string message_;
  int errno_;
  std::string qmpClass_;
};

template <class T>
using Result = Expected<T, Error>;

using Status = Expected<void, Error>;

inline Unexpected<Error> fail(Errc code, std::string message, int sysErrno = 0) {
  return Unexpected<Error>(Error(code, std::move(message), sysErrno));
}

inline Unexpected<Error> failErrno(std::string_view what, int err) {
  return Unexpected<Error>(Error::fromErrno(what, err));
}

inline Unexpected<Error> fail(Error e) { return Unexpected<Error>(std::move(e)); }

}  // namespace vmckpt

// Propagates an error from an expression returning Result/Status, with optional context.
#define VMCKPT_TRY(expr)                                      \
  do {                                                        \
    if (auto vmckpt_try_r_ = (expr); !vmckpt_try_r_)          \
      return ::vmckpt::fail(std::move(vmckpt_try_r_).error()); \
  } while (0)
