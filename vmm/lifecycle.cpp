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
#include "vmm/qemu_command.hpp"
#include "vmm/qemu_process.hpp"

namespace vmckpt::vmm {
namespace {

using namespace std::chrono_literals;

constexpr auto kLaunchTimeout = 30s;
constexpr auto kQmpConnectTimeout = 5s;
constexpr auto kEventTimeout = 5s;
constexpr int kRecordFormat = 1;

std::string nowIso() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// lifecycle.json: what happened to the VM's QEMU across vmckpt invocations.
struct Record {
  std::string startedAt, stoppedAt, stopKind, accel, accelReason;
};

Record loadRecord(const VmPaths& p) {
  Record r;
  auto text = fs::readFile(p.lifecycle, 64 << 10);
  if (!text) return r;
  auto j = Json::parse(*text, nullptr, false);
  if (!j.is_object()) return r;
  r.startedAt = j.value("started_at", "");
  r.stoppedAt = j.value("stopped_at", "");
  r.stopKind = j.value("stop_kind", "");
  r.accel = j.value("accel", "");
  r.accelReason = j.value("accel_reason", "");
  return r;
}

Status saveRecord(const VmPaths& p, const Record& r) {
  Json j = {{"format", kRecordFormat}, {"started_at", r.startedAt}, {"stopped_at", r.stoppedAt},
            {"stop_kind", r.stopKind}, {"accel", r.accel},           {"accel_reason", r.accelReason}};
  return fs::writeFileAtomic(p.lifecycle, j.dump(2) + "\n");
}

Status recordStopped(const VmPaths& p, const std::string& kind) {
  Record r = loadRecord(p);
  r.stoppedAt = nowIso();
  r.stopKind = kind;
  return saveRecord(p, r);
}

Result<qmp::Client> connectQmp(const VmPaths& p, Deadline d = Deadline::in(kQmpConnectTimeout)) {
  auto c = qmp::Client::connect(p.qmpSocket, d);
  if (!c && c.error().code() == Errc::timeout)
    return fail(Errc::timeout, "QEMU's QMP socket did not answer (another client connected, or QEMU hung)");
  return c;
}

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
  return Held{std::move(*spec), std::move(p), std::move(*lock)};
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
  ScopeExit cleanup([&] { (void)fs::removeTree(staging); });
  for (const auto& d : {p.dir, p.boot, p.live, p.run}) VMCKPT_TRY(fs::makeDirs(d, 0700));
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
  Record rec = loadRecord(p);
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
    auto c = connectQmp(p, Deadline::in(3s));
    auto st = c ? c->execute("query-status", Json::object(), Deadline::in(3s)) : Result<Json>(std::unexpected(c.error()));
    if (st && st->is_object()) {
      s.qemuStatus = st->value("status", "unknown");
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
    std::string last = lastLogLine(p.qemuLog);
    s.note = cat("QEMU exited without 'vmckpt stop' (guest power-off or crash)",
                 last.empty() ? std::string() : cat("; QEMU said: ", last));
  }
  return s;
}

Result<VmStatus> VmManager::status(const std::string& name) {
  auto spec = loadSpec(name);
  if (!spec) return fail(spec.error());
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

  PidCheck pc = checkPidFile(p);
  if (pc.state == PidState::alive)
    return fail(Errc::wrongState, cat("VM ", name, " is already running (QEMU pid ", pc.pid, ")"));
  if (pc.state == PidState::stale) {
    log::info("removing stale pid file of VM ", name, " (QEMU pid ", pc.pid, " is gone)");
    cleanRunFiles(p);
  }

  auto qemu = findQemu();
  if (!qemu) return fail(qemu.error().context(cat("start ", name)));
  auto choice = chooseAccel(spec.accel, root_.home(), *qemu, spec.kernelBoot ? p.kernel : std::string());
  if (!choice) return fail(choice.error().context(cat("start ", name)));
  log::info("VM ", name, ": ", choice->reason);

  VMCKPT_TRY(fs::makeDirs(p.run, 0700));
  VMCKPT_TRY(fs::makeDirs(p.live, 0700));
  // A cold boot starts from fresh memory; the old RAM file (if any) is dropped.
  for (const auto& f : {p.serialLog, p.qemuLog, p.mem}) VMCKPT_TRY(fs::removeFile(f));
  if (p.qmpSocket.size() >= 108)
    return fail(Errc::invalidArgument, cat("store path too long for a unix socket: ", p.qmpSocket,
                                           " (set VMCKPT_HOME to a shorter path)"));

  QemuLaunch launch{*qemu, choice->accel, true};
  auto argv = buildQemuCommand(spec, p, launch);
  auto pid = launchQemu(argv, p, Deadline::in(kLaunchTimeout));
  if (!pid) {
    cleanRunFiles(p);
    return fail(pid.error().context(cat("start ", name)));
  }
  // From here on a failure must not leave a QEMU behind.
  ScopeExit killOnFailure([&] {
    (void)killQemu(*pid, Deadline::in(5s));
    cleanRunFiles(p);
  });
  auto client = connectQmp(p);
  if (!client) return fail(client.error().context(cat("start ", name)));
  auto st = client->execute("query-status");
  if (!st) return fail(st.error().context(cat("start ", name)));
  for (const auto& sock : {p.qmpSocket, p.agentSocket})
    if (fs::exists(sock)) ::chmod(sock.c_str(), 0600);

  Record rec = loadRecord(p);
  rec.startedAt = nowIso();
  rec.stoppedAt.clear();
  rec.stopKind.clear();
  rec.accel = std::string(accelName(choice->accel));
  rec.accelReason = choice->reason;
  VMCKPT_TRY(saveRecord(p, rec));
  killOnFailure.cancel();
  return statusLocked(name, spec);
}

Result<Transition> VmManager::transition(const std::string& name, bool toPaused) {
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
  if (auto r = client->execute(cmd); !r) return fail(r.error().context(cat(verb, " ", name)));
  auto ev = client->waitEvent(event, Deadline::in(kEventTimeout));
  if (!ev) return fail(ev.error().context(cat(verb, " ", name)));
  Transition t;
  t.event = ev->name;
  t.elapsedMs = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  client = std::unexpected(Error(Errc::internal, "closed"));  // free the QMP socket for status
  auto after = statusLocked(name, spec);
  if (!after) return fail(after.error());
  t.status = std::move(*after);
  return t;
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
  if (auto client = connectQmp(p, Deadline::in(2s))) quit = client->execute("quit", Json::object(), Deadline::in(2s)).has_value();
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
  return fs::removeTree(doomed);
}

}  // namespace vmckpt::vmm
