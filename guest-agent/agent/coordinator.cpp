#include "coordinator.hpp"

#include <poll.h>
#include <unistd.h>

#include <algorithm>

namespace vmckpt::agent {

namespace {
using Clock = Deadline::Clock;
using std::chrono::milliseconds;

std::string who(int64_t pid, const std::string& plugin) {
  return "plugin " + plugin + " (pid " + std::to_string(pid) + ")";
}

std::string joined(const std::vector<std::string>& parts, size_t max = 8) {
  std::string out;
  for (size_t i = 0; i < parts.size() && i < max; ++i) out += (i ? ", " : "") + parts[i];
  if (parts.size() > max) out += " and " + std::to_string(parts.size() - max) + " more";
  return out;
}

// Thaws what a freeze left frozen, when its quiesce does not stand.
void thawFrozen(const std::vector<std::string>& mountPoints) {
  if (mountPoints.empty()) return;
  std::vector<FreezeTarget> t;
  for (const auto& m : mountPoints) t.push_back({m, {}});
  (void)thawTargets(t);
}
}  // namespace

std::string_view stateName(AgentState s) {
  switch (s) {
    case AgentState::idle: return "idle";
    case AgentState::drained: return "drained";
    case AgentState::quiesced: return "quiesced";
  }
  return "idle";
}

struct Coordinator::Op {
  struct Part {
    ConnId conn = 0;
    int64_t pid = 0;
    std::string plugin;
    int64_t apiVersion = 0;
    bool gotPresuspend = false;
    bool waiting = false;  // an answer for `seq` is awaited in this phase
    uint64_t seq = 0;
    bool anyDone = false;  // answered done to some event of this operation
    bool failed = false;   // answered failed in this phase
    bool busy = false;     // its event waits behind an unanswered earlier one: not awaited
    std::string reason;
    std::optional<Json> data;  // published in its reply (wire::publishAllowed), checked
  };

  uint64_t id = 0;
  uint64_t hostId = 0;
  Command cmd = Command::quiesce;
  Phase phase = Phase::presuspend;
  wire::EventKind kind = wire::EventKind::presuspend;  // of the current phase
  milliseconds budget{0};
  Deadline deadline = Deadline::in(milliseconds(0));
  Deadline rollbackDeadline = Deadline::in(milliseconds(0));
  Clock::time_point started = Clock::now();
  Json deviceMap = Json::object();
  bool connectFollows = false;  // restored, thaw
  bool release = false;         // quiesce with release, release
  Json peers = Json::object();
  std::vector<Part> parts;
  Json fsResult;          // null when fsfreeze is off
  std::string fsError;    // thaw errors (thaw, restored)
  Json cudaResult;        // null when the CUDA step did not run
  std::string cudaError;  // restore errors (thaw, restored)
  ErrorCode failCode = ErrorCode::internal;
  std::string failMessage;
};

Coordinator::Coordinator(ProcessTable& processes, const Logger& log, CoordinatorConfig config)
    : processes_(processes), log_(log), config_(std::move(config)), cuda_(config_.cuda) {}

Coordinator::~Coordinator() = default;

void Coordinator::reply(std::string line) { reply_ = std::move(line); }

std::optional<std::string> Coordinator::takeReply() {
  std::optional<std::string> r;
  r.swap(reply_);
  return r;
}

int Coordinator::freezeFd() const { return freezeJob_ ? freezeJob_->doneFd() : -1; }

std::optional<Clock::time_point> Coordinator::nextDeadline() const {
  if (!op_) return std::nullopt;
  return op_->phase == Phase::rollback ? op_->rollbackDeadline.when() : op_->deadline.when();
}

std::optional<std::string> Coordinator::refusal(const HostRequest& req) const {
  if (req.cmd == Command::quiesce && state_ == AgentState::quiesced)
    return "already quiesced; send thaw or restored first";
  if (req.cmd == Command::quiesce && state_ == AgentState::drained)
    return "already drained by a quiesce with release; send release or thaw first";
  if (req.cmd == Command::release && state_ != AgentState::drained)
    return "release needs state drained (quiesce with release first), not " + std::string(stateName(state_));
  if ((req.cmd == Command::quiesce || req.cmd == Command::release) && freezeJob_)
    return "a filesystem freeze of an earlier quiesce is still running (" + freezeJob_->current() + ")";
  return std::nullopt;
}

void Coordinator::start(const HostRequest& req) {
  if (op_) {
    reply(errorReply(req.id, ErrorCode::internal, "another operation is running"));
    return;
  }
  if (req.cmd != Command::quiesce && req.cmd != Command::release && req.cmd != Command::thaw &&
      req.cmd != Command::restored && req.cmd != Command::connect) {
    reply(errorReply(req.id, ErrorCode::internal, "not an operation"));
    return;
  }
  if (auto why = refusal(req)) {
    reply(errorReply(req.id, ErrorCode::wrongState, *why));
    return;
  }

  op_ = std::make_unique<Op>();
  op_->id = nextOpId_++;
  op_->hostId = req.id;
  op_->cmd = req.cmd;
  op_->deviceMap = req.deviceMap;
  op_->connectFollows = req.connectFollows;
  op_->release = req.release || req.cmd == Command::release;
  op_->peers = req.peers;
  std::vector<ConnId> drained;
  if (req.cmd == Command::release) drained.swap(drained_);
  for (const auto& p : processes_.registered()) {
    Op::Part part;
    part.conn = p.conn;
    part.pid = p.pid;
    part.plugin = p.plugin;
    part.apiVersion = p.apiVersion;
    // release goes on from the drain: PRECHECKPOINT, and RESUME in a rollback, reach the
    // processes that got PRESUSPEND then. One registered since takes no part.
    if (req.cmd == Command::release)
      part.gotPresuspend = std::find(drained.begin(), drained.end(), p.conn) != drained.end();
    op_->parts.push_back(std::move(part));
  }

  if (req.cmd == Command::quiesce || req.cmd == Command::release) {
    op_->budget = req.deadline;
    op_->deadline = Deadline::in(req.deadline);
    log_.debug(std::string(commandName(req.cmd)) + ": " + std::to_string(op_->parts.size()) +
               " processes, deadline " + std::to_string(req.deadline.count()) + " ms" +
               (req.release ? ", release asked" : ""));
    if (req.cmd == Command::quiesce) sendPhase(wire::EventKind::presuspend, Phase::presuspend);
    else sendPhase(wire::EventKind::precheckpoint, Phase::precheckpoint);
  } else if (req.cmd == Command::connect) {
    // After restored: the filesystems are thawed already; nothing to freeze or thaw.
    op_->budget = req.deadline.count() > 0 ? req.deadline : config_.notifyTimeout;
    op_->deadline = Deadline::in(op_->budget);
    sendPhase(wire::EventKind::connect, Phase::notify);
  } else {
    // The snapshot was taken frozen (restored) or the guest was frozen (thaw): thaw first.
    op_->fsResult = thawFilesystems(&op_->fsError);
    op_->budget = req.deadline.count() > 0 ? req.deadline : config_.notifyTimeout;
    op_->deadline = Deadline::in(op_->budget);
    // The processes get RESUME/RESTART with their GPU state back (a UVM interposer in
    // them re-creates managed memory then).
    std::string gpu;
    if (req.cmd == Command::restored)
      if (auto it = req.deviceMap.find("gpu"); it != req.deviceMap.end() && it->is_string()) gpu = it->get<std::string>();
    op_->cudaResult = restoreCuda(gpu, op_->deadline, &op_->cudaError);
    sendPhase(req.cmd == Command::thaw ? wire::EventKind::resume : wire::EventKind::restart, Phase::notify);
  }
  advance();
}

void Coordinator::sendPhase(wire::EventKind kind, Phase phase) {
  op_->phase = phase;
  op_->kind = kind;
  const Json noPeers = Json::array();
  for (auto& p : op_->parts) {
    p.waiting = false;
    p.failed = false;
    if (phase == Phase::precheckpoint && !p.gotPresuspend) continue;
    // A process of api_version 1 does not know CONNECT: not sent, counts as not_mine.
    if (kind == wire::EventKind::connect && p.apiVersion < 2) continue;
    wire::EventPayload payload;
    if (kind == wire::EventKind::restart) payload.deviceMap = &op_->deviceMap;
    if (kind == wire::EventKind::restart || kind == wire::EventKind::resume)
      payload.connectFollows = op_->connectFollows;
    if (kind == wire::EventKind::presuspend || kind == wire::EventKind::precheckpoint)
      payload.release = op_->release;
    if (kind == wire::EventKind::connect) {
      auto it = op_->peers.find(p.plugin);
      payload.peers = it != op_->peers.end() ? &*it : &noPeers;
    }
    bool sentNow = false;
    auto seq = processes_.sendEvent(p.conn, kind, payload, op_->id, &sentNow);
    if (!seq) continue;  // gone: counts as not_mine
    if (kind == wire::EventKind::presuspend) p.gotPresuspend = true;
    if (phase == Phase::notify && !sentNow) {
      // Still busy with an event of an earlier operation (a PRESUSPEND that hung past
      // its deadline, say): it gets this one when it answers that, and is not awaited.
      p.busy = true;
      log_.info(who(p.pid, p.plugin) + " is still busy with an earlier event; " +
                std::string(wire::eventName(kind)) + " queued");
      continue;
    }
    p.waiting = true;
    p.seq = *seq;
  }
}

void Coordinator::onAnswer(const EventAnswer& a) {
  if (!op_ || a.event.opId != op_->id) return;  // late answer to an operation that ended
  auto it = std::find_if(op_->parts.begin(), op_->parts.end(),
                         [&](const Op::Part& p) { return p.conn == a.conn && p.waiting && p.seq == a.event.seq; });
  if (it == op_->parts.end()) return;
  it->waiting = false;
  wire::Outcome outcome = a.outcome;
  std::string reason = a.reason;
  // Data in a reply to an event that allows none is ignored, as an unknown key would be.
  if (a.data && wire::publishAllowed(a.event.kind, a.event.connectFollows, a.event.release)) {
    // What a guest process publishes is bounded before it goes to the host.
    if (auto size = wire::checkPublished(*a.data); size) {
      it->data = *a.data;
    } else {
      outcome = wire::Outcome::failed;
      reason = size.error();
    }
  }
  if (outcome == wire::Outcome::done) it->anyDone = true;
  log_.debug(who(it->pid, it->plugin) + ": " + std::string(wire::eventName(a.event.kind)) + " " +
             std::string(wire::outcomeName(outcome)) + (a.gone ? " (gone)" : ""));
  if (outcome == wire::Outcome::failed) {
    it->failed = true;
    it->reason = reason;
    if (op_->phase == Phase::presuspend || op_->phase == Phase::precheckpoint) {
      std::string msg = who(it->pid, it->plugin) + " failed " + std::string(wire::eventName(a.event.kind));
      if (!reason.empty()) msg += ": " + reason;
      rollback(ErrorCode::pluginFailed, msg);
      return;
    }
  }
  advance();
}

void Coordinator::advance() {
  while (op_) {
    if (std::any_of(op_->parts.begin(), op_->parts.end(), [](const Op::Part& p) { return p.waiting; })) return;
    switch (op_->phase) {
      case Phase::presuspend:
        if (op_->cmd == Command::quiesce && op_->release) {
          // The first stage ends here: the processes close their devices only after every
          // member of the group has drained, which the host knows and says with release.
          finishQuiesce();
          return;
        }
        sendPhase(wire::EventKind::precheckpoint, Phase::precheckpoint);
        continue;
      case Phase::precheckpoint: startFreeze(); return;
      case Phase::freeze: return;
      case Phase::rollback: finishRollback(false); return;
      case Phase::notify: finishNotify(false); return;
    }
  }
}

void Coordinator::startFreeze() {
  op_->phase = Phase::freeze;
  // After PRECHECKPOINT, where a UVM interposer moved managed memory out of the driver's
  // way; before the freeze, which would stall the helper's start on a frozen root.
  auto cuda = cuda_.checkpoint(op_->deadline);
  if (!cuda) {
    rollback(ErrorCode::pluginFailed, "cuda: " + cuda.error());
    return;
  }
  // Reported only where it acted: a guest without a GPU sees no cuda entry.
  if ((*cuda)["result"] == "done") {
    log_.info("cuda: checkpointed " + std::to_string((*cuda)["processes"].size()) + " processes");
    op_->cudaResult = std::move(*cuda);
  }
  if (!config_.fsfreeze) {
    finishQuiesce();
    return;
  }
  auto targets = freezeTargets(config_.mountsPath);
  if (!targets) {
    rollback(ErrorCode::pluginFailed, "fsfreeze: " + targets.error());
    return;
  }
  if (targets->empty()) {
    op_->fsResult = {{"name", "fsfreeze"}, {"pid", 0}, {"result", "not_mine"}};
    finishQuiesce();
    return;
  }
  auto job = FreezeJob::start(std::move(*targets));
  if (!job) {
    rollback(ErrorCode::pluginFailed, "fsfreeze: " + job.error());
    return;
  }
  freezeJob_ = std::move(*job);
}

void Coordinator::onFreezeDone() {
  if (!freezeJob_ || !freezeJob_->finished()) return;
  FreezeJob::Outcome out = freezeJob_->take();
  freezeJob_.reset();
  for (const auto& s : out.skipped) log_.info("fsfreeze: skipped " + s);
  bool ours = op_ && op_->phase == Phase::freeze;
  if (ours && !out.cancelled && out.error.empty()) {
    op_->fsResult = {{"name", "fsfreeze"}, {"pid", 0}, {"result", out.frozen.empty() ? "not_mine" : "done"}};
    log_.debug("fsfreeze: froze " + joined(out.frozen, 64));
    finishQuiesce(out.frozen);
    return;
  }
  // Finished freezing just as its operation gave up on it: nothing may stay frozen.
  thawFrozen(out.frozen);
  if (ours) {
    rollback(ErrorCode::pluginFailed, "fsfreeze: " + out.error);
    return;
  }
  log_.info("fsfreeze: a late freeze finished and was undone" + (out.error.empty() ? "" : " (" + out.error + ")"));
}

void Coordinator::finishQuiesce(const std::vector<std::string>& frozen) {
  auto elapsed = std::chrono::duration_cast<milliseconds>(Clock::now() - op_->started).count();
  auto line = resultReply({{"elapsed_ms", elapsed}, {"plugins", pluginResults()}});
  if (!line) {
    // The host could not learn what was published (released devices, say): the quiesce
    // fails and is undone like any other.
    thawFrozen(frozen);
    rollback(ErrorCode::pluginFailed, line.error());
    return;
  }
  bool drained = op_->phase == Phase::presuspend;
  state_ = drained ? AgentState::drained : AgentState::quiesced;
  if (drained)
    for (const auto& p : op_->parts)
      if (p.gotPresuspend) drained_.push_back(p.conn);
  log_.info(std::string(drained ? "drained" : "quiesced") + " in " + std::to_string(elapsed) + " ms (" +
            std::to_string(op_->parts.size()) + " processes)");
  reply(std::move(*line));
  op_.reset();
}

void Coordinator::rollback(ErrorCode code, std::string message) {
  op_->phase = Phase::rollback;
  op_->failCode = code;
  op_->failMessage = std::move(message);
  log_.info(std::string(commandName(op_->cmd)) + " failed: " + op_->failMessage + "; rolling back");
  if (freezeJob_) freezeJob_->cancel();  // its thread thaws what it froze
  if (cuda_.holding()) {
    std::string err;
    (void)restoreCuda({}, Deadline::in(std::chrono::seconds(60)), &err);
    if (!err.empty()) op_->failMessage += "; " + err;
  }
  for (auto& p : op_->parts) {
    p.waiting = false;
    if (!p.gotPresuspend) continue;
    bool sentNow = false;
    auto seq = processes_.sendEvent(p.conn, wire::EventKind::resume, {}, op_->id, &sentNow);
    // A process still busy with its PRESUSPEND (late, or slower than one that failed)
    // gets RESUME when it answers that, but is not waited for.
    if (!seq || !sentNow) continue;
    p.waiting = true;
    p.seq = *seq;
  }
  op_->kind = wire::EventKind::resume;
  op_->rollbackDeadline = Deadline::in(config_.rollbackTimeout);
  advance();
}

void Coordinator::finishRollback(bool timedOut) {
  state_ = AgentState::idle;
  drained_.clear();
  std::string msg = op_->failMessage + "; rolled back";
  if (timedOut)
    msg += " (no RESUME answer within " + std::to_string(config_.rollbackTimeout.count()) + " ms from " +
           waitingFor() + ")";
  reply(errorReply(op_->hostId, op_->failCode, msg));
  op_.reset();
}

void Coordinator::finishNotify(bool timedOut) {
  // connect leaves the state as it was (PROTOCOL.md); thaw and restored end any quiesce.
  if (op_->cmd != Command::connect) {
    state_ = AgentState::idle;
    drained_.clear();
  }
  std::string name(commandName(op_->cmd));
  std::vector<std::string> failed;
  for (const auto& p : op_->parts)
    if (p.failed)
      failed.push_back(who(p.pid, p.plugin) + " failed " + std::string(wire::eventName(op_->kind)) +
                       (p.reason.empty() ? "" : ": " + p.reason));
  if (timedOut) {
    std::string msg = "no " + std::string(wire::eventName(op_->kind)) + " answer within " +
                      std::to_string(op_->budget.count()) + " ms from " + waitingFor();
    log_.info(name + ": " + msg);
    reply(errorReply(op_->hostId, ErrorCode::deadline, msg));
  } else if (!failed.empty() || !op_->fsError.empty() || !op_->cudaError.empty()) {
    std::vector<std::string> parts;
    if (!op_->fsError.empty()) parts.push_back("fsfreeze: " + op_->fsError);
    if (!op_->cudaError.empty()) parts.push_back("cuda: " + op_->cudaError);
    if (!failed.empty()) parts.push_back(joined(failed));
    std::string msg = joined(parts);
    log_.info(name + ": " + msg);
    reply(errorReply(op_->hostId, ErrorCode::pluginFailed, msg));
  } else if (auto line = resultReply({{"plugins", pluginResults()}}); !line) {
    log_.info(name + ": " + line.error());
    reply(errorReply(op_->hostId, ErrorCode::pluginFailed, line.error()));
  } else {
    log_.info(name + ": " + std::to_string(op_->parts.size()) + " processes notified");
    reply(std::move(*line));
  }
  op_.reset();
}

void Coordinator::onTimer() {
  if (!op_) return;
  switch (op_->phase) {
    case Phase::presuspend:
    case Phase::precheckpoint:
      if (op_->deadline.expired())
        rollback(ErrorCode::deadline, "deadline of " + std::to_string(op_->budget.count()) +
                                          " ms passed waiting for " + std::string(wire::eventName(op_->kind)) +
                                          " from " + waitingFor());
      return;
    case Phase::freeze:
      if (op_->deadline.expired())
        rollback(ErrorCode::deadline, "deadline of " + std::to_string(op_->budget.count()) +
                                          " ms passed while fsfreeze froze " +
                                          (freezeJob_ ? freezeJob_->current() : std::string("filesystems")));
      return;
    case Phase::rollback:
      if (op_->rollbackDeadline.expired()) finishRollback(true);
      return;
    case Phase::notify:
      if (op_->deadline.expired()) finishNotify(true);
      return;
  }
}

Json Coordinator::thawFilesystems(std::string* error) {
  if (!config_.fsfreeze) return nullptr;
  if (freezeJob_) freezeJob_->cancel();  // a freeze still running thaws itself when done
  auto targets = freezeTargets(config_.mountsPath);
  if (!targets) {
    *error = targets.error();
    return {{"name", "fsfreeze"}, {"pid", 0}, {"result", "not_mine"}};
  }
  ThawOutcome out = thawTargets(*targets);
  if (!out.errors.empty()) *error = joined(out.errors);
  if (!out.thawed.empty()) log_.debug("fsfreeze: thawed " + joined(out.thawed, 64));
  return {{"name", "fsfreeze"}, {"pid", 0}, {"result", out.thawed.empty() ? "not_mine" : "done"}};
}

Json Coordinator::restoreCuda(const std::string& deviceGpu, Deadline d, std::string* error) {
  if (!cuda_.holding()) return nullptr;
  auto r = cuda_.restore(deviceGpu, d);
  if (!r) {
    log_.info("cuda: " + r.error());
    *error = r.error();
    return nullptr;
  }
  log_.info("cuda: restored " + std::to_string((*r)["processes"].size()) + " processes");
  return std::move(*r);
}

Json Coordinator::pluginResults() const {
  Json list = Json::array();
  // Freezing comes last in quiesce and release, thawing first in the others; the CUDA
  // step sits next to it.
  bool freezes = op_->cmd == Command::quiesce || op_->cmd == Command::release;
  if (!freezes && !op_->fsResult.is_null()) list.push_back(op_->fsResult);
  if (!freezes && !op_->cudaResult.is_null()) list.push_back(op_->cudaResult);
  for (const auto& p : op_->parts) {
    Json entry = {{"name", p.plugin}, {"pid", p.pid}, {"result", p.anyDone ? "done" : "not_mine"}};
    if (p.data) entry["data"] = *p.data;
    list.push_back(std::move(entry));
  }
  if (freezes && !op_->cudaResult.is_null()) list.push_back(op_->cudaResult);
  if (freezes && !op_->fsResult.is_null()) list.push_back(op_->fsResult);
  return list;
}

std::expected<std::string, std::string> Coordinator::resultReply(Json result) const {
  auto line = okReplyIfFits(op_->hostId, std::move(result));
  if (line) return std::move(*line);
  size_t publishers = static_cast<size_t>(
      std::count_if(op_->parts.begin(), op_->parts.end(), [](const Op::Part& p) { return p.data.has_value(); }));
  return std::unexpected("published data too large: the reply would be " + std::to_string(line.error()) +
                         " bytes, more than the " + std::to_string(wire::kMaxLineBytes) +
                         "-byte line limit (data from " + std::to_string(publishers) + " processes)");
}

std::string Coordinator::waitingFor() const {
  std::vector<std::string> names;
  for (const auto& p : op_->parts)
    if (p.waiting) names.push_back(who(p.pid, p.plugin));
  return names.empty() ? std::string("nobody") : joined(names);
}

void Coordinator::shutdown() {
  if (freezeJob_) {
    freezeJob_->cancel();
    pollfd p{freezeJob_->doneFd(), POLLIN, 0};
    (void)::poll(&p, 1, 2000);
    if (freezeJob_->finished()) {
      onFreezeDone();
    } else {
      // FIFREEZE is stuck in the kernel; exiting ends the thread with the process.
      log_.info("fsfreeze: a freeze is still running at exit (" + freezeJob_->current() + ")");
      (void)freezeJob_.release();
    }
  }
  // A CUDA process left checkpointed would stay locked for good.
  if (cuda_.holding()) {
    std::string err;
    (void)restoreCuda({}, Deadline::in(std::chrono::seconds(60)), &err);
    if (!err.empty()) log_.info("cuda: at exit: " + err);
  }
  // Drained froze nothing: a thaw there could only undo someone else's freeze.
  if (state_ == AgentState::quiesced && config_.fsfreeze) {
    std::string err;
    (void)thawFilesystems(&err);
    if (!err.empty()) log_.info("fsfreeze: at exit: " + err);
  }
}

}  // namespace vmckpt::agent
