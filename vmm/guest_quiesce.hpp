// The guest agent's part of an operation that must see the guest's devices parked: the
// agent is used as the policy says (required, auto, off), asked to quiesce, and thawed
// afterwards. Used by snapshot and migrate; both write their journal between connecting
// and asking (a kill during the quiesce must thaw too), hence two steps.
#pragma once

#include <chrono>
#include <optional>
#include <string>

#include "common/error.hpp"
#include "vmm/agent/agent_client.hpp"
#include "vmm/lifecycle.hpp"

namespace vmckpt::vmm {

class QuiescedGuest {
 public:
  // Connects to the agent as `policy` says. With policy auto, an agent that does not
  // answer within a second is skipped and note() says why; with required, that fails.
  static Result<QuiescedGuest> connect(const VmSpec& spec, const VmPaths& paths, AgentPolicy policy);
  // The same for an agent behind `socket`; nullopt: the guest has no agent channel, for
  // the reason `noChannel` (said in the error with policy required, in note() with auto).
  static Result<QuiescedGuest> connect(const std::optional<std::string>& socket, std::string_view noChannel,
                                       AgentPolicy policy);
  // connect(), then quiesce().
  static Result<QuiescedGuest> quiesce(const VmSpec& spec, const VmPaths& paths, AgentPolicy policy,
                                       std::chrono::milliseconds timeout);

  // An agent to ask (connect found one).
  bool connected() const { return client_.has_value(); }
  // Asks the connected agent to quiesce (plugins park device state in guest RAM,
  // filesystems freeze last) within `timeout`. On failure the agent has rolled back and
  // is no longer connected. Nothing to do without an agent.
  // `release` (a group snapshot): the first of two stages; the plugins only drain
  // (PRESUSPEND) and the agent waits in state drained for release(), which the group
  // sends once every member drained (a plugin's drain needs its peers' queues alive).
  // The guest must then be thawed through the group's rounds (group_rounds.hpp), never
  // by thaw() alone: see handOver().
  Status quiesce(std::chrono::milliseconds timeout, bool release = false);
  // The second stage: the plugins close their devices (PRECHECKPOINT with release), the
  // filesystems freeze. On failure the agent has rolled back and is no longer connected.
  Status release();
  bool quiesced() const { return quiesced_; }
  const std::string& note() const { return note_; }
  double quiesceMs() const { return quiesceMs_; }
  const Json& plugins() const { return plugins_; }
  // Resumes the guest's devices (RESUME to plugins, filesystems thawed). Once only; a
  // guest that was not quiesced has nothing to thaw.
  Status thaw();
  // A release was asked of this guest's agent (whatever its answer): its thaw belongs to
  // the group's rounds. Returns the agent's socket for them, and drops this connection
  // (the chardev takes one client at a time) and the thaw; nullopt otherwise.
  std::optional<std::string> handOver();

 private:
  QuiescedGuest() = default;
  std::optional<agent::Client> client_;
  std::string socket_;  // the agent's, once connected
  bool releaseAsked_ = false;
  std::chrono::milliseconds timeout_{0};
  bool quiesced_ = false;
  std::string note_;
  double quiesceMs_ = 0;
  Json plugins_ = Json::array();
};

}  // namespace vmckpt::vmm
