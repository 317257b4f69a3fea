// restoreGroup: the members of one group snapshot brought back together (see
// lifecycle.hpp). Passes over the members: load each paused, continue each, then the
// agent rounds (restored, connect, thaw: group_rounds.hpp). The snapshot was taken with every member
// quiesced, so each guest's plugins hold their traffic (the ib interposer's gate is
// closed in the captured memory) until every member runs and has reconnected.
#include <algorithm>
#include <chrono>
#include <set>

#include "common/log.hpp"
#include "common/strings.hpp"
#include "vmm/group_rounds.hpp"
#include "vmm/lifecycle.hpp"
#include "vmm/store/catalog.hpp"

namespace vmckpt::vmm {

namespace {

using GroupClock = std::chrono::steady_clock;

double msSince(GroupClock::time_point t0) {
  return std::chrono::duration<double, std::milli>(GroupClock::now() - t0).count();
}

// The newest snapshot of `entries` in the group whose id or name is `ref`.
const store::SnapshotEntry* groupMember(const std::vector<store::SnapshotEntry>& entries, const std::string& ref) {
  const store::SnapshotEntry* found = nullptr;
  for (const auto& e : entries) {  // oldest first: the last match is the newest
    const auto& g = e.manifest.group;
    if (g && (g->id == ref || g->name == ref)) found = &e;
  }
  return found;
}

}  // namespace

Result<GroupRestoreResult> VmManager::restoreGroup(const std::vector<std::string>& names, const std::string& ref,
                                                   const RestoreOptions& opts) {
  const auto t0 = GroupClock::now();
  if (names.empty()) return fail(Errc::invalidArgument, "restore --group: name the member VMs");
  if (!opts.asName.empty()) return fail(Errc::invalidArgument, "restore --group: --as does not apply to a group");
  if (std::set<std::string>(names.begin(), names.end()).size() != names.size())
    return fail(Errc::invalidArgument, "restore --group: a VM is named twice");

  // Each member's snapshot of the group, all of the same group snapshot.
  GroupRestoreResult out;
  std::vector<std::string> groupVms;
  for (const auto& name : names) {
    auto entries = snapshots(name);
    if (!entries) return fail(entries.error().context("restore --group"));
    const store::SnapshotEntry* e = groupMember(*entries, ref);
    if (e == nullptr) return fail(Errc::notFound, cat("restore --group: VM ", name, " has no snapshot of group '", ref, "'"));
    const auto& g = *e->manifest.group;
    if (out.id.empty()) {
      out.id = g.id;
      out.group = g.name;
      groupVms = g.vms;
    } else if (g.id != out.id) {
      return fail(Errc::invalidArgument, cat("restore --group: the newest snapshots of group '", ref, "' of ", names.front(),
                                             " and ", name, " are from different group snapshots (", out.id, ", ", g.id,
                                             "); name the group snapshot by its id"));
    }
    out.members.push_back({name, e->manifest.id});
    if (opts.paused && e->manifest.devicesReleased())
      return fail(Errc::invalidArgument, cat("restore --group --paused: group snapshot ", g.id, " was taken with ", name,
                                             "'s devices released; its members reconnect only together, as they "
                                             "start: restore the group without --paused"));
  }
  std::vector<std::string> want = groupVms, got = names;
  std::sort(want.begin(), want.end());
  std::sort(got.begin(), got.end());
  if (want != got)
    return fail(Errc::invalidArgument, cat("restore --group: group snapshot ", out.id, " has the members ", join(groupVms, ", "),
                                           "; name exactly those (a member restored without its peers would talk to "
                                           "guests that moved on)"));

  // 1. Load every member, paused. A failure stops the ones loaded so far.
  size_t loaded = 0;
  auto unwind = [&](const Error& e) -> Result<GroupRestoreResult> {
    for (size_t i = 0; i < loaded; ++i)
      if (auto s = stop(out.members[i].vm, StopOptions{.force = true}); !s)
        log::warn("restore --group: could not stop ", out.members[i].vm, ": ", s.error().message());
    return fail(e.context(loaded > 0 ? cat("restore --group ", out.id, " (the members restored before it were stopped)")
                                     : cat("restore --group ", out.id)));
  };
  for (auto& m : out.members) {
    RestoreOptions one = opts;
    one.paused = true;
    one.inGroup = true;
    auto r = restore(m.vm, m.snapshot, one);
    if (!r) return unwind(r.error());
    m.restoreMs = r->restoreMs;
    ++loaded;
  }
  if (opts.paused) {
    out.totalMs = msSince(t0);
    return out;  // each gets 'restored' on its `vmckpt resume`
  }

  // 2. Continue all, then 3. the agent rounds: 'restored' to every member (plugins
  // rebuild and publish their new ids), 'connect' to every member with everything
  // published, 'thaw' to every member (plugins resume their traffic only once every
  // peer is connected). A member whose agent fails a round is noted and the rounds go
  // on, so no member is left with its traffic held.
  const auto firstCont = GroupClock::now();
  for (auto& m : out.members)
    if (auto t = transition(m.vm, false, false); !t) return unwind(t.error());
  out.resumeSpreadMs = msSince(firstCont);
  std::vector<RoundMember> rounds;
  for (const auto& m : out.members) {
    auto held = lockVm(m.vm);
    if (!held) return fail(held.error().context("restore --group"));
    rounds.push_back({.vm = m.vm, .socket = held->paths.agentSocket});
  }
  // Round 1 to every member whose 'restored' is pending (not one resumed since, after
  // restore --paused).
  const RoundsOutcome done = runGroupRounds(rounds, "restored", [this](RoundMember& m) -> Result<Json> {
    auto held = lockVm(m.vm);
    if (!held) return fail(held.error());
    Json mine = Json::object();
    auto sent = deliverPendingRestored(*held, &mine);
    if (!sent) return fail(sent.error());
    m.told = sent->has_value();
    if (sent->has_value() && !**sent) return fail((*sent)->error());
    return mine;
  });
  for (size_t i = 0; i < out.members.size(); ++i) {
    out.members[i].agentNote = rounds[i].note;
    out.members[i].agentMs = rounds[i].agentMs;
  }
  out.publishedBytes = done.publishedBytes;
  out.exchangeMs = done.ms;
  out.totalMs = msSince(t0);
  return out;
}

}  // namespace vmckpt::vmm
