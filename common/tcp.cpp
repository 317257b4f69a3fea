#include "common/tcp.hpp"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <memory>

#include "common/strings.hpp"

namespace vmckpt::tcp {
namespace {

constexpr int kSliceMs = 200;  // how often a wait looks at its interrupt

struct AddrInfoFree {
  void operator()(addrinfo* a) const { ::freeaddrinfo(a); }
};
using AddrInfoList = std::unique_ptr<addrinfo, AddrInfoFree>;

Result<AddrInfoList> resolve(const Endpoint& e, bool passive) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
  addrinfo* out = nullptr;
  std::string port = std::to_string(e.port);
  int rc = ::getaddrinfo(e.host.c_str(), port.c_str(), &hints, &out);
  if (rc != 0)
    return fail(rc == EAI_SYSTEM ? Error::fromErrno(cat("resolve ", e.host), errno)
                                 : Error(Errc::invalidArgument, cat("resolve ", e.host, ": ", ::gai_strerror(rc))));
  return AddrInfoList(out);
}

std::string describeAddress(const sockaddr* sa, socklen_t len) {
  char host[NI_MAXHOST], serv[NI_MAXSERV];
  if (::getnameinfo(sa, len, host, sizeof host, serv, sizeof serv, NI_NUMERICHOST | NI_NUMERICSERV) != 0) return "?";
  Endpoint e{host, static_cast<std::uint16_t>(std::atoi(serv))};
  return e.display();
}

// Waits for `events` on fd, in slices, asking `interrupt` between them.
Status waitFor(int fd, short events, Deadline deadline, const Interrupt& interrupt, std::string_view what) {
  for (;;) {
    if (interrupt) VMCKPT_TRY(interrupt());
    if (deadline.expired()) return fail(Errc::timeout, cat(what, ": timed out"));
    pollfd p{fd, events, 0};
    int rc = ::poll(&p, 1, std::min(deadline.pollTimeoutMs(), kSliceMs));
    if (rc < 0 && errno != EINTR) return failErrno(cat(what, ": poll"), errno);
    if (rc > 0) return {};
  }
}

bool validPort(std::string_view s, unsigned& port) {
  if (s.empty() || s.size() > 5) return false;
  port = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    port = port * 10 + static_cast<unsigned>(c - '0');
  }
  return port <= 65535;
}

}  // namespace

std::string Endpoint::display() const {
  return host.find(':') != std::string::npos ? cat("[", host, "]:", port) : cat(host, ":", port);
}

Result<Endpoint> parseEndpoint(std::string_view text, bool allowPortZero, std::string_view defaultHost) {
  auto bad = [&](std::string_view why) {
    return fail(Errc::invalidArgument, cat("address '", text, "' ", why, " (expected HOST:PORT)"));
  };
  std::string_view host, port;
  if (!text.empty() && text.front() == '[') {
    auto close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':')
      return bad("has an unterminated [IPv6] part");
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else if (auto colon = text.rfind(':'); colon != std::string_view::npos) {
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) return bad("is an IPv6 address without [brackets]");
  } else if (!defaultHost.empty()) {
    host = defaultHost;
    port = text;
  } else {
    return bad("has no port");
  }
  if (host.empty() || host.size() > 255) return bad("has no host");
  for (char c : host)
    if (c <= ' ' || c > '~') return bad("has a host with spaces or control characters");
  unsigned p = 0;
  if (!validPort(port, p)) return bad("has no valid port (1-65535)");
  if (p == 0 && !allowPortZero) return bad("has port 0");
  return Endpoint{std::string(host), static_cast<std::uint16_t>(p)};
}

Result<Listener> Listener::open(const Endpoint& at) {
  auto list = resolve(at, true);
  if (!list) return fail(list.error());
  int lastErr = EADDRNOTAVAIL;
  for (addrinfo* a = list->get(); a; a = a->ai_next) {
    UniqueFd fd(::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol));
    if (!fd) {
      lastErr = errno;
      continue;
    }
    int one = 1;
    (void)::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd.get(), a->ai_addr, a->ai_addrlen) != 0 || ::listen(fd.get(), 1) != 0) {
      lastErr = errno;
      continue;
    }
    sockaddr_storage bound{};
    socklen_t len = sizeof bound;
    if (::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&bound), &len) != 0)
      return failErrno(cat("getsockname ", at.display()), errno);
    return Listener(std::move(fd), describeAddress(reinterpret_cast<sockaddr*>(&bound), len));
  }
  return failErrno(cat("listen on ", at.display()), lastErr);
}

Result<UniqueFd> Listener::acceptOne(Deadline deadline, const Interrupt& interrupt, std::string& peer) {
  for (;;) {
    VMCKPT_TRY(waitFor(fd_.get(), POLLIN, deadline, interrupt, cat("waiting for a connection on ", address_)));
    sockaddr_storage from{};
    socklen_t len = sizeof from;
    UniqueFd conn(::accept4(fd_.get(), reinterpret_cast<sockaddr*>(&from), &len, SOCK_CLOEXEC));
    if (!conn) {
      if (errno == EINTR || errno == EAGAIN || errno == ECONNABORTED) continue;
      return failErrno(cat("accept on ", address_), errno);
    }
    peer = describeAddress(reinterpret_cast<sockaddr*>(&from), len);
    return conn;
  }
}

Result<UniqueFd> connect(const Endpoint& to, Deadline deadline) {
  auto list = resolve(to, false);
  if (!list) return fail(list.error());
  Error last(Errc::io, cat("connect ", to.display(), ": no address"));
  for (addrinfo* a = list->get(); a; a = a->ai_next) {
    UniqueFd fd(::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol));
    if (!fd) {
      last = Error::fromErrno(cat("socket for ", to.display()), errno);
      continue;
    }
    if (::connect(fd.get(), a->ai_addr, a->ai_addrlen) != 0) {
      if (errno != EINPROGRESS) {
        last = Error::fromErrno(cat("connect ", to.display()), errno);
        continue;
      }
      if (auto w = waitFor(fd.get(), POLLOUT, deadline, {}, cat("connect ", to.display())); !w) {
        last = w.error();
        continue;
      }
      int err = 0;
      socklen_t len = sizeof err;
      if (::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
      if (err != 0) {
        last = Error::fromErrno(cat("connect ", to.display()), err);
        continue;
      }
    }
    // Blocking again: QEMU may get this socket, and it expects what it was given.
    int flags = ::fcntl(fd.get(), F_GETFL);
    if (flags < 0 || ::fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK) != 0)
      return failErrno(cat("fcntl on the connection to ", to.display()), errno);
    return fd;
  }
  return fail(std::move(last));
}

Status sendAll(int fd, const void* data, std::size_t len, Deadline deadline, const Interrupt& interrupt) {
  const char* p = static_cast<const char*>(data);
  while (len > 0) {
    ssize_t n = ::send(fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      p += n;
      len -= static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && errno != EAGAIN && errno != EINTR) {
      int err = errno;
      if (err == EPIPE || err == ECONNRESET) return fail(Errc::protocol, "the peer closed the connection", err);
      return failErrno("send", err);
    }
    VMCKPT_TRY(waitFor(fd, POLLOUT, deadline, interrupt, "send"));
  }
  return {};
}

Status readExact(int fd, void* data, std::size_t len, Deadline deadline, const Interrupt& interrupt) {
  char* p = static_cast<char*>(data);
  while (len > 0) {
    ssize_t n = ::recv(fd, p, len, MSG_DONTWAIT);
    if (n > 0) {
      p += n;
      len -= static_cast<std::size_t>(n);
      continue;
    }
    if (n == 0) return fail(Errc::protocol, "the peer closed the connection");
    if (errno != EAGAIN && errno != EINTR) {
      int err = errno;
      if (err == ECONNRESET) return fail(Errc::protocol, "the peer reset the connection", err);
      return failErrno("recv", err);
    }
    VMCKPT_TRY(waitFor(fd, POLLIN, deadline, interrupt, "receive"));
  }
  return {};
}

}  // namespace vmckpt::tcp
