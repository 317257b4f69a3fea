#include "host_port.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace vmckpt::agent {

namespace {
using namespace std::chrono_literals;
constexpr auto kFirstRetry = 50ms;
constexpr auto kMaxRetry = 1000ms;
constexpr size_t kMaxPendingOutput = 4u << 20;
}  // namespace

void HostPort::start() { open(); }

void HostPort::open() {
  UniqueFd fd;
  if (kind_ == Kind::socket) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path_.size() >= sizeof addr.sun_path) {
      lastError_ = "socket path too long: " + path_;
      log_.info(lastError_);
      scheduleRetry();
      return;
    }
    std::memcpy(addr.sun_path, path_.data(), path_.size());
    fd.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (fd && ::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) fd.reset();
  } else {
    fd.reset(::open(path_.c_str(), O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC));
    if (fd) {
      // A tty (tests use a pty) must pass bytes through untouched.
      termios t{};
      if (::tcgetattr(fd.get(), &t) == 0) {
        ::cfmakeraw(&t);
        (void)::tcsetattr(fd.get(), TCSANOW, &t);
      }
      // virtio_console sends SIGIO when the host side opens or closes the port.
      (void)::fcntl(fd.get(), F_SETOWN, ::getpid());
      int fl = ::fcntl(fd.get(), F_GETFL);
      if (fl >= 0) (void)::fcntl(fd.get(), F_SETFL, fl | O_ASYNC);
    }
  }
  if (!fd) {
    std::string err = (kind_ == Kind::socket ? "connect " : "open ") + path_ + ": " + std::strerror(errno);
    if (err != lastError_) log_.info(err + " (retrying)");
    lastError_ = err;
    scheduleRetry();
    return;
  }
  if (!lastError_.empty()) log_.info("host port " + path_ + " open");
  lastError_.clear();
  fd_ = std::move(fd);
  in_.clear();
  out_.clear();
  state_ = State::up;
  backoff_ = 0ms;
  log_.debug("host port " + path_ + " open");
}

pollfd HostPort::pollEntry() const {
  if (state_ != State::up) return {-1, 0, 0};
  short ev = 0;
  if (in_.ready() < readLimit_) ev |= POLLIN;
  if (!out_.empty()) ev |= POLLOUT;
  return {fd_.get(), ev, 0};
}

void HostPort::onPoll(short revents) {
  if (state_ != State::up || revents == 0) return;
  if (revents & POLLOUT) flush();
  if (state_ != State::up || !(revents & (POLLIN | POLLHUP | POLLERR))) return;
  // A hang-up shows as read() returning 0 (or failing), handled in readAvailable(); but
  // while lines wait to be handled nothing is read, and the hang-up must not be polled
  // again and again.
  if (in_.ready() >= readLimit_ && (revents & (POLLHUP | POLLERR))) {
    hostGone("host side closed", 0);
    return;
  }
  (void)readAvailable();
}

bool HostPort::readAvailable() {
  char buf[16384];
  for (;;) {
    if (in_.ready() >= readLimit_) return true;
    ssize_t n = ::read(fd_.get(), buf, sizeof buf);
    if (n > 0) {
      in_.append(std::string_view(buf, static_cast<size_t>(n)));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
    // 0: virtio-serial with no host, or a closed socket. EIO: a pty whose other end closed.
    int err = n == 0 ? 0 : errno;
    hostGone(n == 0 ? "host side closed" : std::string("read: ") + std::strerror(err), err);
    return false;
  }
}

void HostPort::flush() {
  while (!out_.empty()) {
    ssize_t n = kind_ == Kind::socket ? ::send(fd_.get(), out_.data(), out_.size(), MSG_NOSIGNAL | MSG_DONTWAIT)
                                      : ::write(fd_.get(), out_.data(), out_.size());
    if (n > 0) {
      out_.erase(0, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    int err = errno;
    hostGone(std::string("write: ") + std::strerror(err), err);
    return;
  }
}

void HostPort::send(std::string line) {
  if (state_ == State::closed) {
    log_.debug("host side not connected; reply dropped");
    return;
  }
  if (out_.size() + line.size() > kMaxPendingOutput) {
    log_.info("host does not read its replies; " + std::to_string(out_.size()) + " bytes dropped");
    out_.clear();
  }
  out_ += line;
  if (state_ == State::up) flush();  // else when the host is back
}

void HostPort::hostGone(const std::string& why, int err) {
  log_.debug("host port: " + why);
  // A virtio-serial port is kept open: closing it would discard what the host sends
  // next, and reopening does not tell whether the host is there. Nor is anything
  // dropped: the driver applies the host's PORT_OPEN from a workqueue, so data that
  // came with the connect can be read while read() still reports no host. Lines read
  // are handled, and replies wait for the host; a new host resyncs past stale ones.
  // A socket (tests) or a vanished device is closed and reopened, its stream dropped.
  bool keep = kind_ == Kind::device && err != ENODEV && err != ENXIO && err != EBADF;
  if (keep) {
    state_ = State::quiet;
  } else {
    in_.clear();
    out_.clear();
    fd_.reset();
    state_ = State::closed;
  }
  scheduleRetry();
}

void HostPort::scheduleRetry() {
  backoff_ = backoff_ == 0ms ? kFirstRetry : std::min<std::chrono::milliseconds>(backoff_ * 2, kMaxRetry);
  retryAt_ = Deadline::Clock::now() + backoff_;
}

std::optional<Deadline::Clock::time_point> HostPort::nextWake() const {
  if (state_ == State::up) return std::nullopt;
  return retryAt_;
}

void HostPort::onTimer() {
  if (state_ == State::up || Deadline::Clock::now() < retryAt_) return;
  if (state_ == State::closed) open();
  else probe();
}

void HostPort::onSigio() {
  if (state_ == State::quiet) {
    backoff_ = 0ms;
    probe();
  }
}

void HostPort::probe() {
  pollfd p{fd_.get(), POLLIN, 0};
  if (::poll(&p, 1, 0) < 0) {
    scheduleRetry();
    return;
  }
  state_ = State::up;
  // Still no host: read() returns 0 and hostGone() schedules the next probe. Data that
  // came before a hang-up is read first.
  if ((p.revents & (POLLHUP | POLLERR | POLLNVAL)) && !readAvailable()) return;
  log_.debug("host port: host side connected");
  backoff_ = 0ms;
}

}  // namespace vmckpt::agent
