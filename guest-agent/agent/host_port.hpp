// vmckpt-agent: the host channel. Normally the virtio-serial port
// /dev/virtio-ports/org.vmckpt.agent.0; for tests a pty or any character device
// (--port) or a unix socket the agent connects to (--port-socket).
//
// A virtio-serial port stays open in the guest whether or not the host side is
// connected. With no host, poll() reports POLLHUP and read() returns 0 at once, so the
// port is then left out of poll() and probed again after a growing delay (50 ms..1 s)
// or as soon as the driver's SIGIO says the host side opened. Input and unsent replies
// are kept meanwhile (a new host resyncs past them, PROTOCOL.md). A socket that closes
// is reconnected after the same delay, and what was in flight on it is dropped.
#pragma once

#include <poll.h>

#include <chrono>
#include <optional>
#include <string>

#include "common/deadline.hpp"
#include "common/unique_fd.hpp"
#include "log.hpp"
#include "wire.hpp"

namespace vmckpt::agent {

class HostPort {
 public:
  enum class Kind { device, socket };

  HostPort(Kind kind, std::string path, const Logger& log) : kind_(kind), path_(std::move(path)), log_(log) {}

  // Opens (or connects) now; failures are retried later on their own.
  void start();

  // The fd and events to poll now; fd -1 while waiting to retry.
  pollfd pollEntry() const;
  void onPoll(short revents);
  // Retries an open or probes a quiet port when its time has come.
  void onTimer();
  // The driver signalled a host connect or disconnect: probe now.
  void onSigio();
  std::optional<Deadline::Clock::time_point> nextWake() const;

  // Stops reading while this many complete lines wait to be handled.
  void setReadLimit(size_t lines) { readLimit_ = lines; }
  std::optional<wire::LineBuffer::Item> nextItem() { return in_.next(); }
  // Queues one reply line; sent when the host side is there (dropped while a socket
  // is not connected).
  void send(std::string line);
  bool connected() const { return state_ == State::up; }

 private:
  enum class State { closed, quiet, up };

  void open();
  // Reads what is there. Returns false when the host side is gone.
  bool readAvailable();
  void flush();
  void hostGone(const std::string& why, int err);
  void scheduleRetry();
  void probe();

  Kind kind_;
  std::string path_;
  const Logger& log_;
  State state_ = State::closed;
  UniqueFd fd_;
  wire::LineBuffer in_;
  std::string out_;
  size_t readLimit_ = 64;
  std::chrono::milliseconds backoff_{0};
  Deadline::Clock::time_point retryAt_{};
  std::string lastError_;  // logged once until it changes
};

}  // namespace vmckpt::agent
