// VmManager::restore: a writable clone of the snapshot becomes the VM's live directory,
// QEMU maps the cloned RAM file (pages fault in lazily) and loads only device state; or,
// for a live snapshot (ram stream), QEMU reads all of RAM from the snapshot's stream into
// anonymous RAM.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <functional>
#include <optional>

#include "common/fs.hpp"
#include "common/log.hpp"
#include "common/scope_exit.hpp"
#include "common/sha256.hpp"
#include "common/strings.hpp"
#include "common/unique_fd.hpp"
#include "host-plugins/vfio/hotplug.hpp"
#include "vmm/agent/agent_client.hpp"
#include "vmm/fault_injection.hpp"
#include "vmm/journal.hpp"
#include "vmm/lifecycle.hpp"
#include "vmm/qemu_boot.hpp"
#include "vmm/qemu_process.hpp"
#include "vmm/store/backend.hpp"
#include "vmm/vm_record.hpp"

namespace vmckpt::vmm {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
constexpr auto kIncomingTimeout = 60s;
const char* kDevstateFdName = "vmckpt-devstate";

// What restore needs before it touches anything: every file present with its size, and
// the migration stream (the one file QEMU parses) matching its checksum; a stream with
// all of RAM in it (live snapshots) is too large for one and is checked by size. `vmckpt
// verify` checks every checksum. Returns the stream opened: QEMU gets that descriptor, so
// the bytes it parses are the bytes that were checked (and they are in the page cache).
Result<UniqueFd> checkForRestore(const store::SnapshotEntry& s) {
  struct stat dst{};
  if (::lstat(s.dataDir().c_str(), &dst) != 0 || !S_ISDIR(dst.st_mode))
    return fail(Errc::corrupt, cat("snapshot ", s.manifest.id, ": data/ is ",
                                   S_ISLNK(dst.st_mode) ? "a symbolic link" : "missing"));
  for (const auto& f : s.manifest.files) {
    std::string path = s.dataDir() + "/" + f.name;
    struct stat st{};
    if (::lstat(path.c_str(), &st) != 0)
      return fail(Errc::corrupt, cat("snapshot ", s.manifest.id, ": ", f.name, " is missing"));
    if (!S_ISREG(st.st_mode))
      return fail(Errc::corrupt, cat("snapshot ", s.manifest.id, ": ", f.name,
                                     S_ISLNK(st.st_mode) ? " is a symbolic link (planted?)" : " is not a regular file"));
    if (static_cast<std::uint64_t>(st.st_size) != f.size)
      return fail(Errc::corrupt, cat("snapshot ", s.manifest.id, ": ", f.name, " has size ", st.st_size,
                                     ", manifest says ", f.size));
  }
  const bool fullStream = s.manifest.ram == store::SnapshotRam::stream;
  const std::string name = store::streamFileName(s.manifest.ram);
  const auto* dev = s.manifest.file(name);
  if (!dev || (!fullStream && dev->sha256.empty()))
    return fail(Errc::corrupt, cat("snapshot ", s.manifest.id, ": manifest has no ",
                                   fullStream ? "state stream" : "checksummed device state"));
  std::string path = s.dataDir() + "/" + name;
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd) return failErrno(cat("open ", path), errno);
  if (dev->sha256.empty()) return fd;  // larger than store::kChecksumLimit: checked by size above
  auto sum = sha256Fd(fd.get(), path);
  if (!sum) return fail(sum.error());
  if (*sum != dev->sha256)
    return fail(Errc::corrupt, cat("snapshot ", s.manifest.id, ": ", fullStream ? "state stream" : "device state",
                                   " fails its sha256 check (damaged or tampered with)"));
  if (::lseek(fd.get(), 0, SEEK_SET) != 0) return failErrno(cat("lseek ", path), errno);
  return fd;
}

// Starts reading the clone's boot files into the page cache while QEMU starts: a fresh
// clone is a new inode with nothing cached, and QEMU reads kernel and initrd late in its
// start-up, one read() each (~15 ms of a 60 ms start on a Btrfs loop store when cold).
void prefetchBootFiles(const VmPaths& p) {
  for (const auto& f : {p.kernel, p.initrd}) {
    UniqueFd fd(::open(f.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    struct stat st{};
    if (!fd || ::fstat(fd.get(), &st) != 0) continue;
    // One call reads ahead at most the device's readahead window (4 MiB on a loop device).
    constexpr off_t kStep = 1 << 20;
    for (off_t at = 0; at < st.st_size; at += kStep) (void)::posix_fadvise(fd.get(), at, kStep, POSIX_FADV_WILLNEED);
  }
}

// Loads the snapshot's migration stream. With the RAM file mapped (ram file) only device
// state is in it, and x-ignore-shared must match what the source set; a full stream (ram
// stream) fills anonymous RAM, which takes time in proportion to its size.
Status loadStream(qmp::Client& c, const VmPaths& p, UniqueFd dev, const store::Manifest& m) {
  const bool fullStream = m.ram == store::SnapshotRam::stream;
  auto caps = c.execute("migrate-set-capabilities",
                        {{"capabilities",
                          {{{"capability", "x-ignore-shared"}, {"state", !fullStream}},
                           {{"capability", "events"}, {"state", true}}}}});
  if (!caps) return fail(caps.error());
  int fd = dev.get();
  if (auto r = c.execute("getfd", {{"fdname", kDevstateFdName}}, Deadline::in(5s), std::span<const int>(&fd, 1)); !r)
    return fail(r.error());
  dev.reset();
  if (auto r = c.execute("migrate-incoming", {{"uri", cat("fd:", kDevstateFdName)}}); !r) return fail(r.error());
  auto ev = c.waitEvent(
      [](const qmp::Event& e) {
        if (e.name != "MIGRATION") return false;
        std::string s = qmp::stringField(e.data, "status");
        return s == "completed" || s == "failed" || s == "cancelled";
      },
      Deadline::in(fullStream ? kIncomingTimeout + std::chrono::seconds(m.spec.memoryBytes >> 25) : kIncomingTimeout));
  const char* what = fullStream ? "the state stream" : "the device state";
  if (!ev) return fail(ev.error().context(cat("loading ", what)));
  if (qmp::stringField(ev->data, "status") != "completed") {
    std::string why = qemuErrorLine(p.qemuLog);
    return fail(Errc::processFailed, cat("QEMU could not load ", what, ": ", why.empty() ? "no message" : why));
  }
  return {};
}

}  // namespace

Result<RestoreResult> VmManager::restore(const std::string& name, const std::string& ref, const RestoreOptions& opts) {
  auto t0 = Clock::now();
  const bool inPlace = opts.asName.empty() || opts.asName == name;
  const std::string target = inPlace ? name : opts.asName;
  auto ctx = [&](const Error& e) { return fail(e.context(cat("restore ", target))); };

  auto held = lockVm(name);
  if (!held) return fail(held.error());
  store::Catalog catalog(held->paths.snapshots);
  auto snap = catalog.resolve(ref);
  if (!snap) return ctx(snap.error());
  const store::Manifest& m = snap->manifest;
  auto devstate = checkForRestore(*snap);
  if (!devstate) return ctx(devstate.error());
  if ((m.ram == store::SnapshotRam::stream) != (m.spec.ram == RamBackend::anon))
    return ctx(Error(Errc::corrupt, cat("snapshot ", m.id, " keeps RAM as a ", store::snapshotRamName(m.ram),
                                        " but its VM spec says ", ramBackendName(m.spec.ram), " RAM")));
  if (m.group && m.devicesReleased() && !opts.inGroup)
    return ctx(Error(Errc::invalidArgument,
                     cat("snapshot ", m.id, " is a member of group snapshot ", m.group->id, " ('", m.group->name,
                         "'), taken with its devices released; restore the group together: vmckpt restore ",
                         join(m.group->vms, " "), " --group ", m.group->id)));
  auto backend = store::makeBackend(m.mode);

  VmSpec spec = m.spec;
  for (const auto& [k, v] : opts.deviceMap) spec.deviceMap[k] = v;
  // A pci_ID key must name a passthrough device with a host= to replace.
  if (auto mapped = vfio::applyDeviceMap(spec.passthrough, spec.deviceMap); !mapped) return ctx(mapped.error());
  std::optional<VmPaths> staged;  // --as: the new VM's directory while it is being built
  std::optional<VmLock> targetLock;  // --as: the new VM's lock, held until it is complete
  std::string oldLive;            // in place: the replaced live directory, until QEMU runs
  if (inPlace) {
    if (PidCheck pc = checkPidFile(held->paths); pc.state == PidState::alive)
      return ctx(Error(Errc::wrongState, cat("VM ", name, " is running; stop it first, or restore --as NEW_NAME")));
  } else {
    VMCKPT_TRY(validateVmName(target));
    if (root_.vmExists(target)) return ctx(Error(Errc::alreadyExists, cat("a VM named ", target, " already exists")));
    spec.name = target;
    // The guest's NIC keeps its MAC (it is in the device state anyway).
    if (spec.net.mac.empty()) spec.net.mac = defaultMac(name);
  }
  VmPaths p = root_.vm(target);

  // 1. The writable clone becomes live/. The journal (in place) is cleared last, after undo.
  std::optional<ScopeExit<std::function<void()>>> journalDone;
  ScopeExit undo([&] {
    if (inPlace) {
      if (!oldLive.empty()) {
        (void)store::removeStoreTree(p.live);
        ::rename(oldLive.c_str(), p.live.c_str());
      }
    } else if (staged) {
      (void)store::removeStoreTree(staged->dir);
    }
  });
  if (inPlace) {
    JournalEntry journal{.op = JournalOp::restore, .snapshotId = m.id, .keepPaused = opts.paused,
                         .freshLive = cat(".live-restore-", ::getpid()), .oldLive = cat(".live-old-", ::getpid()),
                         .pid = ::getpid(), .started = nowIso()};
    if (auto s = writeJournal(p, journal); !s) return ctx(s.error().context("journal"));
    journalDone.emplace(std::function<void()>([&p] { (void)clearJournal(p); }));
    std::string fresh = cat(p.dir, "/", journal.freshLive);
    (void)store::removeStoreTree(fresh);
    if (auto s = backend->cloneWritable(snap->dataDir(), fresh); !s) return ctx(s.error());
    oldLive = cat(p.dir, "/", journal.oldLive);
    if (::rename(p.live.c_str(), oldLive.c_str()) != 0) {
      int err = errno;
      oldLive.clear();
      (void)store::removeStoreTree(fresh);
      return ctx(Error::fromErrno(cat("rename ", p.live), err));
    }
    if (::rename(fresh.c_str(), p.live.c_str()) != 0) return ctx(Error::fromErrno(cat("rename ", fresh), errno));
    // The VM is what the snapshot was, on the hardware the device map now names.
    VMCKPT_TRY(fs::writeFileAtomic(p.spec, spec.toJson().dump(2) + "\n"));
  } else {
    // A vmckpt killed before the rename leaves vms/.restore-NAME-PID: removed once its process is gone.
    for (const auto& n : store::removeStaleStagingDirs(root_.vmsDir(), ".restore-", killOrphanQemu))
      log::info("removed ", n, " left by an interrupted restore --as");
    staged.emplace(cat(root_.vmsDir(), "/.restore-", target, "-", ::getpid()));
    for (const auto& d : {staged->dir, staged->run}) VMCKPT_TRY(fs::makeDirs(d, 0700));
    // The new VM's lock, taken before it has its name: the flock travels with the file
    // through the rename, so no other vmckpt sees (or "recovers") it half-built.
    auto lock = VmLock::acquire(*staged, target);
    if (!lock) return ctx(lock.error());
    targetLock.emplace(std::move(*lock));
    if (auto s = backend->cloneWritable(snap->dataDir(), staged->live); !s) return ctx(s.error());
    VMCKPT_TRY(fs::writeFileAtomic(staged->spec, spec.toJson().dump(2) + "\n"));
    JournalEntry journal{.op = JournalOp::restore, .snapshotId = m.id, .keepPaused = opts.paused,
                         .pid = ::getpid(), .started = nowIso()};
    if (auto s = writeJournal(*staged, journal); !s) return ctx(s.error().context("journal"));
    if (::renameat2(AT_FDCWD, staged->dir.c_str(), AT_FDCWD, p.dir.c_str(), RENAME_NOREPLACE) != 0) {
      int err = errno;
      return ctx(err == EEXIST || err == ENOTEMPTY ? Error(Errc::alreadyExists, cat("a VM named ", target, " already exists"))
                                                   : Error::fromErrno(cat("rename ", staged->dir), err));
    }
    staged.emplace(p.dir);  // undo now removes the published directory
    journalDone.emplace(std::function<void()>([&p] { (void)clearJournal(p); }));
  }

  // 2. QEMU on the clone, waiting for device state.
  RestoreResult::Phases phases;
  auto lap = [last = Clock::now()]() mutable {
    auto now = Clock::now();
    double ms = std::chrono::duration<double, std::milli>(now - last).count();
    last = now;
    return ms;
  };
  phases.cloneMs = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  if (spec.kernelBoot) prefetchBootFiles(p);
  VMCKPT_TRY(fs::makeDirs(p.run, 0700));
  {
    // The console log continues; mark where the restored guest picks up.
    UniqueFd log(::open(p.serialLog.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
    std::string mark = cat("\n[vmckpt: restored from snapshot ", m.id, " at ", nowIso(), "]\n");
    if (log) (void)!::write(log.get(), mark.data(), mark.size());
  }
  auto booted = bootQemu(spec, p, {root_.home(), true, m.machine});
  if (!booted) return ctx(booted.error());
  phases.qemuStartMs = lap();
  if (auto s = faultPoint("mid-restore", booted->pid()); !s) return ctx(s.error());
  if (auto s = loadStream(booted->qmp(), p, std::move(*devstate), m); !s) return ctx(s.error());
  (void)fs::removeFile(cat(p.live, "/", store::streamFileName(m.ram)));  // the clone's copy: QEMU read the snapshot's
  phases.devstateMs = lap();

  // 3. Run (a stream saved from a stopped guest arrives paused).
  if (!opts.paused && m.wasRunning) {
    (void)booted->qmp().takeEvents();
    if (auto ev = booted->qmp().executeUntilEvent("cont", Json::object(), "RESUME", Deadline::in(5s)); !ev)
      return ctx(ev.error());
  }
  phases.contMs = lap();
  // The passthrough devices the capture was taken without, into their empty slots (on the
  // host devices the map names), before the agent's plugins restart on them. A paused
  // guest finds them when it runs.
  if (!spec.passthrough.empty()) {
    if (auto s = vfio::plugAll(booted->qmp(), spec.passthroughHere(), {}); !s) return ctx(s.error().context("replug"));
  }
  phases.replugMs = lap();
  double restoreMs = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();

  // RESTART for the agent's plugins (and the filesystems frozen in the snapshot thaw).
  double agentMs = 0;
  std::string agentNote;
  if (spec.agent && !opts.paused) {  // a paused guest cannot answer: `resume` sends it then
    auto ta = Clock::now();
    auto r = agent::notifyRestored(p.agentSocket, Json(spec.deviceMap), m.quiesced ? 10s : 1s);
    agentMs = std::chrono::duration<double, std::milli>(Clock::now() - ta).count();
    if (!r) {
      agentNote = cat(m.quiesced ? "the guest runs, but its agent did not take 'restored' (plugins not restarted, "
                                   "filesystems may still be frozen): "
                                 : "no guest agent answered 'restored': ",
                      r.error().message());
      if (m.quiesced) log::warn(agentNote);
      else log::info(agentNote);
    }
  }

  VmRecord rec = inPlace ? loadRecord(p) : VmRecord{};
  noteBoot(rec, *booted);
  rec.head = inPlace ? m.id : std::string();
  rec.pendingRestored = spec.agent && opts.paused;
  VMCKPT_TRY(saveRecord(p, rec));
  booted->release();
  undo.cancel();
  if (!oldLive.empty()) {
    if (auto s = store::removeStoreTree(oldLive); !s) log::warn("could not remove the old live directory: ", s.error().message());
  }
  auto st = statusLocked(target, spec);
  if (!st) return fail(st.error());
  return RestoreResult{std::move(*st), m.id, restoreMs, agentMs, agentNote, phases};
}

}  // namespace vmckpt::vmm
