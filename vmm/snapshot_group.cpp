// VmManager::snapshotGroup: the VMs of one job captured while all of them are stopped.
// Each stage runs across the group before the next (snapshot_job.hpp): quiesce all (the
// agents park device state while every guest still runs: verbs queues drained), release
// all (the devices closed, so none is open during the capture), pre-flush all,
// pause all, capture all, resume all, the group's agent rounds (group_rounds.hpp: the
// plugins rebuild, learn each other's new ids, then resume their traffic), publish all.
// A failure at any stage unwinds every member: resumed, its agent through the same rounds
// (a released device reconnects only with its peers), staging removed, nothing published.
#include <algorithm>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <set>

#include "common/signal_block.hpp"
#include "common/strings.hpp"
#include "vmm/agent/agent_client.hpp"
#include "vmm/group_rounds.hpp"
#include "vmm/lifecycle.hpp"
#include "vmm/snapshot_capture.hpp"
#include "vmm/snapshot_job.hpp"
#include "vmm/store/catalog.hpp"

namespace vmckpt::vmm {

Result<GroupSnapshotResult> VmManager::snapshotGroup(const std::vector<std::string>& names, const std::string& group,
                                                     const SnapshotOptions& opts) {
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  if (auto ok = validateVmName(group); !ok)
    return fail(Errc::invalidArgument, cat("group name '", group, "': ", ok.error().message()));
  if (names.empty()) return fail(Errc::invalidArgument, cat("group ", group, ": no VMs named"));
  if (std::set<std::string>(names.begin(), names.end()).size() != names.size())
    return fail(Errc::invalidArgument, cat("group ", group, ": a VM is named twice"));
  if (opts.live)
    return fail(Errc::unsupported, cat("group ", group, ": --live is not supported for groups yet (the fast path only)"));

  // One hold for the whole group: a signal during any member's pause would leave the
  // others stopped. Declared before the members, so released after all of them unwound.
  SignalBlock holdSignals;
  std::vector<std::unique_ptr<VmSnapshot>> members;
  // The members' agents asked to release: their thaw is the group's rounds, taken over
  // from each member before it resumes (its own thaw would be a plain one).
  std::vector<RoundMember> handed;
  RoundsOutcome exchanged;
  // Whether any member was asked to release: before that, a failure needs no rounds
  // (drained plugins only reopen their gates, with a plain thaw); from then on every
  // member rebuilds, since its peers' ids change.
  bool releaseStarted = false, reconnected = false;
  auto takeOver = [&members, &handed] {
    for (auto& m : members)
      if (auto socket = m->handOverThaw()) handed.push_back({.vm = m->name(), .socket = *socket});
  };
  // Once: after the resume, or when unwinding.
  const std::function<void()> reconnect = [&takeOver, &handed, &exchanged, &releaseStarted, &reconnected] {
    if (!releaseStarted || reconnected) return;
    reconnected = true;
    takeOver();
    if (handed.empty()) return;
    exchanged = runGroupRounds(handed, "thaw", [](RoundMember& r) -> Result<Json> {
      r.told = true;
      return agent::thawForGroup(r.socket);
    });
  };
  // Every guest runs again, the agents through the rounds, then the members unwind in
  // reverse order of begin(): the last locked is the first released.
  struct Unwind {
    std::vector<std::unique_ptr<VmSnapshot>>& m;
    const std::function<void()>& reconnect;
    ~Unwind() {
      for (auto& member : m) member->resumeForUnwind();
      reconnect();
      while (!m.empty()) m.pop_back();
    }
  } unwind{members, reconnect};

  auto inGroup = [&](const Error& e) { return fail(e.context(cat("group snapshot ", group))); };
  for (const auto& name : names) {
    auto job = VmSnapshot::begin(*this, name, opts, true, t0);
    if (!job) return inGroup(job.error());
    members.push_back(std::move(*job));
  }
  // Two stages: every member drains before any closes its devices (a drain needs the
  // peers' queues alive), the barrier across the job.
  for (auto& m : members)
    if (auto s = m->quiesce(); !s) return inGroup(s.error());
  releaseStarted = true;
  for (auto& m : members)
    if (auto s = m->release(); !s) return inGroup(s.error());
  for (auto& m : members)
    if (auto s = m->preflush(); !s) return inGroup(s.error());
  for (auto& m : members)
    if (auto s = m->pause(); !s) return inGroup(s.error());
  for (auto& m : members)
    if (auto s = m->capture(); !s) return inGroup(s.error());
  // Every member resumes even when one cannot; the first failure is the one reported.
  takeOver();
  std::optional<Error> resumeFailed;
  for (auto& m : members)
    if (auto s = m->resume(); !s && !resumeFailed) resumeFailed = s.error();
  if (resumeFailed) return inGroup(*resumeFailed);
  reconnect();

  GroupSnapshotResult out;
  out.group = group;
  out.id = store::Catalog::newId();
  long long firstStop = 0, lastResume = 0;
  for (auto& m : members) {
    if (m->stopUs() && (!firstStop || m->stopUs() < firstStop)) firstStop = m->stopUs();
    lastResume = std::max(lastResume, m->resumeUs());
  }
  if (firstStop && lastResume > firstStop) out.pauseMs = static_cast<double>(lastResume - firstStop) / 1000.0;

  const store::SnapshotGroup manifestGroup{group, out.id, names};
  for (auto& m : members) {
    auto r = m->publish(manifestGroup);
    if (!r) {
      for (auto& done : members) done->withdraw();  // all or none of the group is visible
      return inGroup(r.error());
    }
    for (const auto& round : handed)
      if (round.vm == m->name() && !round.note.empty()) r->agentNote = round.note;
    out.members.push_back(std::move(*r));
  }
  out.exchangeMs = exchanged.ms;
  out.publishedBytes = exchanged.publishedBytes;
  out.totalMs = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  return out;
}

}  // namespace vmckpt::vmm
