// restoreGroup: the members of one group snapshot brought back together (see
// lifecycle.hpp). Passes over the members: load each paused, continue each, then the
// agent rounds (restored, connect, thaw). The snapshot was taken with every member
// quiesced, so each guest's plugins hold their traffic (the ib interposer's gate is
// closed in the captured memory) until every member runs and has reconnected.
#include <algorithm>
#include <chrono>
#include <set>

#include "common/log.hpp"
#include "common/strings.hpp"
#include "vmm/agent/agent_client.hpp"
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
  const auto exchange = GroupClock::now();
  auto note = [](GroupRestoreResult::Member& m, const std::string& what, const Error& e) {
    if (!m.agentNote.empty()) return;
    m.agentNote = cat("the guest runs, but its agent did not take '", what, "': ", e.message());
    log::warn("VM ", m.vm, ": ", m.agentNote);
  };
  Json published = Json::object();
  std::vector<bool> told(out.members.size(), false);
  for (size_t i = 0; i < out.members.size(); ++i) {
    auto& m = out.members[i];
    auto held = lockVm(m.vm);
    if (!held) return fail(held.error().context("restore --group"));
    const auto ta = GroupClock::now();
    auto sent = deliverPendingRestored(*held, &published);
    if (!sent) return fail(sent.error());
    told[i] = sent->has_value();
    if (sent->has_value() && !**sent) note(m, "restored", (*sent)->error());
    m.agentMs = msSince(ta);
  }
  // 'connect', then 'thaw', to every member told 'restored' (not one whose 'restored'
  // was no longer pending: restore --paused, resumed since).
  auto eachTold = [&](const char* what, auto&& send) -> Status {
    for (size_t i = 0; i < out.members.size(); ++i) {
      if (!told[i]) continue;
      auto& m = out.members[i];
      auto held = lockVm(m.vm);
      if (!held) return fail(held.error().context("restore --group"));
      const auto ta = GroupClock::now();
      if (Status s = send(held->paths.agentSocket); !s) note(m, what, s.error());
      m.agentMs += msSince(ta);
    }
    return {};
  };
  // The agents' line limit bounds what 'connect' can carry.
  const std::string merged = published.dump();
  out.publishedBytes = merged.size();
  constexpr size_t kMaxPublished = 60000;
  VMCKPT_TRY(eachTold("connect", [&](const std::string& socket) -> Status {
    if (merged.size() > kMaxPublished)
      return fail(Errc::invalidArgument, cat("the members published ", merged.size(), " bytes of ids, more than the ",
                                             kMaxPublished, " one agent message carries"));
    return agent::connectPeers(socket, published);
  }));
  VMCKPT_TRY(eachTold("thaw", [](const std::string& socket) { return agent::notifyThaw(socket); }));
  out.exchangeMs = msSince(exchange);
  out.totalMs = msSince(t0);
  return out;
}

}  // namespace vmckpt::vmm
