// libvmckpt: the process side of the agent socket. Connects, registers, and serves
// events one at a time until told to stop, reconnecting if the agent goes away.
#pragma once

#include <string>

#include "common/deadline.hpp"
#include "common/unique_fd.hpp"
#include "event_dispatch.hpp"
#include "wire.hpp"

namespace vmckpt::plugin {

struct AgentConnection {
  UniqueFd fd;
  wire::LineBuffer in;  // may already hold events that followed the "registered" line
  long pid = 0;         // our pid as the agent saw it
};

// Connects to the agent at socketPath and registers reg.name. Returns 0 or -errno
// (-ETIMEDOUT at the deadline, -EPROTO when refused, -ECANCELED when stopFd, if >= 0,
// becomes readable).
int connectAndRegister(const std::string& socketPath, const Registration& reg, Deadline deadline,
                       int stopFd, AgentConnection& out);

// Answers events on conn until stopFd becomes readable. When the agent closes the
// connection it reconnects with a growing delay (0.1 s to 2 s) and registers again.
void serveEvents(AgentConnection conn, const Registration& reg, const std::string& socketPath,
                 int stopFd);

}  // namespace vmckpt::plugin
