// VmManager::snapshot (one VmSnapshot, snapshot_job.hpp, stage after stage): journal,
// quiesce, capture, thaw, seal, publish. The capture is the
// fast path of ../shared/DESIGN.md (below: the pause covers only the device-state migrate,
// x-ignore-shared skipping RAM, and the copy-on-write capture) or, with --live, QEMU's
// background-snapshot (snapshot_live.cpp).
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <dirent.h>

#include <algorithm>
#include <cstring>
#include <cerrno>
#include <chrono>
#include <functional>
#include <optional>
#include <thread>

#include "common/fs.hpp"
#include "common/log.hpp"
#include "common/scope_exit.hpp"
#include "common/sha256.hpp"
#include "common/signal_block.hpp"
#include "common/strings.hpp"
#include "common/unique_fd.hpp"
#include "vmm/guest_quiesce.hpp"
#include "vmm/fault_injection.hpp"
#include "vmm/journal.hpp"
#include "vmm/lifecycle.hpp"
#include "vmm/qemu_boot.hpp"
#include "vmm/qemu_process.hpp"
#include "vmm/snapshot_capture.hpp"
#include "vmm/snapshot_job.hpp"
#include "vmm/store/backend.hpp"
#include "vmm/store/extent_usage.hpp"
#include "vmm/vm_record.hpp"

namespace vmckpt::vmm {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr auto kMigrateTimeout = 60s;
const char* kDevstateFdName = "vmckpt-devstate";

store::StoreMode detectMode(const VmPaths& p) {
  if (store::isSubvolume(p.live)) return store::StoreMode::btrfs;
  store::StoreCapabilities caps = store::probeStore(p.dir);
  return caps.reflink ? store::StoreMode::reflink : store::StoreMode::copy;
}

std::vector<std::string> dataFiles(const store::SnapshotEntry& s) {
  std::vector<std::string> files;
  for (const auto& f : s.manifest.files) files.push_back(s.dataDir() + "/" + f.name);
  return files;
}

// The migration stream joins the capture once the guest runs again: renamed where tmp/
// and data/ are one directory tree, cloned (or copied) where data/ is a btrfs subvolume.
Status moveIntoCapture(const std::string& from, const std::string& to) {
  if (::rename(from.c_str(), to.c_str()) == 0) {
    if (::chmod(to.c_str(), 0400) != 0) return failErrno(cat("chmod ", to), errno);
    return {};
  }
  if (errno != EXDEV) return failErrno(cat("rename ", from, " -> ", to), errno);
  VMCKPT_TRY(fs::copyFile(from, to, fs::CopyMethod::reflinkOrCopy, 0400, fs::Sync::later));
  return fs::removeFile(from);
}

// Runs `migrate` to the device-state fd and waits until QEMU has written it. x-ignore-shared
// leaves out the RAM (it is in the store), so the migration completes at once, and it stops
// a running guest itself, just before it saves the devices: the pause starts there.
// Below this much free space a failed device-state write is reported as ENOSPC.
constexpr unsigned long long kLowSpaceBytes = 4ull << 20;

Status migrateDeviceState(qmp::Client& c, pid_t qemuPid, const std::string& devstateDir) {
  auto r = c.execute("migrate", {{"uri", cat("fd:", kDevstateFdName)}});
  if (!r) return fail(r.error());
  VMCKPT_TRY(faultPoint("mid-devstate", qemuPid));
  auto ev = c.waitEvent(
      [](const qmp::Event& e) {
        if (e.name != "MIGRATION") return false;
        std::string s = qmp::stringField(e.data, "status");
        return s == "completed" || s == "failed" || s == "cancelled";
      },
      Deadline::in(kMigrateTimeout));
  if (!ev) return fail(ev.error().context("waiting for the device state"));
  std::string status = qmp::stringField(ev->data, "status");
  if (status != "completed") {
    std::string why = status;
    if (auto q = c.execute("query-migrate"); q && q->is_object()) why = qmp::stringField(*q, "error-desc", status);
    // QEMU 7.2 gives no reason when writing the stream fails; a full store is the usual one.
    struct statvfs sv{};
    if (why == status && ::statvfs(devstateDir.c_str(), &sv) == 0) {
      unsigned long long freeBytes = static_cast<unsigned long long>(sv.f_bavail) * sv.f_frsize;
      if (freeBytes < kLowSpaceBytes)
        return fail(Errc::io, cat("could not write the device state: No space left on device (", formatSize(freeBytes),
                                  " free in the store)"), ENOSPC);
    }
    return fail(Errc::processFailed, cat("device state migration ", status, ": ", why));
  }
  return {};
}

// The fast path: RAM is a shared file in live/, captured copy-on-write with the disks.
class FastCapture final : public CapturePath {
 public:
  explicit FastCapture(CaptureRun& run) : r_(run) {}
  const char* streamFile() const override { return store::kDevstateFile; }

  Status prepare() override {
    auto caps = r_.qmp.execute("migrate-set-capabilities",
                               {{"capabilities",
                                 {{{"capability", "x-ignore-shared"}, {"state", true}},
                                  {{"capability", "events"}, {"state", true}}}}});
    if (!caps) return fail(caps.error());
    if (auto r = r_.qmp.execute("migrate-set-parameters", {{"max-bandwidth", kSnapshotMaxBandwidth}}); !r)
      return fail(r.error());
    return {};
  }

  // Pre-flush while the guest runs, so that few dirty pages remain for the pause.
  Status preflush() override {
    const VmPaths& p = r_.paths;
    auto tFlush = Clock::now();
    {
      UniqueFd mem(::open(p.mem.c_str(), O_RDONLY | O_CLOEXEC));
      if (!mem) return failErrno(cat("open ", p.mem), errno);
      if (::fdatasync(mem.get()) != 0) return failErrno(cat("fdatasync ", p.mem), errno);
    }
    if (auto s = r_.backend.settle(p.live); !s) return fail(s.error().context("pre-flush"));
    r_.manifest.timings.flushMs = elapsedMs(tFlush);
    flushed_ = true;
    return {};
  }

  Status capture(const std::function<void()>& whenRunning) override {
    store::Manifest& m = r_.manifest;
    const VmPaths& p = r_.paths;
    if (!flushed_) VMCKPT_TRY(preflush());

    // The device state goes next to the capture, not into live/: the capture would have to
    // write it back within the pause. It joins the capture once the guest runs again.
    auto dev = openStreamFile(r_, store::kDevstateFile, kDevstateFdName);
    if (!dev) return fail(dev.error());
    (void)r_.qmp.takeEvents();

    // --- the pause: from here on every exit path resumes the guest ---
    long long stopUs = 0;
    const bool pausesHere = m.wasRunning && !r_.callerPauses;
    bool resumed = !pausesHere;
    ScopeExit resumeOnFailure([&] {
      if (!resumed) resumeAfterFailedCapture(r_);
    });
    auto tDev = Clock::now();
    VMCKPT_TRY(faultPoint("after-quiesce", r_.qemuPid));
    VMCKPT_TRY(migrateDeviceState(r_.qmp, r_.qemuPid, r_.tmp));
    if (pausesHere) {
      auto ev = r_.qmp.waitEvent("STOP", Deadline::in(kSnapshotEventTimeout));  // sent during the migration
      if (!ev) return fail(ev.error().context("pause"));
      stopUs = ev->timestampUs;
    }
    VMCKPT_TRY(faultPoint("after-stop", r_.qemuPid));
    dev->reset();
    m.timings.devstateMs = elapsedMs(tDev);

    auto tCap = Clock::now();
    if (auto s = r_.backend.capture(p.live, r_.tmp + "/data"); !s) return fail(s.error().context("capture"));
    m.timings.captureMs = elapsedMs(tCap);
    VMCKPT_TRY(faultPoint("after-capture", r_.qemuPid));

    if (pausesHere) {
      auto ev = resumeAfterMigration(r_.qmp);
      if (!ev) return fail(ev.error().context("resume"));
      resumed = true;
      m.timings.pauseMs = static_cast<double>(ev->timestampUs - stopUs) / 1000.0;
    }
    // --- the guest runs again (unless the caller pauses it) ---
    if (!r_.callerPauses) whenRunning();
    return {};
  }

 private:
  CaptureRun& r_;
  bool flushed_ = false;
};

}  // namespace

Result<std::vector<store::ManifestFile>> describeFiles(const std::string& dir) {
  std::vector<store::ManifestFile> out;
  DIR* d = ::opendir(dir.c_str());
  if (!d) return failErrno(cat("opendir ", dir), errno);
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d))
    if (e->d_name[0] != '.') names.push_back(e->d_name);
  ::closedir(d);
  std::sort(names.begin(), names.end());
  for (const auto& n : names) {
    struct stat st{};
    std::string path = dir + "/" + n;
    if (::lstat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    store::ManifestFile f{n, static_cast<std::uint64_t>(st.st_size), {}};
    if (f.size <= store::kChecksumLimit) {
      auto sum = sha256File(path);
      if (!sum) return fail(sum.error());
      f.sha256 = *sum;
    }
    out.push_back(std::move(f));
  }
  return out;
}

double elapsedMs(Clock::time_point since) {
  return std::chrono::duration<double, std::milli>(Clock::now() - since).count();
}

std::unique_ptr<CapturePath> makeFastCapture(CaptureRun& run) { return std::make_unique<FastCapture>(run); }

Result<qmp::Event> resumeAfterMigration(qmp::Client& c) {
  auto deadline = Deadline::in(kSnapshotEventTimeout);
  for (;;) {
    auto ev = c.executeUntilEvent("cont", Json::object(), "RESUME", deadline);
    if (ev || !migrationNotFinalized(ev.error()) || deadline.expired()) return ev;
    std::this_thread::sleep_for(1ms);
  }
}

void resumeAfterFailedCapture(CaptureRun& run) {
  if (run.qemuGone()) return;
  auto resume = [](qmp::Client& q) -> Status {
    if (auto settled = settleMigration(q, Deadline::in(kSnapshotEventTimeout)); !settled) return fail(settled.error());
    return contAfterMigration(q, Deadline::in(kSnapshotEventTimeout));
  };
  auto r = resume(run.qmp);
  if (!r) {  // the connection may be what failed: try a fresh one
    if (auto c2 = connectQmp(run.paths, Deadline::in(5s))) r = resume(*c2);
  }
  if (!r) log::error("could not resume VM ", run.vm, " after a failed snapshot: ", r.error().message());
}

Result<UniqueFd> openStreamFile(CaptureRun& run, const std::string& name, const char* fdName) {
  const std::string path = cat(run.tmp, "/", name);
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!fd) return failErrno(cat("open ", path), errno);
  int raw = fd.get();
  if (auto r = run.qmp.execute("getfd", {{"fdname", fdName}}, Deadline::in(5s), std::span<const int>(&raw, 1)); !r)
    return fail(r.error());
  return fd;
}

Result<AgentPolicy> parseAgentPolicy(std::string_view s) {
  if (s == "required") return AgentPolicy::required;
  if (s == "auto") return AgentPolicy::automatic;
  if (s == "off") return AgentPolicy::off;
  return fail(Errc::invalidArgument, cat("agent policy '", s, "' is not one of required, auto, off"));
}

Error VmSnapshot::wrap(const Error& e) const {
  if (qemuGone())
    return Error(Errc::processFailed, cat("snapshot ", name_, ": QEMU exited during the snapshot (", e.message(),
                                          "); the VM is stopped, no snapshot was made"));
  return e.context(cat("snapshot ", name_));
}

// QEMU gone (killed, crashed): the guest cannot be resumed or thawed, and the error says
// so instead of whichever QMP or agent call noticed first.
bool VmSnapshot::qemuGone() const { return held_ && checkPidFile(held_->paths).state != PidState::alive; }

Result<std::unique_ptr<VmSnapshot>> VmSnapshot::begin(VmManager& mgr, const std::string& name,
                                                      const SnapshotOptions& opts, bool grouped, Clock::time_point t0) {
  std::unique_ptr<VmSnapshot> self(new VmSnapshot(mgr, name, opts, grouped));
  VmSnapshot& s = *self;
  s.t0_ = t0;
  auto held = mgr.lockVm(name);
  if (!held) return fail(held.error());
  s.held_.emplace(std::move(*held));
  const VmPaths& p = s.held_->paths;
  const VmSpec& spec = s.held_->spec;

  auto before = mgr.statusLocked(name, spec);
  if (!before) return fail(before.error());
  if (before->state != VmState::running && before->state != VmState::paused)
    return fail(Errc::wrongState, cat("snapshot ", name, ": VM is not running (state: ", vmStateName(before->state), ")"));
  if (!spec.passthrough.empty()) {
    std::vector<std::string> ids;
    for (const auto& d : spec.passthrough) ids.push_back(d.id);
    const std::string which = cat("passthrough devices (", join(ids, ", "), ")");
    if (grouped)
      return fail(s.wrap(Error(Errc::unsupported, cat("group snapshots of VMs with ", which, " are not supported yet"))));
    if (opts.live)
      return fail(s.wrap(Error(Errc::unsupported,
                               cat("snapshot --live of a VM with ", which,
                                   " is not supported (QEMU refuses device_add while it streams RAM)"))));
    if (before->state != VmState::running)
      return fail(s.wrap(Error(Errc::wrongState, cat("the VM is paused, and its guest must run to release its ", which,
                                                     " for the snapshot; resume it first"))));
  }
  // Each RAM backing has its one way to be captured.
  if (opts.live && spec.ram == RamBackend::file)
    return fail(s.wrap(Error(Errc::unsupported, "snapshot --live needs anonymous RAM (create --ram anon); this VM's RAM "
                                                "is a file in the store, whose fast-path snapshot already pauses only "
                                                "milliseconds")));
  if (!opts.live && spec.ram == RamBackend::anon)
    return fail(s.wrap(Error(Errc::unsupported, cat("this VM has anonymous RAM (created with --ram anon), which only a "
                                                    "live snapshot captures: ",
                                                    grouped ? "group snapshots do not take live snapshots yet"
                                                            : "use snapshot --live"))));

  store::StoreMode mode = opts.mode ? *opts.mode : detectMode(p);  // probe only when not given
  if (mode == store::StoreMode::btrfs && !store::isSubvolume(p.live))
    return fail(s.wrap(Error(Errc::unsupported,
                             "store mode btrfs needs live/ to be a subvolume (the VM was created outside btrfs)")));
  if (mode == store::StoreMode::copy && !opts.live)
    log::info("copy mode: the guest stays paused while its RAM and disks are copied (slow; use btrfs or XFS)");
  s.backend_ = store::makeBackend(mode);

  store::Catalog catalog(p.snapshots);
  s.rec_ = loadRecord(p);
  s.oldHead_ = s.rec_.head;
  if (!s.rec_.head.empty()) {
    if (auto ps = catalog.resolve(s.rec_.head)) s.parent_ = std::move(*ps);
  }

  store::Manifest& m = s.m_;
  m.id = store::Catalog::newId();
  m.vm = name;
  m.tag = opts.tag;
  m.parent = s.parent_ ? s.parent_->manifest.id : "";
  m.created = nowIso();
  m.mode = mode;
  m.vmckptVersion = VMCKPT_VERSION;
  m.spec = spec;
  m.wasRunning = before->state == VmState::running;

  // Ctrl-C, TERM or HUP from here until the guest runs thawed again would leave it paused
  // or frozen, or a half-built snapshot: they are held back until then (by the group for
  // a group). On a failure the destructor (resume, thaw, cleanup) runs first.
  if (!grouped) s.holdSignals_.emplace();
  // The journal first: from here a killed vmckpt leaves something to recover by.
  s.journal_ = JournalEntry{.op = JournalOp::snapshot, .snapshotId = m.id, .guestWasRunning = m.wasRunning,
                            .pid = ::getpid(), .started = m.created};
  if (auto w = writeJournal(p, s.journal_); !w) return fail(s.wrap(w.error().context("journal")));
  s.journalWritten_ = true;
  s.qemuPid_ = before->pid;
  VMCKPT_TRY(fs::makeDirs(p.snapshots, 0700));
  s.tmp_ = cat(p.snapshots, "/.tmp-", m.id);
  VMCKPT_TRY(fs::makeDirs(s.tmp_, 0700));
  s.tmpMade_ = true;
  (void)fs::removeFile(p.devstate);  // left by a restore that did not finish: not for the capture

  // The guest agent: required, or used when it answers quickly, or not asked.
  auto guest = QuiescedGuest::connect(spec, p, opts.agent);
  if (!guest) return fail(s.wrap(guest.error()));
  s.guest_.emplace(std::move(*guest));

  auto client = connectQmp(p, Deadline::in(5s));
  if (!client) return fail(s.wrap(client.error()));
  s.client_.emplace(std::move(*client));
  qmp::Client& c = *s.client_;
  m.qemuVersion = cat(c.greeting().major, ".", c.greeting().minor, ".", c.greeting().micro);
  m.machine = s.rec_.machine;
  if (m.machine.empty()) {
    auto mach = resolveMachine(c, spec.machine);
    if (!mach) return fail(s.wrap(mach.error()));
    m.machine = *mach;
  }
  VmSnapshot* raw = self.get();
  s.run_ = std::make_unique<CaptureRun>(CaptureRun{c, p, spec, s.name_, s.tmp_, *s.backend_, m, s.qemuPid_,
                                                   [raw] { return raw->qemuGone(); }, grouped});
  s.path_ = opts.live ? makeLiveCapture(*s.run_) : makeFastCapture(*s.run_);
  if (auto prep = s.path_->prepare(); !prep) return fail(s.wrap(prep.error()));
  return self;
}

VmSnapshot::~VmSnapshot() {
  // In the order the single-VM snapshot always undid things: the guest runs, then thaws,
  // then the half-built snapshot goes, the journal last (then the signals, then the lock).
  if (pausedByUs_ && run_) resumeAfterFailedCapture(*run_);
  if (replugPending_ && !qemuGone()) plugBackAfterFailure();
  if (thawPending_ && !qemuGone()) {
    if (auto t = guest_->thaw(); !t) log::error("could not thaw the guest after a failed snapshot: ", t.error().message());
  }
  if (tmpMade_ && !published_) (void)store::removeStoreTree(tmp_);
  if (journalWritten_ && held_) (void)clearJournal(held_->paths);
}

Status VmSnapshot::quiesce() {
  // A plugin that fails or misses the deadline fails the snapshot before any pause.
  if (auto f = faultPoint("before-quiesce", qemuPid_); !f) return fail(wrap(f.error()));
  if (!guest_->connected()) return {};
  journal_.quiesced = true;  // before asking: a kill during the quiesce must thaw too
  if (auto w = writeJournal(held_->paths, journal_); !w) return fail(wrap(w.error().context("journal")));
  // A group's plugins close their devices too (the group's rounds rebuild them).
  auto q = guest_->quiesce(opts_.quiesceTimeout, grouped_);
  m_.timings.quiesceMs = guest_->quiesceMs();
  if (!q) return fail(wrap(q.error()));
  m_.quiesced = true;
  m_.agentPlugins = guest_->plugins();
  thawPending_ = true;  // thawed when the guest runs again, or by the destructor
  return {};
}

Status VmSnapshot::release() {
  if (!grouped_ || !m_.quiesced) return {};
  auto r = guest_->release();
  m_.timings.quiesceMs = guest_->quiesceMs();
  if (!r) {
    m_.quiesced = false;
    return fail(wrap(r.error()));
  }
  m_.agentPlugins = guest_->plugins();
  return {};
}

void VmSnapshot::thawNowRunning() {
  if (!thawPending_) return;
  thawPending_ = false;
  if (auto t = guest_->thaw(); !t) {
    thawWarning_ = cat("the snapshot is complete, but the guest agent did not thaw: ", t.error().message());
    log::warn(thawWarning_);
  }
}

std::optional<std::string> VmSnapshot::handOverThaw() {
  if (!grouped_ || !guest_ || qemuGone()) return std::nullopt;
  auto socket = guest_->handOver();
  if (socket) thawPending_ = false;
  return socket;
}

void VmSnapshot::resumeForUnwind() {
  if (!pausedByUs_ || !run_) return;
  resumeAfterFailedCapture(*run_);
  pausedByUs_ = false;
}

Status VmSnapshot::preflush() {
  if (auto f = path_->preflush(); !f) return fail(wrap(f.error()));
  return {};
}

Status VmSnapshot::pause() {
  if (!grouped_ || !m_.wasRunning) return {};
  (void)client_->takeEvents();
  pausedByUs_ = true;  // from the command on: the destructor resumes it
  auto ev = client_->executeUntilEvent("stop", Json::object(), "STOP", Deadline::in(kSnapshotEventTimeout));
  if (!ev) return fail(wrap(ev.error().context("pause")));
  stopUs_ = ev->timestampUs;
  return {};
}

Status VmSnapshot::capture() {
  // Pause, capture, resume; as soon as the guest runs again its devices are plugged back
  // and it is thawed. A device that does not come back fails the snapshot: the destructor
  // tries once more, then thaws.
  auto whenRunning = [this] {
    if (auto r = replugNowRunning(); !r) {
      replugError_ = r.error();
      return;
    }
    thawNowRunning();
  };
  if (auto c = path_->capture(whenRunning); !c) return fail(wrap(c.error()));
  if (replugError_) return fail(wrap(replugError_->context("replug")));
  holdSignals_.reset();  // a signal that arrived meanwhile is delivered now
  return {};
}

Status VmSnapshot::resume() {
  if (!pausedByUs_) return {};
  auto ev = resumeAfterMigration(*client_);
  if (!ev) return fail(wrap(ev.error().context("resume")));
  pausedByUs_ = false;
  resumeUs_ = ev->timestampUs;
  m_.timings.pauseMs = static_cast<double>(resumeUs_ - stopUs_) / 1000.0;
  thawNowRunning();
  return {};
}

Result<SnapshotResult> VmSnapshot::publish(const std::optional<store::SnapshotGroup>& group) {
  const VmPaths& p = held_->paths;
  const std::string& tmp = tmp_;
  store::Manifest& m = m_;
  m.group = group;
  const std::string stream = path_->streamFile();
  if (auto mv = moveIntoCapture(cat(tmp, "/", stream), cat(tmp, "/data/", stream)); !mv)
    return fail(wrap(mv.error().context(
        cat(stream == store::kDevstateFile ? "device state" : "state stream", " into the snapshot"))));
  if (auto sealed = backend_->seal(tmp + "/data"); !sealed) return fail(wrap(sealed.error().context("seal the snapshot")));

  auto files = describeFiles(tmp + "/data");
  if (!files) return fail(wrap(files.error()));
  m.files = std::move(*files);
  if (const auto* d = m.file(stream)) m.devstateBytes = d->size;
  {
    std::vector<std::string> mine;
    for (const auto& f : m.files) mine.push_back(tmp + "/data/" + f.name);
    auto own = store::mapExtents(mine);
    if (!own) return fail(wrap(own.error()));
    store::ExtentMap parentMap;
    if (parent_) {
      auto pm = store::mapExtents(dataFiles(*parent_));
      if (pm) parentMap = std::move(*pm);
    }
    m.exclusiveBytes = store::exclusiveBytes(*own, parentMap);
  }
  m.timings.totalMs = elapsedMs(t0_);
  VMCKPT_TRY(store::writeManifest(tmp + "/manifest.json", m));

  if (auto f = faultPoint("before-publish", qemuPid_); !f) return fail(wrap(f.error()));
  // Publish: one rename makes the snapshot visible, complete.
  dest_ = cat(p.snapshots, "/", m.id);
  if (::rename(tmp.c_str(), dest_.c_str()) != 0)
    return fail(wrap(Error::fromErrno(cat("rename ", tmp, " -> ", dest_), errno)));
  published_ = true;
  {
    UniqueFd dir(::open(p.snapshots.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (dir) ::fsync(dir.get());
  }
  rec_.head = m.id;
  if (rec_.machine.empty()) rec_.machine = m.machine;
  if (auto saved = saveRecord(p, rec_); !saved)
    log::warn("snapshot ", m.id, " published but lifecycle.json not updated: ", saved.error().message());
  return SnapshotResult{m, dest_, thawWarning_.empty() ? guest_->note() : thawWarning_};
}

void VmSnapshot::withdraw() {
  if (!published_) return;
  // Hidden again in one step (the destructor removes it), the record's head as it was.
  if (::rename(dest_.c_str(), tmp_.c_str()) != 0) {
    log::error("could not withdraw snapshot ", m_.id, " of VM ", name_, ": ", std::strerror(errno));
    return;
  }
  published_ = false;
  rec_.head = oldHead_;
  if (auto saved = saveRecord(held_->paths, rec_); !saved)
    log::warn("VM ", name_, ": lifecycle.json still names the withdrawn snapshot: ", saved.error().message());
}

Result<SnapshotResult> VmManager::snapshot(const std::string& name, const SnapshotOptions& opts) {
  auto job = VmSnapshot::begin(*this, name, opts, false, Clock::now());
  if (!job) return fail(job.error());
  VMCKPT_TRY((*job)->quiesce());
  VMCKPT_TRY((*job)->unplug());
  VMCKPT_TRY((*job)->capture());
  return (*job)->publish();
}

Result<std::vector<store::SnapshotEntry>> VmManager::snapshots(const std::string& name) {
  auto spec = loadSpec(name);
  if (!spec) return fail(spec.error());
  return store::Catalog(root_.vm(name).snapshots).list();
}

Result<store::SnapshotEntry> VmManager::findSnapshot(const std::string& name, const std::string& ref) {
  auto spec = loadSpec(name);
  if (!spec) return fail(spec.error());
  auto s = store::Catalog(root_.vm(name).snapshots).resolve(ref);
  if (!s) return fail(s.error().context(cat("VM ", name)));
  return s;
}

Result<std::vector<SnapshotUsage>> VmManager::snapshotUsage(const std::vector<store::SnapshotEntry>& all) {
  std::vector<store::ExtentMap> maps;
  for (const auto& s : all) {
    auto m = store::mapExtents(dataFiles(s));
    if (!m) return fail(m.error());
    maps.push_back(std::move(*m));
  }
  std::vector<SnapshotUsage> out;
  for (size_t i = 0; i < all.size(); ++i) {
    std::vector<store::Extent> others;
    for (size_t j = 0; j < all.size(); ++j)
      if (j != i) others.insert(others.end(), maps[j].extents().begin(), maps[j].extents().end());
    auto otherMap = store::ExtentMap::fromExtents(std::move(others));
    SnapshotUsage u;
    u.totalBytes = maps[i].totalBytes();
    u.exclusiveBytes = store::exclusiveBytes(maps[i], otherMap);
    u.sharedBytes = u.totalBytes - u.exclusiveBytes;
    out.push_back(u);
  }
  return out;
}

Status VmManager::deleteSnapshot(const std::string& name, const std::string& ref) {
  auto held = lockVm(name);
  if (!held) return fail(held.error());
  const VmPaths& p = held->paths;
  store::Catalog catalog(p.snapshots);
  auto victim = catalog.resolve(ref);
  if (!victim) return fail(victim.error().context(cat("delete-snapshot ", name)));
  auto all = catalog.list();
  if (!all) return fail(all.error());
  // Each snapshot is self-contained; parents are lineage only. Children inherit the parent.
  for (const auto& s : *all) {
    if (s.manifest.parent != victim->manifest.id) continue;
    store::Manifest child = s.manifest;
    child.parent = victim->manifest.parent;
    VMCKPT_TRY(store::writeManifest(s.dir + "/manifest.json", child));
  }
  VmRecord rec = loadRecord(p);
  if (rec.head == victim->manifest.id) {
    rec.head = victim->manifest.parent;
    VMCKPT_TRY(saveRecord(p, rec));
  }
  // Hide it in one step, then remove its files.
  std::string doomed = cat(p.snapshots, "/.delete-", victim->manifest.id);
  if (::rename(victim->dir.c_str(), doomed.c_str()) != 0) return failErrno(cat("rename ", victim->dir), errno);
  return store::removeStoreTree(doomed);
}

}  // namespace vmckpt::vmm
