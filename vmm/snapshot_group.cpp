// VmManager::snapshotGroup: the VMs of one job captured while all of them are stopped.
// Each stage runs across the group before the next (snapshot_job.hpp): quiesce all (the
// agents park device state, e.g. drained verbs queues, while every guest still runs),
// pre-flush all, pause all, capture all, resume all (each thaws as it runs), publish all. A failure at
// any stage unwinds every member: resumed, thawed, staging removed, nothing published.
#include <algorithm>
#include <chrono>
#include <memory>
#include <optional>
#include <set>

#include "common/signal_block.hpp"
#include "common/strings.hpp"
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
  // Unwound in reverse order of begin(): the last locked is the first released.
  struct Unwind {
    std::vector<std::unique_ptr<VmSnapshot>>& m;
    ~Unwind() {
      while (!m.empty()) m.pop_back();
    }
  } unwind{members};

  auto inGroup = [&](const Error& e) { return fail(e.context(cat("group snapshot ", group))); };
  for (const auto& name : names) {
    auto job = VmSnapshot::begin(*this, name, opts, true, t0);
    if (!job) return inGroup(job.error());
    members.push_back(std::move(*job));
  }
  for (auto& m : members)
    if (auto s = m->quiesce(); !s) return inGroup(s.error());
  for (auto& m : members)
    if (auto s = m->preflush(); !s) return inGroup(s.error());
  for (auto& m : members)
    if (auto s = m->pause(); !s) return inGroup(s.error());
  for (auto& m : members)
    if (auto s = m->capture(); !s) return inGroup(s.error());
  // Every member resumes even when one cannot; the first failure is the one reported.
  std::optional<Error> resumeFailed;
  for (auto& m : members)
    if (auto s = m->resume(); !s && !resumeFailed) resumeFailed = s.error();
  if (resumeFailed) return inGroup(*resumeFailed);

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
    out.members.push_back(std::move(*r));
  }
  out.totalMs = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  return out;
}

}  // namespace vmckpt::vmm
