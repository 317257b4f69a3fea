// vmckpt-agent: the quiesce, thaw and restored operations of PROTOCOL.md, as a state
// machine driven by the event loop (answers from processes, the freeze thread, timers).
// One operation at a time; the agent holds further host requests until it ends.
//
//   quiesce:  PRESUSPEND to all -> PRECHECKPOINT to all -> fsfreeze -> state quiesced
//             any failure or the deadline -> rollback: thaw, RESUME to every process
//             that got PRESUSPEND -> error reply, state idle
//   thaw:     FITHAW -> RESUME to all -> state idle
//   restored: FITHAW -> RESTART(device_map, connect_follows) to all -> state idle; what
//             each process published comes back in its plugins[] entry
//   connect:  CONNECT(peers[plugin]) to every process of api_version 2 -> state unchanged
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/deadline.hpp"
#include "fsfreeze.hpp"
#include "host_request.hpp"
#include "log.hpp"
#include "process_table.hpp"

namespace vmckpt::agent {

enum class AgentState { idle, quiesced };
std::string_view stateName(AgentState s);

struct CoordinatorConfig {
  bool fsfreeze = true;
  std::string mountsPath = "/proc/self/mounts";
  // How long RESUME/RESTART/CONNECT replies are awaited in thaw, restored and connect,
  // unless the request gives deadline_ms.
  std::chrono::milliseconds notifyTimeout{10000};
  // How long RESUME replies are awaited when a quiesce is rolled back.
  std::chrono::milliseconds rollbackTimeout{1000};
};

class Coordinator {
 public:
  Coordinator(ProcessTable& processes, const Logger& log, CoordinatorConfig config);
  ~Coordinator();

  bool busy() const { return op_ != nullptr; }
  AgentState state() const { return state_; }
  bool fsfreezeEnabled() const { return config_.fsfreeze; }

  // Starts quiesce, thaw, restored or connect (precondition: not busy). The reply comes out of
  // takeReply(), at once or when the operation ends.
  void start(const HostRequest& req);
  void onAnswer(const EventAnswer& answer);
  // The freeze thread's eventfd (-1 when there is none) and its readiness.
  int freezeFd() const;
  void onFreezeDone();
  void onTimer();
  std::optional<Deadline::Clock::time_point> nextDeadline() const;
  std::optional<std::string> takeReply();

  // On exit: thaw whatever might be frozen so the guest is never left frozen.
  void shutdown();

 private:
  struct Op;
  enum class Phase { presuspend, precheckpoint, freeze, rollback, notify };

  void sendPhase(wire::EventKind kind, Phase phase);
  void advance();
  void startFreeze();
  void finishQuiesce();
  void rollback(ErrorCode code, std::string message);
  void finishRollback(bool timedOut);
  void finishNotify(bool timedOut);
  Json thawFilesystems(std::string* error);
  Json pluginResults() const;
  std::string waitingFor() const;
  void reply(std::string line);

  ProcessTable& processes_;
  const Logger& log_;
  CoordinatorConfig config_;
  AgentState state_ = AgentState::idle;
  std::unique_ptr<Op> op_;
  std::unique_ptr<FreezeJob> freezeJob_;  // may outlive its operation when cancelled
  uint64_t nextOpId_ = 1;
  std::optional<std::string> reply_;
};

}  // namespace vmckpt::agent
