// Runtime cost between snapshots. One guest at a time (the hosts are small): boot, let
// vmckpt-memtest fill its region, an unmeasured `bandwidth` warm-up, then the measured
// `bandwidth SECONDS`, `verify`, stop. The RAM backings (anonymous, file-backed as
// vmckpt runs it, and optionally file-backed with host writeback tuned) take turns in
// ABBA order (A B C, C B A, ...) so that drift on the host (other guests, page cache)
// hits them alike. Around the measured window it reads the loop device's written
// sectors, QEMU's faults and CPU time, and /proc/vmstat.
#include "bench/runtime_cost.hpp"

#include <fcntl.h>
#include <linux/loop.h>
#include <sys/ioctl.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <thread>

#include "common/fs.hpp"
#include "common/strings.hpp"
#include "common/unique_fd.hpp"
#include "loop_fs.hpp"
#include "vmm/lifecycle.hpp"
#include "vmm/qemu_boot.hpp"

namespace vmckpt::bench {
namespace {

using namespace std::chrono_literals;

constexpr const char* kVm = "runtime";
constexpr double kMiB = 1024.0 * 1024.0;

// Whole-process counters of QEMU (all threads) from /proc/PID/stat.
struct ProcCounters {
  double minorFaults = 0, majorFaults = 0, userS = 0, sysS = 0;
};

ProcCounters readProc(pid_t pid) {
  std::string path = cat("/proc/", pid, "/stat");
  auto t = fs::readFile(path, 8192);
  if (!t) raise(cat("cannot read ", path, " (QEMU gone?): ", t.error().message()));
  // The command name (field 2) may hold spaces; the fields after its ')' do not.
  auto close = t->rfind(')');
  if (close == std::string::npos) raise(cat("unexpected format of ", path));
  std::vector<std::string> f;
  for (auto& s : split(std::string(trim(std::string_view(*t).substr(close + 1))), ' '))
    if (!s.empty()) f.push_back(s);
  // f[0] is field 3 (state); minflt is field 10, majflt 12, utime 14, stime 15.
  if (f.size() < 13) raise(cat("unexpected format of ", path));
  const double hz = static_cast<double>(::sysconf(_SC_CLK_TCK));
  return {std::stod(f[7]), std::stod(f[9]), std::stod(f[11]) / hz, std::stod(f[12]) / hz};
}

std::map<std::string, double> readVmstat() {
  std::map<std::string, double> m;
  auto t = fs::readFile("/proc/vmstat", 1 << 20);
  if (!t) return m;
  for (const auto& line : split(*t, '\n')) {
    auto sp = line.find(' ');
    if (sp == std::string::npos) continue;
    m[line.substr(0, sp)] = std::stod(line.substr(sp + 1));
  }
  return m;
}

// The host's writeback settings (they decide when the kernel writes guest RAM back).
Json hostWriteback() {
  Json j = Json::object();
  for (const char* k : {"dirty_background_bytes", "dirty_background_ratio", "dirty_bytes", "dirty_ratio",
                        "dirty_expire_centisecs", "dirty_writeback_centisecs"}) {
    auto t = fs::readFile(cat("/proc/sys/vm/", k), 4096);
    if (t) j[std::string("vm.") + k] = std::stoll(std::string(trim(*t)));
  }
  auto vs = readVmstat();
  for (const char* k : {"nr_dirty_threshold", "nr_dirty_background_threshold"})
    if (vs.count(k)) j[std::string(k) + "_mib"] = vs[k] * 4096 / kMiB;
  return j;
}

std::string readSysctl(const std::string& key) {
  auto t = fs::readFile("/proc/sys/vm/" + key, 4096);
  if (!t) raise(cat("cannot read vm.", key, ": ", t.error().message()));
  return std::string(trim(*t));
}

void writeFile(const std::string& path, const std::string& value);
void writeSysctl(const std::string& key, const std::string& value) { writeFile("/proc/sys/vm/" + key, value); }

// The backing-device-info directory of the store's filesystem on `device` (e.g.
// /dev/loop3): Btrfs has its own bdi ("btrfs-N", linked from /sys/fs/btrfs/FSID/bdi),
// other filesystems use the block device's ("7:3"). Empty when not found.
std::string storeBdi(const std::string& device) {
  const std::string dev = device.substr(device.rfind('/') + 1);
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/sys/fs/btrfs", ec)) {
    const std::string dir = e.path().string();
    if (fs::exists(dir + "/devices/" + dev) && fs::exists(dir + "/bdi/min_ratio")) return dir + "/bdi";
  }
  auto t = fs::readFile(cat("/sys/class/block/", dev, "/dev"), 64);
  if (t && fs::exists(cat("/sys/class/bdi/", trim(*t), "/min_ratio"))) return cat("/sys/class/bdi/", trim(*t));
  return {};
}

void writeFile(const std::string& path, const std::string& value) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd || ::write(fd.get(), value.data(), value.size()) != static_cast<ssize_t>(value.size()))
    raise(cat("cannot write ", value, " to ", path, ": ", std::strerror(errno)));
}

// Host writeback tuned so that the kernel leaves guest RAM alone between snapshots:
// both dirty thresholds far above the guest's RAM, dirty pages not written back for
// age before an hour, and the store's device guaranteed half of those thresholds (the
// kernel otherwise gives each device a share proportional to its recent writeback,
// which is small for a store that has not written for a while). Applied in the
// constructor, the saved values restored in the destructor (the `*_bytes` and `*_ratio`
// pairs exclude each other: writing one zeroes the other, so the one that was in
// effect is written back).
class WritebackTuning {
 public:
  static constexpr int kStoreMinRatio = 50;
  static std::vector<std::pair<std::string, std::uint64_t>> settings(std::uint64_t guestBytes) {
    const std::uint64_t bg = 2 * guestBytes + (4ull << 30);
    return {{"dirty_background_bytes", bg}, {"dirty_bytes", 2 * bg}, {"dirty_expire_centisecs", 360000}};
  }
  static Json values(std::uint64_t guestBytes, const std::string& bdi) {
    Json j = Json::object();
    for (const auto& [k, v] : settings(guestBytes)) j["vm." + k] = v;
    if (!bdi.empty()) j[bdi + "/min_ratio"] = kStoreMinRatio;
    return j;
  }
  WritebackTuning(std::uint64_t guestBytes, std::string bdi) : bdi_(std::move(bdi)) {
    for (const char* k : {"dirty_background_bytes", "dirty_background_ratio", "dirty_bytes", "dirty_ratio",
                          "dirty_expire_centisecs"})
      saved_[k] = readSysctl(k);
    if (!bdi_.empty()) {
      auto t = fs::readFile(bdi_ + "/min_ratio", 64);
      if (!t) raise(cat("cannot read ", bdi_, "/min_ratio: ", t.error().message()));
      savedMinRatio_ = std::string(trim(*t));
    }
    try {
      for (const auto& [k, v] : settings(guestBytes)) writeSysctl(k, std::to_string(v));
      if (!bdi_.empty()) writeFile(bdi_ + "/min_ratio", std::to_string(kStoreMinRatio));
    } catch (...) {
      restore();
      throw;
    }
  }
  ~WritebackTuning() { restore(); }
  WritebackTuning(const WritebackTuning&) = delete;
  WritebackTuning& operator=(const WritebackTuning&) = delete;

 private:
  void restore() {
    auto attempt = [](auto&& f) {
      try {
        f();
      } catch (const BenchError& e) {
        std::fprintf(stderr, "vmckpt-bench: warning: %s\n", e.what());
      }
    };
    auto put = [this, &attempt](const std::string& bytes, const std::string& ratio) {
      attempt([&] {
        if (saved_[bytes] != "0") writeSysctl(bytes, saved_[bytes]);
        else writeSysctl(ratio, saved_[ratio]);
      });
    };
    put("dirty_background_bytes", "dirty_background_ratio");
    put("dirty_bytes", "dirty_ratio");
    put("dirty_expire_centisecs", "dirty_expire_centisecs");
    if (!savedMinRatio_.empty()) attempt([&] { writeFile(bdi_ + "/min_ratio", savedMinRatio_); });
  }
  std::string bdi_;
  std::map<std::string, std::string> saved_;
  std::string savedMinRatio_;
};

// Switches a loop device to direct I/O (its writes bypass the image file's page cache).
std::string setLoopDirectIo(const std::string& device) {
  UniqueFd fd(::open(device.c_str(), O_RDWR | O_CLOEXEC));
  if (!fd) return cat("open ", device, ": ", std::strerror(errno));
  if (::ioctl(fd.get(), LOOP_SET_DIRECT_IO, 1UL) != 0) return cat("LOOP_SET_DIRECT_IO: ", std::strerror(errno));
  return {};
}

// One measured window.
struct Sample {
  double mibPerS = 0;        // what the guest wrote, by its own clock
  double slowestSecond = 0;  // MiB/s in its slowest whole second
  double diskMibPerS = 0;    // written to the store's loop device, per host second
  double minorFaultsPerS = 0;
  double sysCpuPercent = 0;  // QEMU's kernel time per host second (all threads)
  double userCpuPercent = 0;
  double dirtiedMibPerS = 0;  // host-wide /proc/vmstat nr_dirtied, nr_written
  double writtenMibPerS = 0;
  double reclaimedMibPerS = 0;  // host-wide pgsteal_*: memory pressure evicts (and first writes back) page cache
};

// Sends `bandwidth SECONDS` and waits for its result line; returns the line.
std::string runBandwidth(const Console& con, int seconds) {
  size_t at = con.size();
  con.send(cat("bandwidth ", seconds));
  size_t pos = con.waitForEither("memtest: bandwidth ", "memtest: usage", at,
                                 std::chrono::seconds(seconds * 3 + 120));
  for (auto deadline = Clock::now() + 30s;;) {
    std::string t = con.text();
    if (auto nl = t.find('\n', pos); nl != std::string::npos) return t.substr(pos, nl - pos);
    if (Clock::now() > deadline) raise("memtest's bandwidth line did not end");
    std::this_thread::sleep_for(50ms);
  }
}

Sample measure(const Console& con, pid_t pid, const DiskMeter& disk, int seconds) {
  auto vm0 = readVmstat();
  auto pc0 = readProc(pid);
  auto d0 = disk.bytesWritten();
  auto t0 = Clock::now();
  std::string line = runBandwidth(con, seconds);
  double hostS = msSince(t0) / 1000.0;
  auto d1 = disk.bytesWritten();
  auto pc1 = readProc(pid);
  auto vm1 = readVmstat();

  // "R MiB/s over S s (N MiB written in X ms, slowest second A MiB/s, fastest B MiB/s)"
  double rate = 0, sec = 0, mib = 0, ms = 0, slow = 0, fast = 0;
  if (std::sscanf(line.c_str(), "%lf MiB/s over %lf s (%lf MiB written in %lf ms, slowest second %lf MiB/s, fastest %lf",
                  &rate, &sec, &mib, &ms, &slow, &fast) != 6 ||
      ms <= 0)
    raise(cat("cannot parse memtest's bandwidth line: ", line));
  Sample s;
  s.mibPerS = mib * 1000.0 / ms;
  s.slowestSecond = slow;
  s.diskMibPerS = static_cast<double>(d1 - d0) / kMiB / hostS;
  s.minorFaultsPerS = (pc1.minorFaults - pc0.minorFaults) / hostS;
  s.sysCpuPercent = (pc1.sysS - pc0.sysS) / hostS * 100;
  s.userCpuPercent = (pc1.userS - pc0.userS) / hostS * 100;
  s.dirtiedMibPerS = (vm1["nr_dirtied"] - vm0["nr_dirtied"]) * 4096 / kMiB / hostS;
  s.writtenMibPerS = (vm1["nr_written"] - vm0["nr_written"]) * 4096 / kMiB / hostS;
  double stolen = 0;
  for (const char* k : {"pgsteal_kswapd", "pgsteal_direct", "pgsteal_khugepaged"}) stolen += vm1[k] - vm0[k];
  s.reclaimedMibPerS = stolen * 4096 / kMiB / hostS;
  return s;
}

struct Series {
  std::vector<double> mibPerS, slowest, disk, faults, sys, user, dirtied, written, reclaimed;
  void add(const Sample& s) {
    mibPerS.push_back(s.mibPerS);
    slowest.push_back(s.slowestSecond);
    disk.push_back(s.diskMibPerS);
    faults.push_back(s.minorFaultsPerS);
    sys.push_back(s.sysCpuPercent);
    user.push_back(s.userCpuPercent);
    dirtied.push_back(s.dirtiedMibPerS);
    written.push_back(s.writtenMibPerS);
    reclaimed.push_back(s.reclaimedMibPerS);
  }
  Json toJson() const {
    return {{"mib_per_s", stats(mibPerS)},
            {"slowest_second_mib_per_s", stats(slowest)},
            {"disk_write_mib_per_s", stats(disk)},
            {"qemu_minor_faults_per_s", stats(faults)},
            {"qemu_sys_cpu_percent", stats(sys)},
            {"qemu_user_cpu_percent", stats(user)},
            {"host_dirtied_mib_per_s", stats(dirtied)},
            {"host_written_back_mib_per_s", stats(written)},
            {"host_reclaimed_mib_per_s", stats(reclaimed)}};
  }
};

double median(const Json& st) { return st.is_null() ? 0.0 : st["median"].get<double>(); }

// Boot to "the region is filled and the counter runs", warm up, measure, verify.
Sample exercise(const Console& con, pid_t pid, const DiskMeter& disk, const RuntimeCostOptions& o) {
  size_t at = con.waitFor("memtest: filled", 0, 900s);
  con.waitFor("counter ", at, 120s);
  if (o.warmupSeconds > 0) (void)runBandwidth(con, o.warmupSeconds);
  Sample s = measure(con, pid, disk, o.seconds);
  con.verifyMemory(300s);
  return s;
}

}  // namespace

Json measureRuntimeCost(const RuntimeCostOptions& o) {
  if (o.seconds < 1 || o.runs < 1) raise("runtime cost: seconds and runs must be at least 1");
  const std::uint64_t memMib = o.memoryBytes >> 20;
  const std::uint64_t wsMib = o.workingSetBytes ? o.workingSetBytes >> 20 : memMib * 3 / 4;
  if (wsMib < 1 || wsMib >= memMib) raise("runtime cost: the working set must be at least 1 MiB and less than RAM");
  std::fprintf(stderr, "== runtime cost: %llu MiB guest rewriting %llu MiB, %d s per run, %d runs per backing\n",
               static_cast<unsigned long long>(memMib), static_cast<unsigned long long>(wsMib), o.seconds, o.runs);

  // Destroyed last: unmounts and detaches whatever happens below.
  auto lfs = check(test::LoopFs::create(o.fsType, o.memoryBytes * 3 + (4ull << 30)), "loop filesystem");
  const std::string home = lfs->mountPoint() + "/vmckpt";
  // The host filesystem that holds the loop image (its parent directory).
  const std::string hostDir = lfs->mountPoint().substr(0, lfs->mountPoint().rfind('/'));
  auto root = check(vmm::StoreRoot::open(home), "store");
  vmm::VmManager mgr(root);
  vmm::CreateRequest req;
  req.spec.name = kVm;
  req.spec.memoryBytes = o.memoryBytes;
  req.spec.append = cat("console=ttyS0 quiet vmckpt.workload=memtest vmckpt.memtest=--mib,", wsMib);
  req.kernel = o.guestDir + "/kernel";
  req.initrd = o.guestDir + "/initrd";
  check(mgr.create(req), "create");
  const vmm::VmPaths p = root.vm(kVm);
  struct Reaper {  // no QEMU of ours outlives the bench, also when a step raises
    vmm::VmManager& m;
    ~Reaper() { (void)m.stop(kVm, {true, 0s}); }
  } reaper{mgr};

  // The anonymous-RAM guest: same spec, launched directly, from a scratch directory.
  const vmm::VmPaths scratch(home + "/anonymous");
  check(fs::makeDirs(scratch.live, 0700), "scratch directory");
  check(fs::cloneOrCopyFile(p.kernel, scratch.kernel), "scratch kernel");
  check(fs::cloneOrCopyFile(p.initrd, scratch.initrd), "scratch initrd");
  auto specText = check(fs::readFile(p.spec), "read spec");
  const vmm::VmSpec spec = [&] {
    vmm::VmSpec s = check(vmm::VmSpec::fromJson(Json::parse(specText)), "spec");
    s.ram = vmm::RamBackend::anon;
    return s;
  }();

  std::string loopMode = "buffered";
  if (o.loopDirectIo) {
    if (auto why = setLoopDirectIo(lfs->device()); why.empty()) loopMode = "direct I/O";
    else std::fprintf(stderr, "   loop device stays buffered: %s\n", why.c_str());
  }
  const Json defaults = hostWriteback();  // before any tuning
  const std::string bdi = storeBdi(lfs->device());
  if (o.tunedWriteback && bdi.empty())
    std::fprintf(stderr, "   no bdi found for %s: its min_ratio stays as it is\n", lfs->device().c_str());

  enum class Backing { anon, file, fileTuned };
  std::vector<Backing> variants = {Backing::anon, Backing::file};
  if (o.tunedWriteback) variants.push_back(Backing::fileTuned);
  const char* names[] = {"anon", "file", "file-tuned"};
  const DiskMeter disk(lfs->device());
  Series series[3];
  std::vector<std::string> order;
  Json windows = Json::array();  // every measured window, in the order it ran
  std::string accel;
  for (int run = 0; run < o.runs; ++run) {
    // ABBA (ABC CBA ...): the order reverses every run, so linear drift cancels.
    std::vector<Backing> now = variants;
    if (run % 2) std::reverse(now.begin(), now.end());
    for (Backing b : now) {
      order.push_back(names[static_cast<int>(b)]);
      Sample s;
      if (b == Backing::anon) {
        check(fs::removeFile(scratch.serialLog), "old serial log");
        auto booted = check(vmm::bootQemu(spec, scratch, {home, false, ""}), "boot (anonymous RAM)");
        s = exercise(Console(scratch), booted.pid(), disk, o);
      } else {  // (`booted` is gone: that QEMU was killed)
        std::optional<WritebackTuning> tuning;
        if (b == Backing::fileTuned) tuning.emplace(o.memoryBytes, bdi);
        auto st = check(mgr.start(kVm), "start (file-backed RAM)");
        accel = st.accel;
        s = exercise(Console(p), st.pid, disk, o);
        check(mgr.stop(kVm, {true, 0s}), "stop");
        // Drop the RAM file while still tuned: its dirty pages go with it, unwritten.
        check(fs::removeFile(p.mem), "remove RAM file");
      }
      series[static_cast<int>(b)].add(s);
      windows.push_back({{"backing", names[static_cast<int>(b)]},
                         {"mib_per_s", s.mibPerS},
                         {"slowest_second_mib_per_s", s.slowestSecond},
                         {"disk_write_mib_per_s", s.diskMibPerS},
                         {"qemu_minor_faults_per_s", s.minorFaultsPerS},
                         {"qemu_user_cpu_percent", s.userCpuPercent},
                         {"qemu_sys_cpu_percent", s.sysCpuPercent},
                         {"host_reclaimed_mib_per_s", s.reclaimedMibPerS}});
      // Nothing of this run may spill into the next: flush both the store and the
      // filesystem under the loop image.
      syncFs(lfs->mountPoint());
      syncFs(hostDir);
      std::fprintf(stderr, "   %d %s: %.0f MiB/s (slowest second %.0f), disk %.1f MiB/s, %.0f faults/s, sys %.0f%%\n",
                   run + 1, names[static_cast<int>(b)], s.mibPerS, s.slowestSecond, s.diskMibPerS, s.minorFaultsPerS,
                   s.sysCpuPercent);
    }
  }

  Json r = {{"memory_mib", memMib},
            {"working_set_mib", wsMib},
            {"seconds", o.seconds},
            {"warmup_seconds", o.warmupSeconds},
            {"runs", o.runs},
            {"accel", accel},
            {"filesystem", cat(o.fsType, " on a loop device (", loopMode, ")")},
            {"order", order},
            {"windows", windows},
            {"anonymous", series[0].toJson()},
            {"file_backed", series[1].toJson()}};
  const double a = median(r["anonymous"]["mib_per_s"]);
  auto overhead = [a](const Json& st) { return a > 0 ? (1 - median(st) / a) * 100 : 0.0; };
  r["overhead_percent"] = overhead(r["file_backed"]["mib_per_s"]);
  r["host_writeback"] = defaults;
  if (o.tunedWriteback) {
    r["file_backed_tuned"] = series[2].toJson();
    r["file_backed_tuned"]["writeback"] = WritebackTuning::values(o.memoryBytes, bdi);
    r["overhead_percent_tuned"] = overhead(r["file_backed_tuned"]["mib_per_s"]);
  }
  r["note"] =
      "A guest rewriting its memtest region continuously (vmckpt-memtest `bandwidth`), one guest at a time, "
      "backings alternated ABBA. file_backed runs under the host's writeback settings (host_writeback), "
      "file_backed_tuned (when present) under file_backed_tuned.writeback. mib_per_s: guest-measured write rate; overhead_percent: 1 - median(file)/median(anon). "
      "disk_write_mib_per_s: sectors written to the store's loop device per second of the window. "
      "qemu_*: QEMU's own counters over the window; host_*: /proc/vmstat (whole host). See bench/RUNTIME_COST.md.";
  return r;
}

}  // namespace vmckpt::bench
