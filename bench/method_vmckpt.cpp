// vmckpt's own snapshot/restore, through the same VmManager the CLI uses.
#include <cstdio>

#include "bench/methods.hpp"
#include "common/fs.hpp"
#include "loop_fs.hpp"
#include "vmm/lifecycle.hpp"

namespace vmckpt::bench {
namespace {

using namespace std::chrono_literals;

constexpr const char* kVm = "bench";

std::string storeKey(VmckptStore s) {
  switch (s) {
    case VmckptStore::btrfs: return "vmckpt-btrfs";
    case VmckptStore::reflinkXfs: return "vmckpt-reflink-xfs";
    case VmckptStore::copy: return "vmckpt-copy";
    case VmckptStore::btrfsLive: return "vmckpt-live";
  }
  return "?";
}

std::string storeLabel(VmckptStore s) {
  switch (s) {
    case VmckptStore::btrfs: return "vmckpt, Btrfs";
    case VmckptStore::reflinkXfs: return "vmckpt, reflink (XFS)";
    case VmckptStore::copy: return "vmckpt, copy mode";
    case VmckptStore::btrfsLive: return "vmckpt --live (anonymous RAM), Btrfs";
  }
  return "?";
}

vmm::store::StoreMode storeMode(VmckptStore s) {
  switch (s) {
    case VmckptStore::btrfs: return vmm::store::StoreMode::btrfs;
    case VmckptStore::reflinkXfs: return vmm::store::StoreMode::reflink;
    case VmckptStore::copy: return vmm::store::StoreMode::copy;
    case VmckptStore::btrfsLive: return vmm::store::StoreMode::btrfs;
  }
  return vmm::store::StoreMode::copy;
}

vmm::SnapshotOptions snapshotOptions(VmckptStore s) {
  vmm::SnapshotOptions o;
  o.mode = storeMode(s);
  o.live = s == VmckptStore::btrfsLive;
  return o;
}

// A booted guest in a fresh store on its own loop filesystem; stopped (forced) on exit.
class BenchVm {
 public:
  BenchVm(const SizeRun& r, const std::string& fsType, vmm::store::StoreMode mode, vmm::RamBackend ram,
          std::uint64_t fsBytes) {
    lfs_ = check(test::LoopFs::create(fsType, fsBytes), cat(fsType, " loop filesystem"));
    home_ = lfs_->mountPoint() + "/vmckpt";
    mgr_.emplace(check(vmm::StoreRoot::open(home_), "store"));
    vmm::CreateRequest req;
    req.spec.name = kVm;
    req.spec.memoryBytes = r.memoryBytes;
    req.spec.ram = ram;
    req.spec.append = cat("console=ttyS0 quiet vmckpt.workload=memtest vmckpt.memtest=--mib,", r.writtenMib);
    req.kernel = r.guestDir + "/kernel";
    req.initrd = r.guestDir + "/initrd";
    req.storeMode = mode;
    check(mgr_->create(req), "create");
    console_.emplace(mgr_->root().vm(kVm));
    auto st = check(mgr_->start(kVm), "start");
    accel_ = st.accel;
    try {
      size_t at = console_->waitForEither("memtest: filled", "memtest: error", 0, 1800s);
      console_->waitFor("counter 1", at, 120s);
    } catch (...) {  // no destructor runs for a half-built object: stop the guest here
      stopGuest();
      throw;
    }
  }
  ~BenchVm() { stopGuest(); }
  vmm::VmManager& mgr() { return *mgr_; }
  const Console& console() const { return *console_; }
  const std::string& home() const { return home_; }
  const std::string& accel() const { return accel_; }
  DiskMeter meter() const { return DiskMeter(lfs_->device()); }

 private:
  // Before lfs_ goes: a running guest keeps the loop filesystem busy.
  void stopGuest() {
    if (mgr_) (void)mgr_->stop(kVm, {true, 10s});
  }

  std::unique_ptr<test::LoopFs> lfs_;
  std::string home_, accel_;
  std::optional<vmm::VmManager> mgr_;
  std::optional<Console> console_;
};

// Snapshots `r.runs` times (each after the guest dirtied r.dirtyMib), then restores the
// last one `r.runs` times, checking the guest's memory after each.
void measure(BenchVm& vm, const SizeRun& r, VmckptStore s, MethodResult& m) {
  const vmm::SnapshotOptions opts = snapshotOptions(s);
  DiskMeter meter = vm.meter();
  std::string lastId;
  std::vector<std::string> taken;
  std::vector<double> streamMs;
  for (int i = 0; i < r.runs; ++i) {
    vm.console().dirty(r.dirtyMib, 600s);
    std::uint64_t before = meter.bytesWritten();
    auto t0 = Clock::now();
    auto snap = check(vm.mgr().snapshot(kVm, opts), "snapshot");
    syncFs(vm.home());
    double total = msSince(t0);
    std::uint64_t written = meter.bytesWritten() - before;
    const auto& t = snap.manifest.timings;
    m.pauseMs.push_back(t.pauseMs);
    m.totalMs.push_back(total);
    m.writtenBytes.push_back(static_cast<double>(written));
    m.secondSnapshotBytes.push_back(static_cast<double>(snap.manifest.exclusiveBytes));
    m.extra["devstate_bytes"] = snap.manifest.devstateBytes;
    if (opts.live) streamMs.push_back(t.streamMs);
    std::fprintf(stderr, "   %s snapshot %d: pause %.1f ms, total %.0f ms, wrote %.1f MiB, costs %.1f MiB\n",
                 m.method.c_str(), i + 1, t.pauseMs, total, static_cast<double>(written) / (1 << 20),
                 static_cast<double>(snap.manifest.exclusiveBytes) / (1 << 20));
    lastId = snap.manifest.id;
    taken.push_back(lastId);
    // Keep the newest two: the next one's cost is measured against a parent, and the
    // store stays bounded (copy mode costs a whole RAM file per snapshot).
    if (taken.size() > 2) {
      check(vm.mgr().deleteSnapshot(kVm, taken.front()), "delete old snapshot");
      taken.erase(taken.begin());
    }
  }
  std::vector<double> phases[4];
  for (int i = 0; i < r.runs; ++i) {
    check(vm.mgr().stop(kVm, {true, 10s}), "stop before restore");
    size_t at = vm.console().size();
    auto rr = check(vm.mgr().restore(kVm, lastId, {}), "restore");
    m.restoreMs.push_back(rr.restoreMs);
    phases[0].push_back(rr.phases.cloneMs);
    phases[1].push_back(rr.phases.qemuStartMs);
    phases[2].push_back(rr.phases.devstateMs);
    phases[3].push_back(rr.phases.contMs);
    at = vm.console().waitFor(cat("[vmckpt: restored from snapshot ", lastId), at, 120s);
    vm.console().waitFor("counter ", at, 120s);
    vm.console().verifyMemory(1800s);
    ++m.restoresVerified;
    std::fprintf(stderr, "   %s restore %d: %.0f ms to running (clone %.0f, QEMU start %.0f, device state %.0f, cont %.0f), memory verified\n",
                 m.method.c_str(), i + 1, rr.restoreMs, rr.phases.cloneMs, rr.phases.qemuStartMs,
                 rr.phases.devstateMs, rr.phases.contMs);
  }
  if (opts.live) m.extra["stream_ms"] = stats(streamMs);  // migrate to the stream's end, the guest running
  m.extra["restore_phases_ms"] = {{"clone", stats(phases[0])},
                                  {"qemu_start", stats(phases[1])},
                                  {"devstate", stats(phases[2])},
                                  {"cont", stats(phases[3])}};
}

}  // namespace

std::vector<MethodResult> runVmckpt(const SizeRun& r, const std::vector<VmckptStore>& stores) {
  std::vector<MethodResult> out;
  auto has = [&](VmckptStore s) { return std::find(stores.begin(), stores.end(), s) != stores.end(); };
  // Room for the RAM file, a few copy-mode snapshots of it and the restores' clones.
  const std::uint64_t fsBytes = r.memoryBytes * 5 + (8ull << 30);

  auto runGroup = [&](const std::string& fsType, vmm::store::StoreMode vmMode, std::vector<VmckptStore> group,
                      vmm::RamBackend ram = vmm::RamBackend::file) {
    std::vector<MethodResult> results;
    for (auto s : group) results.push_back({storeKey(s), storeLabel(s)});
    size_t next = 0;
    try {
      BenchVm vm(r, fsType, vmMode, ram, fsBytes);
      for (; next < group.size(); ++next) {
        auto& m = results[next];
        m.extra["filesystem"] = fsType;
        m.extra["accel"] = vm.accel();
        if (next == 0) {  // the first snapshot after boot flushes all the written RAM
          std::uint64_t before = vm.meter().bytesWritten();
          auto first = check(vm.mgr().snapshot(kVm, snapshotOptions(group[0])), "first snapshot");
          syncFs(vm.home());
          m.extra["first_snapshot"] = {{"pause_ms", first.manifest.timings.pauseMs},
                                       {"vmckpt_total_ms", first.manifest.timings.totalMs},
                                       {"written_bytes", vm.meter().bytesWritten() - before},
                                       {"exclusive_bytes", first.manifest.exclusiveBytes}};
        }
        try {
          measure(vm, r, group[next], m);
        } catch (const BenchError& e) {
          m.ok = false;
          m.error = e.what();
          std::fprintf(stderr, "   %s FAILED: %s\n", m.method.c_str(), e.what());
          // The VM may be stopped now; the next method of the group needs it running.
          if (next + 1 < group.size()) {
            auto st = vm.mgr().status(kVm);
            if (!st || st->state != vmm::VmState::running) raise(cat("guest not running after ", m.method));
          }
        }
      }
    } catch (const BenchError& e) {  // setup failed: every method not yet run fails with it
      for (; next < group.size(); ++next) {
        results[next].ok = false;
        results[next].error = e.what();
        std::fprintf(stderr, "   %s FAILED: %s\n", results[next].method.c_str(), e.what());
      }
    }
    for (auto& m : results) out.push_back(std::move(m));
  };

  if (has(VmckptStore::btrfs)) runGroup("btrfs", vmm::store::StoreMode::btrfs, {VmckptStore::btrfs});
  std::vector<VmckptStore> xfs;
  if (has(VmckptStore::reflinkXfs)) xfs.push_back(VmckptStore::reflinkXfs);
  if (has(VmckptStore::copy)) xfs.push_back(VmckptStore::copy);
  if (!xfs.empty()) runGroup("xfs", vmm::store::StoreMode::reflink, xfs);
  if (has(VmckptStore::btrfsLive))
    runGroup("btrfs", vmm::store::StoreMode::btrfs, {VmckptStore::btrfsLive}, vmm::RamBackend::anon);
  return out;
}

}  // namespace vmckpt::bench
