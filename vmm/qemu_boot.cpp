#include "vmm/qemu_boot.hpp"

#include <fcntl.h>
#include <sys/stat.h>

#include <thread>

#include "common/fs.hpp"
#include "common/log.hpp"
#include "common/unique_fd.hpp"
#include "common/strings.hpp"
#include "vmm/qemu_command.hpp"
#include "vmm/qemu_process.hpp"

namespace vmckpt::vmm {
namespace {
using namespace std::chrono_literals;
constexpr auto kLaunchTimeout = 30s;
constexpr size_t kMaxUnixPath = 107;
}  // namespace

BootedQemu::~BootedQemu() {
  if (released_ || pid_ <= 0) return;
  qmp_.reset();
  (void)killQemu(pid_, Deadline::in(5s));
  cleanRunFiles(paths_);
}

std::string BootedQemu::qemuVersion() const {
  const auto& g = qmp_->greeting();
  return cat(g.major, ".", g.minor, ".", g.micro);
}

void noteBoot(VmRecord& rec, const BootedQemu& booted) {
  rec.startedAt = nowIso();
  rec.stoppedAt.clear();
  rec.stopKind.clear();
  rec.accel = std::string(accelName(booted.accel().accel));
  rec.accelReason = booted.accel().reason;
  rec.machine = booted.machine();
}

Result<qmp::Client> connectQmp(const VmPaths& p, Deadline deadline) {
  auto c = qmp::Client::connect(p.qmpSocket, deadline);
  if (!c && c.error().code() == Errc::timeout)
    return fail(Errc::timeout, "QEMU's QMP socket did not answer (another client connected, or QEMU hung)");
  return c;
}

bool migrationNotFinalized(const Error& e) {
  return e.code() == Errc::qmp && e.message().find("not finalized") != std::string::npos;
}

Status contAfterMigration(qmp::Client& c, Deadline deadline) {
  for (;;) {
    auto r = c.execute("cont", Json::object(), deadline);
    if (r) return {};
    if (!migrationNotFinalized(r.error()) || deadline.expired()) return fail(r.error());
    std::this_thread::sleep_for(1ms);
  }
}

namespace {
bool migrationInFlight(const std::string& status) {
  return status == "setup" || status == "active" || status == "device" || status == "pre-switchover" ||
         status == "cancelling" || status == "wait-unplug";
}
}  // namespace

Result<bool> settleMigration(qmp::Client& c, Deadline deadline) {
  auto q = c.execute("query-migrate", Json::object(), deadline);
  if (!q) return fail(q.error());
  if (!migrationInFlight(qmp::stringField(*q, "status"))) return false;
  (void)c.execute("migrate_cancel", Json::object(), deadline);
  for (;;) {
    auto st = c.execute("query-migrate", Json::object(), deadline);
    if (!st) return fail(st.error());
    if (!migrationInFlight(qmp::stringField(*st, "status"))) return true;
    if (deadline.expired()) return fail(Errc::timeout, "the device-state migration did not end after migrate_cancel");
    std::this_thread::sleep_for(2ms);
  }
}

Result<std::string> resolveMachine(qmp::Client& c, const std::string& requested) {
  auto machines = c.execute("query-machines");
  if (!machines) return fail(machines.error());
  if (machines->is_array()) {
    for (const auto& m : *machines) {
      if (!m.is_object()) continue;
      if (qmp::stringField(m, "alias") == requested) return qmp::stringField(m, "name", requested);
    }
  }
  return requested;
}

Result<BootedQemu> bootQemu(const VmSpec& spec, const VmPaths& p, const BootRequest& req) {
  PidCheck pc = checkPidFile(p);
  if (pc.state == PidState::alive)
    return fail(Errc::wrongState, cat("VM ", spec.name, " is already running (QEMU pid ", pc.pid, ")"));
  if (pc.state == PidState::stale) {
    log::info("removing stale pid file of VM ", spec.name, " (QEMU pid ", pc.pid, " is gone)");
    cleanRunFiles(p);
  }
  for (const auto& sock : {p.qmpSocket, p.console, p.agentSocket})
    if (sock.size() > kMaxUnixPath)
      return fail(Errc::invalidArgument,
                  cat("store path too long for a unix socket: ", sock, " (set VMCKPT_HOME to a shorter path)"));

  auto qemu = findQemu();
  if (!qemu) return fail(qemu.error());
  auto choice = chooseAccel(spec.accel, req.home, *qemu, spec.kernelBoot ? p.kernel : std::string());
  if (!choice) return fail(choice.error());
  log::info("VM ", spec.name, ": ", choice->reason);
  VMCKPT_TRY(fs::makeDirs(p.run, 0700));
  VMCKPT_TRY(fs::removeFile(p.qemuLog));

  if (spec.ram == RamBackend::file && !fs::exists(p.mem)) {
    // QEMU would create the RAM file after daemonizing, with umask 027: group-readable.
    UniqueFd mem(::open(p.mem.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (!mem) return failErrno(cat("create ", p.mem), errno);
  }
  QemuLaunch launch{*qemu, choice->accel, true, req.incoming, req.machine};
  auto pid = launchQemu(buildQemuCommand(spec, p, launch), p, Deadline::in(kLaunchTimeout));
  if (!pid) {
    cleanRunFiles(p);
    if (!req.machine.empty() && pid.error().message().find("unsupported machine type") != std::string::npos)
      return fail(Errc::unsupported, cat("this QEMU lacks machine type ", req.machine, " that the snapshot was taken on"));
    return fail(pid.error());
  }
  // Owned from here: dropped on failure means killed.
  auto client = connectQmp(p, Deadline::in(5s));
  if (!client) {
    (void)killQemu(*pid, Deadline::in(5s));
    cleanRunFiles(p);
    return fail(client.error());
  }
  // Sockets, pid file and console log come from QEMU's umask (027 once daemonized).
  for (const auto& f : {p.qmpSocket, p.agentSocket, p.console, p.pidFile, p.serialLog})
    if (fs::exists(f)) ::chmod(f.c_str(), 0600);
  BootedQemu booted(*pid, std::move(*client), *choice, {}, p);
  if (!req.machine.empty()) {  // a recorded machine is already a concrete type, not an alias
    booted.machine_ = req.machine;
    return booted;
  }
  auto machine = resolveMachine(booted.qmp(), spec.machine);
  if (!machine) return fail(machine.error());
  booted.machine_ = *machine;
  return booted;
}

}  // namespace vmckpt::vmm
