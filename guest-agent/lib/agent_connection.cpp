#include "agent_connection.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace vmckpt::plugin {

namespace {

using namespace std::chrono_literals;

constexpr auto kRegisterTimeout = 5000ms;
constexpr auto kReplyTimeout = 5000ms;

// Waits for `events` on fd. Returns 0 when ready, -ETIMEDOUT, -ECANCELED (stopFd), -errno.
int waitFd(int fd, short events, Deadline deadline, int stopFd) {
  for (;;) {
    pollfd p[2] = {{fd, events, 0}, {stopFd, POLLIN, 0}};
    int n = ::poll(p, stopFd >= 0 ? 2 : 1, deadline.pollTimeoutMs());
    if (n < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    if (stopFd >= 0 && (p[1].revents & POLLIN)) return -ECANCELED;
    if (p[0].revents) return 0;
    if (deadline.expired()) return -ETIMEDOUT;
  }
}

int sendAll(int fd, std::string_view data, Deadline deadline, int stopFd) {
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      data.remove_prefix(static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (int rc = waitFd(fd, POLLOUT, deadline, stopFd); rc < 0) return rc;
      continue;
    }
    return n < 0 ? -errno : -EPIPE;
  }
  return 0;
}

// Reads what is there into `in`. Returns bytes read, 0 at EOF, -errno.
ssize_t readSome(int fd, wire::LineBuffer& in) {
  char buf[16384];
  for (;;) {
    ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -errno;
    if (n > 0) in.append(std::string_view(buf, static_cast<size_t>(n)));
    return n;
  }
}

}  // namespace

int connectAndRegister(const std::string& socketPath, const Registration& reg, Deadline deadline,
                       int stopFd, AgentConnection& out) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socketPath.empty() || socketPath.size() >= sizeof addr.sun_path) return -ENAMETOOLONG;
  std::memcpy(addr.sun_path, socketPath.data(), socketPath.size());

  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) return -errno;
  // A non-blocking unix connect fails with EAGAIN while the listener's backlog is full.
  while (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    if (errno == EINTR) continue;
    if (errno != EAGAIN) return -errno;
    if (deadline.expired()) return -ETIMEDOUT;
    if (int rc = waitFd(-1, 0, Deadline::in(10ms), stopFd); rc == -ECANCELED) return rc;
  }

  std::string registerLine = wire::encodeRegister(reg.name, static_cast<int>(reg.apiVersion));
  if (int rc = sendAll(fd.get(), registerLine, deadline, stopFd); rc < 0) return rc;

  wire::LineBuffer in;
  for (;;) {
    while (auto item = in.next()) {
      if (item->kind != wire::LineBuffer::Kind::line) return -EPROTO;
      auto msg = wire::parseObject(item->text);
      if (!msg) return -EPROTO;
      std::string type = wire::messageType(*msg);
      if (type == "registered") {
        auto pid = msg->find("pid");
        out.pid = pid != msg->end() && pid->is_number_integer() ? pid->get<long>() : 0;
        out.fd = std::move(fd);
        out.in = std::move(in);
        return 0;
      }
      if (type == "error") return -EPROTO;
      // Anything else before "registered" is not ours to act on (tolerant reader).
    }
    if (int rc = waitFd(fd.get(), POLLIN, deadline, stopFd); rc < 0) return rc;
    ssize_t n = readSome(fd.get(), in);
    if (n == 0) return -ECONNRESET;
    if (n < 0 && n != -EAGAIN) return static_cast<int>(n);
  }
}

void serveEvents(AgentConnection conn, const Registration& reg, const std::string& socketPath,
                 int stopFd) {
  auto backoff = 100ms;
  for (;;) {
    if (conn.fd) {
      bool broken = false;
      while (auto item = conn.in.next()) {
        std::string reply = handleAgentItem(reg, *item);
        if (!reply.empty() && sendAll(conn.fd.get(), reply, Deadline::in(kReplyTimeout), stopFd) < 0) {
          broken = true;
          break;
        }
      }
      if (!broken) {
        if (int rc = waitFd(conn.fd.get(), POLLIN, Deadline::in(std::chrono::hours(24)), stopFd);
            rc == -ECANCELED)
          return;
        ssize_t n = readSome(conn.fd.get(), conn.in);
        broken = n == 0 || (n < 0 && n != -EAGAIN);
      }
      if (broken) {
        conn.fd.reset();
        conn.in.clear();
        backoff = 100ms;
      }
      continue;
    }
    // The agent went away (restarted, say): wait, then register again.
    if (waitFd(-1, 0, Deadline::in(backoff), stopFd) == -ECANCELED) return;
    backoff = std::min<std::chrono::milliseconds>(backoff * 2, 2000ms);
    AgentConnection fresh;
    int rc = connectAndRegister(socketPath, reg, Deadline::in(kRegisterTimeout), stopFd, fresh);
    if (rc == -ECANCELED) return;
    if (rc == 0) conn = std::move(fresh);
  }
}

}  // namespace vmckpt::plugin
