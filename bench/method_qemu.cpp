// QEMU's own snapshot methods, driven over QMP the way libvirt drives them, on a guest
// with QEMU's default anonymous RAM.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <thread>

#include "bench/methods.hpp"
#include "common/child_process.hpp"
#include "common/fs.hpp"
#include "common/unique_fd.hpp"
#include "loop_fs.hpp"
#include "vmm/qemu_boot.hpp"

namespace vmckpt::bench {
namespace {

using namespace std::chrono_literals;

constexpr const char* kDisk = "disk0.qcow2";
constexpr const char* kDiskNode = "disk0";  // the qcow2 node qemu_command names it

std::string key(QemuMethod m) {
  switch (m) {
    case QemuMethod::migrateToFile: return "qemu-migrate-to-file";
    case QemuMethod::backgroundSnapshot: return "qemu-background-snapshot";
    case QemuMethod::snapshotSave: return "qemu-snapshot-save";
  }
  return "?";
}

std::string label(QemuMethod m) {
  switch (m) {
    case QemuMethod::migrateToFile: return "QEMU stop+migrate to file (virsh save)";
    case QemuMethod::backgroundSnapshot: return "QEMU background-snapshot";
    case QemuMethod::snapshotSave: return "QEMU snapshot-save (qcow2)";
  }
  return "?";
}

qmp::Event waitMigration(qmp::Client& c, const std::string& what) {
  auto ev = check(c.waitEvent(
                      [](const qmp::Event& e) {
                        if (e.name != "MIGRATION") return false;
                        auto s = e.data.value("status", "");
                        return s == "completed" || s == "failed" || s == "cancelled";
                      },
                      Deadline::in(1800s)),
                  what);
  if (ev.data.value("status", "") != "completed") {
    std::string why = ev.data.value("status", "");
    if (auto q = c.execute("query-migrate"); q && q->contains("error-desc")) why = (*q)["error-desc"].get<std::string>();
    raise(cat(what, ": ", why));
  }
  return ev;
}

// Runs a QMP job (snapshot-save / snapshot-load) to its end; raises with the job's error.
void runJob(qmp::Client& c, const std::string& command, const Json& args, const std::string& id) {
  // QEMU 7.2 answers snapshot-load only after it has read the whole state (5-10 s at 4 GiB
  // here; the 10 s default deadline failed the 4 GiB row of the 2026-11-22T022119Z run).
  check(c.execute(command, args, Deadline::in(1800s)), command);
  check(c.waitEvent(
            [&](const qmp::Event& e) {
              return e.name == "JOB_STATUS_CHANGE" && e.data.value("id", "") == id &&
                     e.data.value("status", "") == "concluded";
            },
            Deadline::in(1800s)),
        cat(command, " job"));
  auto jobs = check(c.execute("query-jobs"), "query-jobs");
  std::string error;
  for (const auto& j : jobs)
    if (j.value("id", "") == id && j.contains("error")) error = j["error"].get<std::string>();
  (void)c.execute("job-dismiss", {{"id", id}});
  if (!error.empty()) raise(cat(command, ": ", error));
}

std::uint64_t fileBytes(const std::string& path) {
  struct stat st{};
  return ::stat(path.c_str(), &st) == 0 ? static_cast<std::uint64_t>(st.st_size) : 0;
}

// Every STOP -> RESUME interval of one operation, summed (a method may pause more than
// once); waits for the RESUME of a STOP still open. Takes all queued events.
double pausedMs(qmp::Client& c) {
  auto events = c.takeEvents();
  auto open = [&events] {
    int n = 0;
    for (const auto& e : events) n += e.name == "STOP" ? 1 : e.name == "RESUME" ? -1 : 0;
    return n > 0;
  };
  while (open()) events.push_back(check(c.waitEvent("RESUME", Deadline::in(10s)), "RESUME event"));
  double ms = 0;
  long long stopUs = -1;
  int pauses = 0;
  for (const auto& e : events) {
    if (e.name == "STOP" && stopUs < 0) stopUs = e.timestampUs;
    if (e.name == "RESUME" && stopUs >= 0) {
      ms += static_cast<double>(e.timestampUs - stopUs) / 1000.0;
      stopUs = -1;
      ++pauses;
    }
  }
  if (pauses == 0) raise("no STOP/RESUME events seen for the operation");
  return ms;
}

struct Saved {
  double pauseMs = 0, totalMs = 0;
  std::uint64_t writtenBytes = 0;
};

class BaselineHost {
 public:
  BaselineHost(const SizeRun& r) : r_(r) {
    // The guest's files, its streams and up to `runs` internal snapshots in the qcow2.
    lfs_ = check(test::LoopFs::create("btrfs", r.memoryBytes * (r.runs + 6) + (8ull << 30)), "btrfs loop filesystem");
    home_ = lfs_->mountPoint() + "/qemu";
    (void)check(vmm::StoreRoot::open(home_), "store");  // the KVM probe cache lives there
    spec_.name = "baseline";
    spec_.memoryBytes = r.memoryBytes;
    spec_.ram = vmm::RamBackend::anon;  // QEMU's default, what a user without vmckpt has
    spec_.kernelBoot = true;
    spec_.hasInitrd = true;
    spec_.append = cat("console=ttyS0 quiet vmckpt.workload=memtest vmckpt.memtest=--mib,", r.writtenMib);
    spec_.disks.push_back({kDisk, vmm::DiskFormat::qcow2, ""});
    guest_ = preparePaths("guest");
    auto qemuImg = runCommand({"qemu-img", "create", "-q", "-f", "qcow2", guest_.live + "/" + kDisk, "256M"},
                              Deadline::in(30s));
    if (!qemuImg || !qemuImg->status.success())
      raise(cat("qemu-img create failed: ", qemuImg ? qemuImg->err : qemuImg.error().message()));
  }

  const std::string& fsDevice() const { return lfs_->device(); }
  const std::string& home() const { return home_; }
  std::string file(const std::string& name) const { return home_ + "/" + name; }

  vmm::VmPaths preparePaths(const std::string& dir) const {
    vmm::VmPaths p(home_ + "/" + dir);
    check(fs::makeDirs(p.live, 0700), "scratch directory");
    if (!fs::exists(p.kernel)) check(fs::cloneOrCopyFile(r_.guestDir + "/kernel", p.kernel), "kernel");
    if (!fs::exists(p.initrd)) check(fs::cloneOrCopyFile(r_.guestDir + "/initrd", p.initrd), "initrd");
    return p;
  }

  // Boots the guest to be snapshotted and waits until it wrote its pattern.
  vmm::BootedQemu bootGuest() {
    auto booted = check(vmm::bootQemu(spec_, guest_, {home_, false, ""}), "boot the baseline guest");
    Console con(guest_);
    size_t at = con.waitForEither("memtest: filled", "memtest: error", 0, 1800s);
    con.waitFor("counter 1", at, 120s);
    auto& c = booted.qmp();
    check(c.execute("migrate-set-capabilities", {{"capabilities", {{{"capability", "events"}, {"state", true}}}}}),
          "migration events");
    // QEMU's default bandwidth limit (128 MiB/s) would make every stream method slow
    // for no reason but the limit; libvirt lifts it for save too.
    check(c.execute("migrate-set-parameters", {{"max-bandwidth", 1ull << 40}}), "max-bandwidth");
    return booted;
  }
  const vmm::VmPaths& guestPaths() const { return guest_; }
  const vmm::VmSpec& spec() const { return spec_; }

 private:
  const SizeRun& r_;
  std::unique_ptr<test::LoopFs> lfs_;
  std::string home_;
  vmm::VmSpec spec_;
  vmm::VmPaths guest_{""};
};

Saved saveToFile(BaselineHost& h, qmp::Client& c, const std::string& file, bool background) {
  check(c.execute("migrate-set-capabilities",
                  {{"capabilities", {{{"capability", "background-snapshot"}, {"state", background}}}}}),
        background ? "background-snapshot capability (needs userfaultfd write protection)" : "capabilities");
  UniqueFd out(::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!out) raise(cat("open ", file, ": ", std::strerror(errno)));
  int fd = out.get();
  check(c.execute("getfd", {{"fdname", "bench"}}, Deadline::in(5s), std::span<const int>(&fd, 1)), "getfd");
  (void)c.takeEvents();
  DiskMeter meter(h.fsDevice());
  std::uint64_t before = meter.bytesWritten();
  Saved s;
  auto t0 = Clock::now();
  if (!background) {
    check(c.execute("stop"), "stop");
  }
  check(c.execute("migrate", {{"uri", "fd:bench"}}), "migrate");
  waitMigration(c, background ? "background snapshot" : "migration to file");
  if (!background) {  // virsh save ends the guest here; a snapshot continues it
    for (auto d = Deadline::in(10s);;) {
      auto st = check(c.execute("query-status"), "query-status");
      if (st.value("status", "") == "postmigrate") break;
      if (d.expired()) raise("QEMU did not reach postmigrate");
      std::this_thread::sleep_for(1ms);
    }
    check(c.execute("cont"), "cont");
  }
  s.pauseMs = pausedMs(c);
  if (::fsync(out.get()) != 0) raise(cat("fsync ", file, ": ", std::strerror(errno)));
  syncFs(h.home());
  s.totalMs = msSince(t0);
  s.writtenBytes = meter.bytesWritten() - before;
  (void)c.execute("migrate-set-capabilities",
                  {{"capabilities", {{{"capability", "background-snapshot"}, {"state", false}}}}});
  return s;
}

// A fresh QEMU reads the stream back (-incoming), then runs. Returns ms to running.
double restoreFromFile(BaselineHost& h, const std::string& machine, const std::string& file) {
  vmm::VmPaths p = h.preparePaths("restored");
  check(fs::removeFile(p.live + "/" + kDisk), "old disk copy");
  check(fs::cloneOrCopyFile(h.guestPaths().live + "/" + kDisk, p.live + "/" + kDisk), "disk copy");
  Console con(p);
  size_t at = con.size();
  auto t0 = Clock::now();
  auto r = check(vmm::bootQemu(h.spec(), p, {h.home(), true, machine}), "boot QEMU -incoming");
  auto& c = r.qmp();
  check(c.execute("migrate-set-capabilities", {{"capabilities", {{{"capability", "events"}, {"state", true}}}}}),
        "migration events");
  UniqueFd in(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
  if (!in) raise(cat("open ", file, ": ", std::strerror(errno)));
  int fd = in.get();
  check(c.execute("getfd", {{"fdname", "bench"}}, Deadline::in(5s), std::span<const int>(&fd, 1)), "getfd");
  check(c.execute("migrate-incoming", {{"uri", "fd:bench"}}), "migrate-incoming");
  waitMigration(c, "incoming migration");
  check(c.executeUntilEvent("cont", Json::object(), "RESUME", Deadline::in(10s)), "cont");  // as vmckpt restore
  double ms = msSince(t0);
  con.waitFor("counter ", at, 120s);
  con.verifyMemory(1800s);
  return ms;  // r goes out of scope: that QEMU is killed
}

// snapshot-save into the running guest's qcow2. The disk cost is what the qcow2 grew.
Saved snapshotSave(BaselineHost& h, qmp::Client& c, const std::string& tag, std::uint64_t& grewBytes) {
  std::string disk = h.guestPaths().live + "/" + kDisk;
  std::uint64_t sizeBefore = allocatedBytes(disk);
  DiskMeter meter(h.fsDevice());
  std::uint64_t before = meter.bytesWritten();
  (void)c.takeEvents();
  Saved s;
  auto t0 = Clock::now();
  runJob(c, "snapshot-save",
         {{"job-id", tag}, {"tag", tag}, {"vmstate", kDiskNode}, {"devices", Json::array({kDiskNode})}}, tag);
  s.pauseMs = pausedMs(c);
  syncFs(h.home());
  s.totalMs = msSince(t0);
  s.writtenBytes = meter.bytesWritten() - before;
  std::uint64_t sizeAfter = allocatedBytes(disk);
  grewBytes = sizeAfter > sizeBefore ? sizeAfter - sizeBefore : 0;
  return s;
}

// A fresh QEMU (-S) on a copy of the qcow2, snapshot-load, cont.
double snapshotLoad(BaselineHost& h, const std::string& machine, const std::string& tag) {
  vmm::VmPaths p = h.preparePaths("loaded");
  check(fs::removeFile(p.live + "/" + kDisk), "old disk copy");
  check(fs::cloneOrCopyFile(h.guestPaths().live + "/" + kDisk, p.live + "/" + kDisk), "disk copy");
  vmm::VmSpec spec = h.spec();
  spec.extraArgs.push_back("-S");
  Console con(p);
  size_t at = con.size();
  auto t0 = Clock::now();
  auto r = check(vmm::bootQemu(spec, p, {h.home(), false, machine}), "boot QEMU -S");
  auto& c = r.qmp();
  runJob(c, "snapshot-load",
         {{"job-id", "load"}, {"tag", tag}, {"vmstate", kDiskNode}, {"devices", Json::array({kDiskNode})}}, "load");
  check(c.executeUntilEvent("cont", Json::object(), "RESUME", Deadline::in(10s)), "cont");  // as vmckpt restore
  double ms = msSince(t0);
  con.waitFor("counter ", at, 120s);
  con.verifyMemory(1800s);
  return ms;
}

void measure(BaselineHost& h, vmm::BootedQemu& g, const SizeRun& r, QemuMethod method, MethodResult& m) {
  Console con(h.guestPaths());
  auto& c = g.qmp();
  std::string previous;
  for (int i = 0; i < r.runs; ++i) {
    con.dirty(r.dirtyMib, 600s);
    Saved s;
    std::uint64_t cost = 0;
    std::string name = cat(m.method, "-", i);
    if (method == QemuMethod::snapshotSave) {
      s = snapshotSave(h, c, name, cost);
    } else {
      std::string file = h.file(name + ".stream");
      s = saveToFile(h, c, file, method == QemuMethod::backgroundSnapshot);
      cost = allocatedBytes(file);
      m.extra["stream_bytes"] = fileBytes(file);
    }
    m.pauseMs.push_back(s.pauseMs);
    m.totalMs.push_back(s.totalMs);
    m.writtenBytes.push_back(static_cast<double>(s.writtenBytes));
    m.secondSnapshotBytes.push_back(static_cast<double>(cost));
    std::fprintf(stderr, "   %s snapshot %d: pause %.1f ms, total %.0f ms, wrote %.1f MiB, costs %.1f MiB\n",
                 m.method.c_str(), i + 1, s.pauseMs, s.totalMs, static_cast<double>(s.writtenBytes) / (1 << 20),
                 static_cast<double>(cost) / (1 << 20));
    double ms = method == QemuMethod::snapshotSave ? snapshotLoad(h, g.machine(), name)
                                                   : restoreFromFile(h, g.machine(), h.file(name + ".stream"));
    m.restoreMs.push_back(ms);
    ++m.restoresVerified;
    std::fprintf(stderr, "   %s restore %d: %.0f ms to running, memory verified\n", m.method.c_str(), i + 1, ms);
    if (!previous.empty() && method != QemuMethod::snapshotSave) check(fs::removeFile(previous), "old stream");
    if (method != QemuMethod::snapshotSave) previous = h.file(name + ".stream");
  }
  if (!previous.empty()) check(fs::removeFile(previous), "old stream");
}

}  // namespace

std::vector<MethodResult> runQemuMethods(const SizeRun& r, const std::vector<QemuMethod>& methods) {
  std::vector<MethodResult> out;
  for (auto q : methods) out.push_back({key(q), label(q)});
  if (methods.empty()) return out;
  size_t next = 0;
  try {
    BaselineHost h(r);
    auto g = h.bootGuest();
    for (; next < methods.size(); ++next) {
      auto& m = out[next];
      m.extra["filesystem"] = "btrfs";
      m.extra["accel"] = g.accel().accel == vmm::Accel::kvm ? "kvm" : "tcg";
      try {
        measure(h, g, r, methods[next], m);
      } catch (const BenchError& e) {
        m.ok = false;
        m.error = e.what();
        std::fprintf(stderr, "   %s FAILED: %s\n", m.method.c_str(), e.what());
        // A method that left the guest stopped must not fail the ones after it.
        if (auto st = g.qmp().execute("query-status"); st && st->value("status", "") != "running")
          (void)g.qmp().execute("cont");
      }
    }
  } catch (const BenchError& e) {
    for (; next < methods.size(); ++next) {
      out[next].ok = false;
      out[next].error = e.what();
      std::fprintf(stderr, "   %s FAILED: %s\n", out[next].method.c_str(), e.what());
    }
  }
  return out;
}

}  // namespace vmckpt::bench
