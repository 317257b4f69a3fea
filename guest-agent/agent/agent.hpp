// vmckpt-agent: the event loop. One thread polls the agent socket, the processes, the
// host port, the freeze thread's eventfd and a signalfd; every wait has a deadline.
// Host requests are handled one at a time, in order: while quiesce, release, thaw,
// restored or connect runs, later requests wait (each operation ends by its deadline).
#pragma once

#include <expected>
#include <string>

#include "common/unique_fd.hpp"
#include "coordinator.hpp"
#include "host_port.hpp"
#include "host_request.hpp"
#include "log.hpp"
#include "process_table.hpp"

namespace vmckpt::agent {

struct AgentOptions {
  HostPort::Kind portKind = HostPort::Kind::device;
  std::string portPath = "/dev/virtio-ports/org.vmckpt.agent.0";
  std::string socketPath = "/run/vmckpt/agent.sock";
  CoordinatorConfig coordinator;
  ProcessTable::Limits processes;
};

class Agent {
 public:
  Agent(AgentOptions options, const Logger& log);
  ~Agent();
  // Runs until SIGTERM or SIGINT; returns the exit status.
  int run();

 private:
  std::expected<void, std::string> setup();
  void handleHostItems();
  void handleRequest(const HostRequest& req);
  Json info() const;

  AgentOptions options_;
  const Logger& log_;
  UniqueFd signals_;
  UniqueFd listener_;
  bool socketCreated_ = false;
  ProcessTable processes_;
  Coordinator coordinator_;
  HostPort host_;
};

}  // namespace vmckpt::agent
