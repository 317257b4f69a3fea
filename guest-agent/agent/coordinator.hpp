// vmckpt-agent: the quiesce, release, thaw and restored operations of PROTOCOL.md, as a
// state machine driven by the event loop (answers from processes, the freeze thread,
// timers). One operation at a time; the agent holds further host requests until it ends.
//
//   quiesce:  PRESUSPEND to all -> PRECHECKPOINT to all -> CUDA checkpoint -> fsfreeze
//             -> state quiesced
//             with release, two stages around the host's group barrier:
//             PRESUSPEND(release) to all -> state drained; what each process published
//             comes back in its plugins[] entry
//   release:  (drained only) PRECHECKPOINT(release) to the drained processes -> CUDA
//             checkpoint -> fsfreeze
//             -> state quiesced; what each published comes back as for quiesce
//             any failure or the deadline in quiesce or release -> rollback: thaw,
//             CUDA restore, RESUME to every process that got PRESUSPEND -> error reply,
//             state idle
//   thaw:     FITHAW -> CUDA restore -> RESUME(connect_follows) to all -> state idle; published data
//             comes back as for restored
//   restored: FITHAW -> CUDA restore (device_map gpu) -> RESTART(device_map, connect_follows)
//             to all -> state idle; what
//             each process published comes back in its plugins[] entry
//   connect:  CONNECT(peers[plugin]) to every process of api_version 2 -> state unchanged
#pragma once

#include <chrono>
#include <expected>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/deadline.hpp"
#include "cuda_step.hpp"
#include "fsfreeze.hpp"
#include "host_request.hpp"
#include "log.hpp"
#include "process_table.hpp"

namespace vmckpt::agent {

// drained: every process answered PRESUSPEND(release) and holds its traffic; nothing is
// frozen. The host's release or thaw ends it.
enum class AgentState { idle, drained, quiesced };
std::string_view stateName(AgentState s);

struct CoordinatorConfig {
  bool fsfreeze = true;
  std::string mountsPath = "/proc/self/mounts";
  // How long RESUME/RESTART/CONNECT replies are awaited in thaw, restored and connect,
  // unless the request gives deadline_ms.
  std::chrono::milliseconds notifyTimeout{10000};
  // How long RESUME replies are awaited when a quiesce is rolled back.
  std::chrono::milliseconds rollbackTimeout{1000};
  CudaConfig cuda;
};

class Coordinator {
 public:
  Coordinator(ProcessTable& processes, const Logger& log, CoordinatorConfig config);
  ~Coordinator();

  bool busy() const { return op_ != nullptr; }
  AgentState state() const { return state_; }
  bool fsfreezeEnabled() const { return config_.fsfreeze; }

  // Starts quiesce, release, thaw, restored or connect (precondition: not busy). The reply
  // comes out of takeReply(), at once or when the operation ends.
  void start(const HostRequest& req);
  void onAnswer(const EventAnswer& answer);
  // The freeze thread's eventfd (-1 when there is none) and its readiness.
  int freezeFd() const;
  void onFreezeDone();
  void onTimer();
  std::optional<Deadline::Clock::time_point> nextDeadline() const;
  std::optional<std::string> takeReply();

  // On exit: thaw whatever might be frozen so the guest is never left frozen. Processes
  // are told nothing: drained or quiesced ones keep holding until the host decides.
  void shutdown();

 private:
  struct Op;
  enum class Phase { presuspend, precheckpoint, freeze, rollback, notify };

  // The wrong_state refusal of `req` in the current state, if any.
  std::optional<std::string> refusal(const HostRequest& req) const;
  void sendPhase(wire::EventKind kind, Phase phase);
  void advance();
  void startFreeze();
  // Ends quiesce or release: state quiesced, or drained after the first stage of a
  // quiesce with release. frozen: the mount points it froze, thawed again if it cannot
  // stand.
  void finishQuiesce(const std::vector<std::string>& frozen = {});
  void rollback(ErrorCode code, std::string message);
  void finishRollback(bool timedOut);
  void finishNotify(bool timedOut);
  Json thawFilesystems(std::string* error);
  // Restores the CUDA processes a quiesce checkpointed (none: nothing to do): their
  // plugins[] entry, or an error appended to `error`.
  Json restoreCuda(const std::string& deviceGpu, Deadline d, std::string* error);
  Json pluginResults() const;
  // The ok reply line for `result`, or why it cannot be sent (the published data does
  // not fit one line).
  std::expected<std::string, std::string> resultReply(Json result) const;
  std::string waitingFor() const;
  void reply(std::string line);

  ProcessTable& processes_;
  const Logger& log_;
  CoordinatorConfig config_;
  AgentState state_ = AgentState::idle;
  std::unique_ptr<Op> op_;
  CudaStep cuda_;
  std::unique_ptr<FreezeJob> freezeJob_;  // may outlive its operation when cancelled
  uint64_t nextOpId_ = 1;
  std::vector<ConnId> drained_;  // in state drained: the processes that got PRESUSPEND(release)
  std::optional<std::string> reply_;
};

}  // namespace vmckpt::agent
