// TCP endpoints for vmckpt's own peer-to-peer connections (live migration): parsing
// HOST:PORT, listening, accepting one peer, connecting, and exact-length reads and
// writes, every one bounded by a deadline. The socket itself stays in blocking mode (it
// may be handed to QEMU afterwards); waits are poll(2) plus MSG_DONTWAIT.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "common/deadline.hpp"
#include "common/error.hpp"
#include "common/unique_fd.hpp"

namespace vmckpt::tcp {

struct Endpoint {
  std::string host;  // name or address; "[::1]" is given here as "::1"
  std::uint16_t port = 0;
  std::string display() const;  // "host:port", "[::1]:port"
};

// "HOST:PORT" or "[V6ADDR]:PORT"; with `defaultHost` set, a bare "PORT" means that host.
// Port 0 is accepted only when `allowPortZero` (listen on any free port).
Result<Endpoint> parseEndpoint(std::string_view text, bool allowPortZero, std::string_view defaultHost = {});

// Called while waiting; returning an error ends the wait with it (e.g. Ctrl-C).
using Interrupt = std::function<Status()>;

class Listener {
 public:
  // Binds and listens (backlog 1). The bound address, with the real port when 0 was given,
  // is in address().
  static Result<Listener> open(const Endpoint& at);
  const std::string& address() const { return address_; }
  // The listening socket, to hand to another process (QEMU's NBD server takes it with getfd).
  int fd() const { return fd_.get(); }
  // Waits for one connection; `peer` gets its address.
  Result<UniqueFd> acceptOne(Deadline deadline, const Interrupt& interrupt, std::string& peer);

 private:
  Listener(UniqueFd fd, std::string address) : fd_(std::move(fd)), address_(std::move(address)) {}
  UniqueFd fd_;
  std::string address_;
};

Result<UniqueFd> connect(const Endpoint& to, Deadline deadline);

// Exactly `len` bytes, or an error: Errc::protocol when the peer closed the connection,
// Errc::timeout at the deadline, Errc::io for a socket error.
Status sendAll(int fd, const void* data, std::size_t len, Deadline deadline, const Interrupt& interrupt = {});
Status readExact(int fd, void* data, std::size_t len, Deadline deadline, const Interrupt& interrupt = {});

}  // namespace vmckpt::tcp
