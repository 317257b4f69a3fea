#include "common/error.hpp"

#include <cstring>

namespace vmckpt {

std::string_view errcName(Errc code) {
  switch (code) {
    case Errc::invalidArgument: return "invalid_argument";
    case Errc::notFound: return "not_found";
    case Errc::alreadyExists: return "already_exists";
    case Errc::wrongState: return "wrong_state";
    case Errc::io: return "io";
    case Errc::timeout: return "timeout";
    case Errc::protocol: return "protocol";
    case Errc::qmp: return "qmp";
    case Errc::processFailed: return "process_failed";
    case Errc::unsupported: return "unsupported";
    case Errc::corrupt: return "corrupt";
    case Errc::internal: return "internal";
  }
  return "unknown";
}

Error Error::fromErrno(std::string_view what, int err) {
  std::string msg(what);
  msg += ": ";
  msg += std::strerror(err);
  return Error(Errc::io, std::move(msg), err);
}

Error Error::context(std::string_view ctx) const& {
  Error e = *this;
  return std::move(e).context(ctx);
}

Error Error::context(std::string_view ctx) && {
  std::string msg(ctx);
  msg += ": ";
  msg += message_;
  message_ = std::move(msg);
  return std::move(*this);
}

}  // namespace vmckpt
