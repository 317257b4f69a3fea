// VmManager::recover: what a killed vmckpt left behind, finished or rolled back. Runs under
// the VM lock (lockVm calls it), so the process that wrote the journal is gone. Every step
// is idempotent: a recovery that is itself killed is redone by the next command.

#include <chrono>
#include <cstdio>
#include <cstring>

#include "common/fs.hpp"
#include "common/log.hpp"
#include "common/scope_exit.hpp"
#include "common/strings.hpp"
#include "host-plugins/vfio/hotplug.hpp"
#include "vmm/agent/agent_client.hpp"
#include "vmm/journal.hpp"
#include "vmm/lifecycle.hpp"
#include "vmm/migrate_disks.hpp"
#include "vmm/qemu_boot.hpp"
#include "vmm/qemu_process.hpp"
#include "vmm/store/backend.hpp"
#include "vmm/userfault.hpp"
#include "vmm/vm_record.hpp"

namespace vmckpt::vmm {
namespace {

using namespace std::chrono_literals;

void thawAgent(const VmPaths& p, RecoveryReport& r) {
  auto a = agent::Client::connect(p.agentSocket, Deadline::in(2s));
  auto t = a ? a->call("thaw", {{"deadline_ms", 5000}}, Deadline::in(8s)) : Result<Json>(fail(a.error()));
  r.actions.push_back(t ? "thawed the guest (its agent had quiesced it)" : cat("could not thaw the guest: ", t.error().message()));
}

// The interrupted snapshot's QEMU: a migration still running is cancelled; a guest the
// snapshot paused runs again; a guest the agent froze is thawed; guest RAM an unfinished
// live snapshot left write-protected is released (userfault.hpp), before QMP (whose
// commands a main loop stuck on that RAM would never answer) and after the cancel.
void recoverSnapshotGuest(const VmPaths& p, const VmSpec& spec, const JournalEntry& j, RecoveryReport& r) {
  PidCheck pc = checkPidFile(p);
  if (pc.state != PidState::alive) {
    r.actions.push_back("QEMU is not running (it ended during the snapshot): the VM is stopped");
    return;
  }
  int released = 0;
  auto releaseRam = [&] {  // a failure matters only where a thread waits on that RAM
    if (auto n = releaseWriteProtection(pc.pid)) released += *n;
    else if (!threadsStuckInUserfault(pc.pid).empty())
      r.actions.push_back(cat("could not lift the live snapshot's write protection: ", n.error().message()));
  };
  releaseRam();
  auto c = connectQmp(p, Deadline::in(5s));
  if (!c) {
    r.actions.push_back(cat("could not reach QEMU to resume the guest: ", c.error().message()));
    return;
  }
  if (auto m = settleMigration(*c, Deadline::in(5s)); !m) r.actions.push_back(cat("device-state migration: ", m.error().message()));
  else if (*m) r.actions.push_back("cancelled the snapshot's migration stream");
  releaseRam();
  if (released > 0) r.actions.push_back("lifted the write protection an unfinished live snapshot left on guest RAM");
  // A live snapshot's setting, so that the next migration is not a background snapshot.
  (void)c->execute("migrate-set-capabilities", {{"capabilities", {{{"capability", "background-snapshot"}, {"state", false}}}}});
  auto st = c->execute("query-status");
  std::string status = st ? qmp::stringField(*st, "status") : "";
  bool stopped = status == "paused" || status == "postmigrate" || status == "finish-migrate";
  if (j.guestWasRunning && stopped) {
    if (auto s = contAfterMigration(*c, Deadline::in(5s)); s) r.actions.push_back("resumed the guest the snapshot had paused");
    else r.actions.push_back(cat("could not resume the guest: ", s.error().message()));
  }
  // Its passthrough devices, before the thaw (the guest's plugins expect them back).
  if (j.unplugged) {
    auto plugged = vfio::plugMissing(*c, spec.passthroughHere(), {});
    r.actions.push_back(plugged ? "plugged back the passthrough devices the snapshot had unplugged"
                                : cat("could not plug back the passthrough devices: ", plugged.error().message()));
  }
  if (j.quiesced) thawAgent(p, r);
}

// The source of an interrupted live migration. QEMU carries on by itself after vmckpt
// migrate dies: a migration still in pre-copy is cancelled and the guest runs here again;
// one that completed (or switched to postcopy) may have given the guest to the receiver,
// so this copy stays stopped rather than run the same guest twice.
void recoverMigrateSource(const VmPaths& p, const JournalEntry& j, std::size_t diskCount, RecoveryReport& r) {
  const std::string to = j.peer.empty() ? std::string("the receiver") : j.peer;
  PidCheck pc = checkPidFile(p);
  if (pc.state != PidState::alive) {
    r.actions.push_back(cat("QEMU is not running (it ended during the migration to ", to, "): the VM is stopped here"));
    return;
  }
  auto c = connectQmp(p, Deadline::in(5s));
  if (!c) {
    r.actions.push_back(cat("could not reach QEMU to settle the migration to ", to, ": ", c.error().message()));
    return;
  }
  auto q = c->execute("query-migrate");
  std::string status = q ? qmp::stringField(*q, "status") : "";
  bool gone = status == "completed" || startsWith(status, "postcopy");
  if (!gone) {
    if (auto m = settleMigration(*c, Deadline::in(10s)); !m) {
      r.actions.push_back(cat("could not cancel the migration to ", to, ": ", m.error().message()));
      return;
    } else if (*m) {
      r.actions.push_back(cat("cancelled the migration to ", to));
    }
    q = c->execute("query-migrate");  // it may have completed before the cancel
    if (q && qmp::stringField(*q, "status") == "completed") status = "completed", gone = true;
  }
  if (gone) {
    r.actions.push_back(cat("the migration to ", to, " ", status == "completed" ? "completed" : "switched to postcopy",
                            " after vmckpt migrate ended: the guest runs there if the receiver started it, so it stays "
                            "stopped here (vmckpt resume runs this copy instead; vmckpt stop ends it)"));
    VmRecord rec = loadRecord(p);
    rec.stopKind = cat("migrated to ", to, " (unconfirmed)");
    rec.pendingRestored = j.quiesced;  // a resume here thaws its agent, as after a restore
    (void)saveRecord(p, rec);
    return;
  }
  if (diskCount > 0) {
    DiskMirrors::removeLeftovers(*c, diskCount);  // the source's disks were only read
    r.actions.push_back("removed the disk mirrors to the receiver");
  }
  // Migrate's settings, so that the next snapshot's migration is a plain one.
  (void)c->execute("migrate-set-capabilities", {{"capabilities",
                                                 {{{"capability", "postcopy-ram"}, {"state", false}},
                                                  {{"capability", "pause-before-switchover"}, {"state", false}}}}});
  auto st = c->execute("query-status");
  std::string run = st ? qmp::stringField(*st, "status") : "";
  if (j.guestWasRunning && run != "running") {
    if (auto s = contAfterMigration(*c, Deadline::in(5s)); s) r.actions.push_back("resumed the guest here");
    else r.actions.push_back(cat("could not resume the guest: ", s.error().message()));
  }
  if (j.quiesced) thawAgent(p, r);
}

// The interrupted in-place restore: finished if its QEMU got the guest going (or loaded it
// for --paused); otherwise rolled back to the live directory from before.
void recoverRestore(const VmPaths& p, const JournalEntry& j, RecoveryReport& r) {
  const std::string fresh = j.freshLive.empty() ? std::string() : p.dir + "/" + j.freshLive;
  const std::string old = j.oldLive.empty() ? std::string() : p.dir + "/" + j.oldLive;
  bool forward = false;
  PidCheck pc = checkPidFile(p);
  if (pc.state == PidState::alive) {
    std::string status, migration;
    if (auto c = connectQmp(p, Deadline::in(5s))) {
      if (auto st = c->execute("query-status")) status = qmp::stringField(*st, "status");
      if (auto mig = c->execute("query-migrate")) migration = qmp::stringField(*mig, "status");
    }
    forward = status == "running" || (j.keepPaused && status == "paused" && migration == "completed");
    if (!forward) {
      (void)killQemu(pc.pid, Deadline::in(5s));
      cleanRunFiles(p);
      r.actions.push_back(cat("stopped the half-restored QEMU (pid ", pc.pid, ", state ", status.empty() ? "unknown" : status, ")"));
    }
  }
  if (forward) {
    r.actions.push_back(cat("the restore of ", j.snapshotId, " had finished; kept it"));
    VmRecord rec = loadRecord(p);
    rec.head = j.snapshotId;
    (void)saveRecord(p, rec);
  } else if (!old.empty() && fs::exists(old)) {
    if (fs::exists(p.live)) (void)store::removeStoreTree(p.live);
    if (::rename(old.c_str(), p.live.c_str()) == 0) r.actions.push_back("put back the live directory from before the restore");
    else r.actions.push_back(cat("could not put back ", old, ": ", std::strerror(errno)));
  }
  for (const auto& dir : {fresh, old})
    if (!dir.empty() && fs::exists(dir)) {
      (void)store::removeStoreTree(dir);
      r.actions.push_back(cat("removed ", dir));
    }
}

}  // namespace

Json RecoveryReport::toJson() const {
  return {{"operation", operation.empty() ? Json() : Json(operation)},
          {"snapshot", snapshot.empty() ? Json() : Json(snapshot)},
          {"actions", actions}};
}

RecoveryReport VmManager::recoverLocked(const Held& held) {
  const VmPaths& p = held.paths;
  RecoveryReport r;
  auto journal = readJournal(p);
  if (!journal) r.actions.push_back(cat("journal unreadable (", journal.error().message(), "); cleaned up from what is on disk"));
  const JournalEntry* j = journal && *journal ? &**journal : nullptr;
  if (j) {
    r.operation = std::string(journalOpName(j->op));
    r.snapshot = j->snapshotId;
    if (j->op == JournalOp::snapshot) {
      recoverSnapshotGuest(p, held.spec, *j, r);
      if (!j->snapshotId.empty() && fs::exists(cat(p.snapshots, "/", j->snapshotId, "/manifest.json"))) {
        r.actions.push_back(cat("snapshot ", j->snapshotId, " had been published complete; kept it"));
        VmRecord rec = loadRecord(p);
        if (rec.head != j->snapshotId) {
          rec.head = j->snapshotId;
          (void)saveRecord(p, rec);
        }
      }
    } else if (j->op == JournalOp::migrate) {
      recoverMigrateSource(p, *j, held.spec.disks.size(), r);
    } else {
      recoverRestore(p, *j, r);
    }
  }
  // Whatever the journal says: no half-built snapshot stays, nor a restore's scratch copy
  // (only names vmckpt makes, under the VM lock, so nobody is using them).
  for (const auto& n : fs::entriesWithPrefix(p.snapshots, ".tmp-")) {
    (void)store::removeStoreTree(p.snapshots + "/" + n);
    r.actions.push_back(cat("removed the unpublished snapshot ", n.substr(5)));
  }
  if (fs::exists(p.live)) {
    for (const auto& n : fs::entriesWithPrefix(p.dir, ".live-")) {
      if (!isRestoreScratchName(n)) continue;
      (void)store::removeStoreTree(p.dir + "/" + n);
      r.actions.push_back(cat("removed ", n));
    }
  }
  if (j || !journal) {
    if (auto s = clearJournal(p); !s) r.actions.push_back(cat("could not remove the journal: ", s.error().message()));
  }
  if (!r.actions.empty() && reportRecovery_) {
    std::string what = r.operation.empty() ? std::string("leftovers") : cat("an interrupted ", r.operation);
    log::warn("VM ", held.spec.name, ": recovered ", what, ": ", join(r.actions, "; "));
  }
  return r;
}

Result<RecoveryReport> VmManager::recover(const std::string& name) {
  reportRecovery_ = false;
  ScopeExit restoreReporting([this] { reportRecovery_ = true; });
  auto held = lockVm(name);  // recovers
  if (!held) return fail(held.error());
  return lastRecovery_;
}

}  // namespace vmckpt::vmm
