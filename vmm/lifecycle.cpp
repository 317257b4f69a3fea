#include "vmm/lifecycle.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <ctime>

#include "common/fs.hpp"
#include "common/log.hpp"
#include "common/scope_exit.hpp"
#include "common/strings.hpp"
#include "qmp/qmp_client.hpp"
#include "vmm/accel.hpp"
#include "vmm/agent/agent_client.hpp"
#include "vmm/qemu_boot.hpp"
#include "vmm/qemu_process.hpp"
#include "vmm/store/backend.hpp"
#include "vmm/vm_record.hpp"

namespace vmckpt::vmm {
namespace {

using namespace std::chrono_literals;

constexpr auto kQmpConnectTimeout = 5s;
constexpr auto kEventTimeout = 5s;

Status recordStopped(const VmPaths& p, const std::string& kind) {
  VmRecord r = loadRecord(p);
  r.stoppedAt = nowIso();
  r.stopKind = kind;
  return saveRecord(p, r);
}

Result<qmp::Client> connectQmp(const VmPaths& p) { return vmm::connectQmp(p, Deadline::in(kQmpConnectTimeout)); }

Error notRunning(const std::string& name, VmState s) {
  return Error(Errc::wrongState, cat("VM ", name, " is not running (state: ", vmStateName(s), ")"));
}

}  // namespace

std::string_view vmStateName(VmState s) {
  switch (s) {
    case VmState::created: return "created";
    case VmState::running: return "running";
    case VmState::paused: return "paused";
    case VmState::stopped: return "stopped";
  }
  return "?";
}

Json VmStatus::toJson() const {
  Json j = {
      {"name", name},
      {"state", vmStateName(state)},
      {"qemu_status", qemuStatus.empty() ? Json(nullptr) : Json(qemuStatus)},
      {"pid", pid > 0 ? Json(pid) : Json(nullptr)},
      {"accel", accel.empty() ? Json(nullptr) : Json(accel)},
      {"accel_requested", accelName(spec.accel)},
      {"accel_reason", accelReason.empty() ? Json(nullptr) : Json(accelReason)},
      {"vcpus", spec.vcpus},
      {"memory_bytes", spec.memoryBytes},
      {"ram", ramBackendName(spec.ram)},
      {"machine", spec.machine},
      {"net", describeNet(spec.net)},
      {"disks", spec.disks.size()},
      {"started_at", startedAt.empty() ? Json(nullptr) : Json(startedAt)},
      {"stopped_at", stoppedAt.empty() ? Json(nullptr) : Json(stoppedAt)},
      {"dir", dir},
  };
  if (!note.empty()) j["note"] = note;
  return j;
}

Result<VmSpec> VmManager::loadSpec(const std::string& name) const {
  VMCKPT_TRY(validateVmName(name));
  VmPaths p = root_.vm(name);
  auto text = fs::readFile(p.spec, 1 << 20);
  if (!text) {
    if (text.error().code() == Errc::notFound) return fail(Errc::notFound, cat("no VM named ", name));
    return fail(text.error());
  }
  auto j = Json::parse(*text, nullptr, false);
  if (j.is_discarded()) return fail(Errc::corrupt, cat(p.spec, ": not valid JSON"));
  auto spec = VmSpec::fromJson(j);
  if (!spec) return fail(spec.error().context(p.spec));
  return spec;
}

Result<VmManager::Held> VmManager::lockVm(const std::string& name) {
  auto spec = loadSpec(name);
  if (!spec) return fail(spec.error());
  VmPaths p = root_.vm(name);
  auto lock = VmLock::acquire(p, name);
  if (!lock) return fail(lock.error());
  Held held{std::move(*spec), std::move(p), std::move(*lock)};
  lastRecovery_ = recoverLocked(held);
  return held;
}

Result<VmStatus> VmManager::create(const CreateRequest& req) {
  VmSpec spec = req.spec;
  const std::string& name = spec.name;
  VMCKPT_TRY(validateVmName(name));
  spec.kernelBoot = !req.kernel.empty();
  spec.hasInitrd = !req.initrd.empty();
  spec.disks.clear();

  // Check every input before touching the store.
  auto readable = [](const std::string& what, const std::string& path) -> Status {
    if (!fs::exists(path)) return fail(Errc::notFound, cat(what, " ", path, ": no such file"));
    if (fs::isDirectory(path)) return fail(Errc::invalidArgument, cat(what, " ", path, ": is a directory"));
    if (::access(path.c_str(), R_OK) != 0) return failErrno(cat(what, " ", path), errno);
    return {};
  };
  if (spec.kernelBoot) VMCKPT_TRY(readable("kernel", req.kernel));
  if (spec.hasInitrd) VMCKPT_TRY(readable("initrd", req.initrd));
  std::vector<DiskFormat> formats;
  for (const auto& d : req.disks) {
    VMCKPT_TRY(readable("disk", d.path));
    auto detected = detectDiskFormat(d.path);
    if (!detected) return fail(detected.error());
    if (d.format && *d.format != *detected && *detected == DiskFormat::qcow2)
      return fail(Errc::invalidArgument, cat("disk ", d.path, " is qcow2, not ", diskFormatName(*d.format)));
    DiskFormat f = d.format.value_or(*detected);
    formats.push_back(f);
    spec.disks.push_back({cat("disk", spec.disks.size(), ".", diskFormatName(f)), f, fs::absolute(d.path)});
  }
  VMCKPT_TRY(spec.validate());
  if (root_.vmExists(name)) return fail(Errc::alreadyExists, cat("a VM named ", name, " already exists"));

  // Build everything in a staging directory, then rename it into place in one step.
  VmPaths final = root_.vm(name);
  std::string staging = cat(root_.vmsDir(), "/.create-", name, "-", ::getpid());
  VmPaths p(staging);
  ScopeExit cleanup([&] { (void)store::removeStoreTree(staging); });
  for (const auto& d : {p.dir, p.run}) VMCKPT_TRY(fs::makeDirs(d, 0700));
  // On btrfs the live directory is a subvolume, so that a snapshot is one ioctl.
  store::StoreCapabilities caps = store::probeStore(root_.vmsDir());
  store::StoreMode mode = req.storeMode.value_or(caps.best());
  if (mode == store::StoreMode::btrfs && !caps.subvolumes)
    return fail(Errc::unsupported, cat("store mode btrfs: ", caps.subvolumesWhy));
  if (mode == store::StoreMode::reflink && !caps.reflink)
    return fail(Errc::unsupported, cat("store mode reflink: ", caps.reflinkWhy));
  VMCKPT_TRY(store::makeBackend(mode)->createLiveDir(p.live));
  if (spec.kernelBoot) VMCKPT_TRY(fs::cloneOrCopyFile(req.kernel, p.kernel));
  if (spec.hasInitrd) VMCKPT_TRY(fs::cloneOrCopyFile(req.initrd, p.initrd));
  for (size_t i = 0; i < req.disks.size(); ++i) {
    log::info("importing disk ", req.disks[i].path);
    VMCKPT_TRY(fs::cloneOrCopyFile(req.disks[i].path, p.live + "/" + spec.disks[i].file));
  }
  VMCKPT_TRY(fs::writeFileAtomic(p.spec, spec.toJson().dump(2) + "\n"));
  if (::renameat2(AT_FDCWD, staging.c_str(), AT_FDCWD, final.dir.c_str(), RENAME_NOREPLACE) != 0) {
    int err = errno;
    if (err == EEXIST || err == ENOTEMPTY) return fail(Errc::alreadyExists, cat("a VM named ", name, " already exists"));
    return failErrno(cat("rename ", staging, " -> ", final.dir), err);
  }
  cleanup.cancel();
  return statusLocked(name, spec);
}

Result<VmStatus> VmManager::statusLocked(const std::string& name, const VmSpec& spec) {
  VmPaths p = root_.vm(name);
  VmRecord rec = loadRecord(p);
  VmStatus s;
  s.name = name;
  s.spec = spec;
  s.dir = p.dir;
  s.startedAt = rec.startedAt;
  s.accel = rec.accel;
  s.accelReason = rec.accelReason;

  PidCheck pc = checkPidFile(p);
  if (pc.state == PidState::alive) {
    s.pid = pc.pid;
    s.state = VmState::running;
    auto c = vmm::connectQmp(p, Deadline::in(3s));
    auto st = c ? c->execute("query-status", Json::object(), Deadline::in(3s)) : Result<Json>(std::unexpected(c.error()));
    if (st && st->is_object()) {
      s.qemuStatus = qmp::stringField(*st, "status", "unknown");
      s.state = s.qemuStatus == "running" ? VmState::running : VmState::paused;
    } else {
      s.qemuStatus = "unknown";
      s.note = cat("QEMU is alive but its state is unknown: ", st.error().message());
    }
    return s;
  }
  s.stoppedAt = rec.stoppedAt;
  if (rec.startedAt.empty()) {
    s.state = VmState::created;
    return s;
  }
  s.state = VmState::stopped;
  bool exitedOnItsOwn = rec.stoppedAt.empty() || rec.stoppedAt < rec.startedAt;
  if (exitedOnItsOwn) {
    s.stoppedAt.clear();
    std::string last = qemuErrorLine(p.qemuLog);
    s.note = cat("QEMU exited without 'vmckpt stop' (guest power-off or crash)",
                 last.empty() ? std::string() : cat("; QEMU said: ", last));
  }
  return s;
}

Result<VmStatus> VmManager::status(const std::string& name) {
  auto spec = loadSpec(name);
  if (!spec) return fail(spec.error());
  // An interrupted operation is recovered first: its state is not the VM's. Not while
  // another vmckpt holds the lock: that one is working, not interrupted.
  if (VmPaths p = root_.vm(name); fs::exists(p.journal)) {
    if (auto lock = VmLock::tryAcquire(p); lock && *lock) {
      Held held{*spec, p, std::move(**lock)};
      lastRecovery_ = recoverLocked(held);
    }
  }
  return statusLocked(name, *spec);
}

Result<std::vector<VmStatus>> VmManager::list() {
  auto names = root_.vmNames();
  if (!names) return fail(names.error());
  std::vector<VmStatus> out;
  for (const auto& n : *names) {
    auto s = status(n);
    if (s) out.push_back(std::move(*s));
    else log::warn("VM ", n, ": ", s.error().message());
  }
  return out;
}

Result<VmStatus> VmManager::start(const std::string& name) {
  auto held = lockVm(name);
  if (!held) return fail(held.error());
  const VmSpec& spec = held->spec;
  const VmPaths& p = held->paths;
  if (PidCheck pc = checkPidFile(p); pc.state == PidState::alive)
    return fail(Errc::wrongState, cat("VM ", name, " is already running (QEMU pid ", pc.pid, ")"));
  // A cold boot starts from fresh memory: the old RAM file (if any) is dropped. Snapshots
  // are separate copies, so this loses nothing they hold.
  for (const auto& f : {p.serialLog, p.mem, p.devstate}) VMCKPT_TRY(fs::removeFile(f));
  auto booted = bootQemu(spec, p, {root_.home(), false, {}});
  if (!booted) return fail(booted.error().context(cat("start ", name)));
  VmRecord rec = loadRecord(p);
  noteBoot(rec, *booted);
  VMCKPT_TRY(saveRecord(p, rec));
  booted->release();
  return statusLocked(name, spec);
}

Result<Transition> VmManager::transition(const std::string& name, bool toPaused, bool sendRestored) {
  auto held = lockVm(name);
  if (!held) return fail(held.error());
  const VmSpec& spec = held->spec;
  const VmPaths& p = held->paths;
  auto before = statusLocked(name, spec);
  if (!before) return fail(before.error());
  const char* verb = toPaused ? "pause" : "resume";
  if (before->state != VmState::running && before->state != VmState::paused)
    return fail(notRunning(name, before->state).context(verb));
  if (toPaused && before->state == VmState::paused)
    return fail(Errc::wrongState, cat("pause: VM ", name, " is already paused"));
  if (!toPaused && before->state == VmState::running)
    return fail(Errc::wrongState, cat("resume: VM ", name, " is not paused (state: running)"));

  auto client = connectQmp(p);
  if (!client) return fail(client.error().context(cat(verb, " ", name)));
  (void)client->takeEvents();
  auto t0 = std::chrono::steady_clock::now();
  const char* cmd = toPaused ? "stop" : "cont";
  const char* event = toPaused ? "STOP" : "RESUME";
  auto ev = client->executeUntilEvent(cmd, Json::object(), event, Deadline::in(kEventTimeout));
  if (!ev) return fail(ev.error().context(cat(verb, " ", name)));
  Transition t;
  t.event = ev->name;
  t.elapsedMs = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  client = std::unexpected(Error(Errc::internal, "closed"));  // free the QMP socket for status
  if (!toPaused && sendRestored) {  // the first run after a `restore --paused`
    auto sent = deliverPendingRestored(*held);
    if (!sent) return fail(sent.error());
    if (sent->has_value() && !**sent)
      log::warn("VM ", name, " runs, but its guest agent did not take 'restored': ", (*sent)->error().message());
  }
  auto after = statusLocked(name, spec);
  if (!after) return fail(after.error());
  t.status = std::move(*after);
  return t;
}

Result<std::optional<Status>> VmManager::deliverPendingRestored(const Held& held, Json* published) {
  VmRecord rec = loadRecord(held.paths);
  if (!rec.pendingRestored) return std::optional<Status>();
  Status r;
  if (published == nullptr) {
    r = agent::notifyRestored(held.paths.agentSocket, Json(held.spec.deviceMap), 10s);
  } else if (auto got = agent::restoredForGroup(held.paths.agentSocket, Json(held.spec.deviceMap), 10s); !got) {
    r = fail(got.error());
  } else {
    for (auto& [plugin, objects] : got->items())
      for (auto& o : objects) (*published)[plugin].push_back(std::move(o));
  }
  rec.pendingRestored = false;
  VMCKPT_TRY(saveRecord(held.paths, rec));
  return std::optional<Status>(std::move(r));
}

Result<Transition> VmManager::pause(const std::string& name) { return transition(name, true); }
Result<Transition> VmManager::resume(const std::string& name) { return transition(name, false); }

Result<VmStatus> VmManager::stop(const std::string& name, const StopOptions& opts) {
  auto held = lockVm(name);
  if (!held) return fail(held.error());
  const VmSpec& spec = held->spec;
  const VmPaths& p = held->paths;
  auto before = statusLocked(name, spec);
  if (!before) return fail(before.error());
  if (before->state != VmState::running && before->state != VmState::paused) {
    if (checkPidFile(p).state == PidState::stale) cleanRunFiles(p);
    return fail(notRunning(name, before->state).context("stop"));
  }
  pid_t pid = before->pid;

  if (!opts.force) {
    if (before->state == VmState::paused)
      return fail(Errc::wrongState, cat("stop: VM ", name, " is paused and cannot power down; resume it or use --force"));
    auto client = connectQmp(p);
    if (!client) return fail(client.error().context(cat("stop ", name)));
    if (auto r = client->execute("system_powerdown"); !r) return fail(r.error().context(cat("stop ", name)));
    if (!waitForExit(pid, Deadline::in(opts.timeout)))
      return fail(Errc::timeout, cat("stop ", name, ": the guest did not power off within ", opts.timeout.count(),
                                     " s and is still running; use 'vmckpt stop --force ", name, "' to end QEMU"));
    cleanRunFiles(p);
    VMCKPT_TRY(recordStopped(p, "powerdown"));
    return statusLocked(name, spec);
  }

  // Forced: ask QEMU to quit (flushes its block layer), SIGKILL if it does not answer.
  bool quit = false;
  if (auto client = vmm::connectQmp(p, Deadline::in(2s))) quit = client->execute("quit", Json::object(), Deadline::in(2s)).has_value();
  if (!quit || !waitForExit(pid, Deadline::in(5s))) {
    log::warn("QEMU of VM ", name, " did not quit; killing pid ", pid);
    if (auto k = killQemu(pid, Deadline::in(5s)); !k) return fail(k.error().context(cat("stop ", name)));
  }
  cleanRunFiles(p);
  VMCKPT_TRY(recordStopped(p, "force"));
  return statusLocked(name, spec);
}

Status VmManager::remove(const std::string& name) {
  auto held = lockVm(name);
  if (!held) return fail(held.error());
  const VmPaths& p = held->paths;
  PidCheck pc = checkPidFile(p);
  if (pc.state == PidState::alive)
    return fail(Errc::wrongState, cat("delete: VM ", name, " is running (QEMU pid ", pc.pid, "); stop it first"));
  // Make the VM disappear in one step, then remove its files.
  std::string doomed = cat(root_.vmsDir(), "/.delete-", name, "-", ::getpid());
  if (::rename(p.dir.c_str(), doomed.c_str()) != 0) return failErrno(cat("rename ", p.dir), errno);
  return store::removeStoreTree(doomed);
}

}  // namespace vmckpt::vmm
