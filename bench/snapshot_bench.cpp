// vmckpt-bench: pause and restore-to-running of vmckpt's snapshot fast path, against
// QEMU's own stop + migrate-to-file (what `virsh save` does) on the same guest in the
// same run. Each size gets a fresh Btrfs loop filesystem and a guest that wrote a
// pattern over half of its RAM (vmckpt-memtest). Results: JSON + a Markdown table.
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <thread>

#include "common/child_process.hpp"
#include "common/fs.hpp"
#include "common/log.hpp"
#include "common/strings.hpp"
#include "common/unique_fd.hpp"
#include "loop_fs.hpp"
#include "vmm/lifecycle.hpp"
#include "vmm/qemu_boot.hpp"
#include "vmm/qemu_process.hpp"

using namespace vmckpt;
using namespace std::chrono_literals;
using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

struct Options {
  std::vector<std::uint64_t> sizes = {1ull << 30, 4ull << 30};
  int runs = 5;
  int baselineRuns = 3;
  std::string fsType = "btrfs";
  std::string out;
  std::string guest = VMCKPT_TEST_GUEST_DIR;
};

[[noreturn]] void die(const std::string& msg) {
  std::fprintf(stderr, "vmckpt-bench: error: %s\n", msg.c_str());
  std::exit(1);
}

template <class T>
T check(Result<T> r, const std::string& what) {
  if (!r) die(cat(what, ": ", r.error().message()));
  return std::move(*r);
}
void check(Status s, const std::string& what) {
  if (!s) die(cat(what, ": ", s.error().message()));
}

Json stats(std::vector<double> v) {
  if (v.empty()) return nullptr;
  std::sort(v.begin(), v.end());
  double median = v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
  return {{"median", median}, {"min", v.front()}, {"max", v.back()}, {"runs", v}};
}

class Guest {
 public:
  Guest(vmm::VmPaths p) : p_(std::move(p)) {}
  std::string console() const {
    auto t = fs::readFile(p_.serialLog, 256 << 20);
    return t ? *t : std::string();
  }
  // Waits for `text` to appear after byte offset `from`; returns the offset just past it.
  size_t waitFor(const std::string& text, size_t from, std::chrono::seconds timeout) const {
    auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
      std::string c = console();
      if (auto pos = c.find(text, from); pos != std::string::npos) return pos + text.size();
      std::this_thread::sleep_for(50ms);
    }
    die(cat("guest did not print '", text, "' within ", timeout.count(), " s"));
  }
  void send(const std::string& line) const {
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, p_.console.c_str(), sizeof addr.sun_path - 1);
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) die("console connect failed");
    std::string data = line + "\n";
    if (::send(fd.get(), data.data(), data.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(data.size())) die("console send");
    std::this_thread::sleep_for(100ms);
  }

 private:
  vmm::VmPaths p_;
};

// QEMU's own way: stop, migrate all of RAM to a file, cont. Returns the pause in ms.
double baselineSave(const vmm::VmPaths& p, const std::string& file) {
  auto c = check(vmm::connectQmp(p, Deadline::in(5s)), "baseline connect");
  check(c.execute("migrate-set-capabilities",
                  {{"capabilities",
                    {{{"capability", "x-ignore-shared"}, {"state", false}}, {{"capability", "events"}, {"state", true}}}}}),
        "baseline caps");
  check(c.execute("migrate-set-parameters", {{"max-bandwidth", 100ull << 30}}), "baseline params");
  UniqueFd out(::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  int fd = out.get();
  check(c.execute("getfd", {{"fdname", "bench"}}, Deadline::in(5s), std::span<const int>(&fd, 1)), "baseline getfd");
  (void)c.takeEvents();
  check(c.execute("stop"), "baseline stop");
  auto stop = check(c.waitEvent("STOP", Deadline::in(5s)), "baseline STOP");
  check(c.execute("migrate", {{"uri", "fd:bench"}}), "baseline migrate");
  check(c.waitEvent(
            [](const qmp::Event& e) { return e.name == "MIGRATION" && e.data.value("status", "") == "completed"; },
            Deadline::in(600s)),
        "baseline migration");
  for (auto d = Deadline::in(10s); !d.expired();) {
    auto st = check(c.execute("query-status"), "baseline status");
    if (st.value("status", "") == "postmigrate") break;
    std::this_thread::sleep_for(1ms);
  }
  check(c.execute("cont"), "baseline cont");
  auto resume = check(c.waitEvent("RESUME", Deadline::in(10s)), "baseline RESUME");
  ::fsync(out.get());
  // Leave x-ignore-shared on for vmckpt's own snapshots that follow.
  (void)c.execute("migrate-set-capabilities", {{"capabilities", {{{"capability", "x-ignore-shared"}, {"state", true}}}}});
  return static_cast<double>(resume.timestampUs - stop.timestampUs) / 1000.0;
}

// QEMU's own restore: a fresh QEMU -incoming reads the whole stream back into RAM.
double baselineRestore(const vmm::VmSpec& spec, const vmm::VmPaths& scratch, const std::string& home,
                       const std::string& machine, const std::string& file) {
  auto t0 = Clock::now();
  (void)fs::removeFile(scratch.mem);
  auto booted = check(vmm::bootQemu(spec, scratch, {home, true, machine}), "baseline restore boot");
  auto& c = booted.qmp();
  check(c.execute("migrate-set-capabilities", {{"capabilities", {{{"capability", "events"}, {"state", true}}}}}),
        "baseline restore caps");
  UniqueFd in(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
  int fd = in.get();
  check(c.execute("getfd", {{"fdname", "bench"}}, Deadline::in(5s), std::span<const int>(&fd, 1)), "getfd");
  check(c.execute("migrate-incoming", {{"uri", "fd:bench"}}), "migrate-incoming");
  check(c.waitEvent(
            [](const qmp::Event& e) { return e.name == "MIGRATION" && e.data.value("status", "") == "completed"; },
            Deadline::in(600s)),
        "baseline incoming");
  check(c.execute("cont"), "baseline cont");
  check(c.waitEvent("RESUME", Deadline::in(10s)), "baseline RESUME");
  double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  return ms;  // booted goes out of scope: that QEMU is killed
}

Json benchSize(const Options& o, std::uint64_t memBytes) {
  const std::uint64_t mib = memBytes >> 20, fillMib = mib / 2;
  std::fprintf(stderr, "== %llu MiB guest, %llu MiB written\n", static_cast<unsigned long long>(mib),
               static_cast<unsigned long long>(fillMib));
  auto lfs = check(test::LoopFs::create(o.fsType, memBytes * 3 + (6ull << 30)), "loop filesystem");
  std::string home = lfs->mountPoint() + "/vmckpt";
  auto root = check(vmm::StoreRoot::open(home), "store");
  vmm::VmManager mgr(root);
  vmm::CreateRequest req;
  req.spec.name = "bench";
  req.spec.memoryBytes = memBytes;
  req.spec.append = cat("console=ttyS0 quiet vmckpt.workload=memtest vmckpt.memtest=--mib,", fillMib);
  req.kernel = o.guest + "/kernel";
  req.initrd = o.guest + "/initrd";
  check(mgr.create(req), "create");
  vmm::VmPaths p = root.vm("bench");
  Guest g(p);
  // Whatever happens, no QEMU of ours outlives the bench.
  struct Reaper {
    vmm::VmManager& m;
    ~Reaper() { (void)m.stop("bench", {true, 0s}); }
  } reaper{mgr};

  auto st = check(mgr.start("bench"), "start");
  size_t at = g.waitFor("memtest: filled", 0, 1800s);
  at = g.waitFor("counter 1", at, 120s);

  Json r = {{"memory_mib", mib}, {"written_mib", fillMib}, {"accel", st.accel}};
  auto first = check(mgr.snapshot("bench", {}), "first snapshot");
  r["first_snapshot"] = {{"pause_ms", first.manifest.timings.pauseMs},
                         {"total_ms", first.manifest.timings.totalMs},
                         {"exclusive_bytes", first.manifest.exclusiveBytes}};

  std::vector<double> pause, total, flush, capture, devstate, excl;
  std::string lastId;
  for (int i = 0; i < o.runs; ++i) {
    g.send("dirty 64");
    at = g.waitFor("memtest: dirtied", at, 300s);
    auto s = check(mgr.snapshot("bench", {}), "snapshot");
    const auto& t = s.manifest.timings;
    pause.push_back(t.pauseMs);
    total.push_back(t.totalMs);
    flush.push_back(t.flushMs);
    capture.push_back(t.captureMs);
    devstate.push_back(t.devstateMs);
    excl.push_back(static_cast<double>(s.manifest.exclusiveBytes) / (1 << 20));
    r["devstate_bytes"] = s.manifest.devstateBytes;
    lastId = s.manifest.id;
    std::fprintf(stderr, "   snapshot %d: pause %.1f ms, total %.0f ms, exclusive %.1f MiB\n", i + 1, t.pauseMs,
                 t.totalMs, excl.back());
  }
  r["vmckpt_snapshot"] = {{"pause_ms", stats(pause)},         {"total_ms", stats(total)},
                          {"flush_ms", stats(flush)},         {"devstate_ms", stats(devstate)},
                          {"capture_ms", stats(capture)},     {"exclusive_mib_after_64mib_dirtied", stats(excl)}};

  std::vector<double> restore;
  for (int i = 0; i < o.runs; ++i) {
    check(mgr.stop("bench", {true, 0s}), "stop");
    auto rr = check(mgr.restore("bench", lastId, {}), "restore");
    restore.push_back(rr.restoreMs);
    std::string marker = cat("[vmckpt: restored from snapshot ", lastId);
    size_t m = g.console().rfind(marker);
    g.waitFor("counter ", m, 60s);  // it really runs
    std::fprintf(stderr, "   restore %d: %.0f ms to running\n", i + 1, rr.restoreMs);
  }
  r["vmckpt_restore_ms"] = stats(restore);

  // Baseline, same guest, same run.
  std::vector<double> bPause, bRestore;
  std::string file = lfs->mountPoint() + "/baseline.stream";
  vmm::VmPaths scratch(home + "/baseline");
  check(fs::makeDirs(scratch.live, 0700), "scratch");
  check(fs::cloneOrCopyFile(p.kernel, scratch.kernel), "scratch kernel");
  check(fs::cloneOrCopyFile(p.initrd, scratch.initrd), "scratch initrd");
  vmm::VmSpec spec = check(vmm::VmSpec::fromJson(Json::parse(*fs::readFile(p.spec))), "spec");
  std::string machine = vmm::loadRecord(p).machine;
  std::uint64_t streamBytes = 0;
  for (int i = 0; i < o.baselineRuns; ++i) {
    double ms = baselineSave(p, file);
    bPause.push_back(ms);
    streamBytes = static_cast<std::uint64_t>(std::ifstream(file, std::ios::ate | std::ios::binary).tellg());
    bRestore.push_back(baselineRestore(spec, scratch, home, machine, file));
    std::fprintf(stderr, "   baseline %d: pause %.0f ms, restore %.0f ms, stream %.0f MiB\n", i + 1, ms,
                 bRestore.back(), static_cast<double>(streamBytes) / (1 << 20));
  }
  r["qemu_migrate_to_file"] = {{"pause_ms", stats(bPause)}, {"restore_ms", stats(bRestore)}, {"stream_bytes", streamBytes}};
  return r;
}

std::string fmtMs(const Json& s) {
  if (s.is_null()) return "-";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.1f (%.1f–%.1f)", s["median"].get<double>(), s["min"].get<double>(),
                s["max"].get<double>());
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  ::signal(SIGPIPE, SIG_IGN);
  log::setLevel(log::Level::warn);
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) die(cat(a, " needs a value"));
      return argv[++i];
    };
    if (a == "--runs") o.runs = std::stoi(next());
    else if (a == "--baseline-runs") o.baselineRuns = std::stoi(next());
    else if (a == "--fs") o.fsType = next();
    else if (a == "--out") o.out = next();
    else if (a == "--guest") o.guest = next();
    else if (a == "--sizes") {
      o.sizes.clear();
      for (const auto& s : split(next(), ',')) {
        auto ps = parseSize(s);
        if (!ps.ok) die(ps.error);
        o.sizes.push_back(ps.bytes);
      }
    } else if (a == "--help" || a == "-h") {
      std::printf(
          "usage: vmckpt-bench [--sizes 1G,4G] [--runs 5] [--baseline-runs 3] [--fs btrfs|xfs] [--out FILE.json]\n"
          "Measures vmckpt snapshot pause / restore-to-running against QEMU stop+migrate-to-file on the same guest.\n"
          "Needs root (loop devices) and the test guest (make image).\n");
      return 0;
    } else {
      die(cat("unknown option ", a, " (see --help)"));
    }
  }
  if (auto why = test::LoopFs::unavailable(o.fsType)) die(cat("cannot make a ", o.fsType, " loop filesystem: ", *why));

  Json host;
  {
    struct utsname u{};
    ::uname(&u);
    host = {{"cores", std::thread::hardware_concurrency()}, {"kernel", u.release}, {"date", vmm::nowIso()},
            {"filesystem", o.fsType + " on a loop device (sparse file)"}};
    if (auto q = vmm::findQemu()) {
      if (auto v = runCommand({*q, "--version"}, Deadline::in(10s)))
        host["qemu"] = std::string(trim(v->out.substr(0, v->out.find('\n'))));
    }
  }
  Json results = {{"host", host}, {"runs", o.runs}, {"baseline_runs", o.baselineRuns}, {"sizes", Json::array()}};
  for (auto sz : o.sizes) results["sizes"].push_back(benchSize(o, sz));

  std::string json = results.dump(2) + "\n";
  if (!o.out.empty()) check(fs::writeFileAtomic(o.out, json, 0644), "write results");
  std::printf("%s", o.out.empty() ? json.c_str() : "");
  std::printf("\n| guest RAM (written) | vmckpt pause ms | vmckpt restore ms | QEMU save pause ms | QEMU restore ms | "
              "pause ratio | restore ratio | first snapshot pause ms | exclusive MiB per 64 MiB dirtied |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|\n");
  for (const auto& s : results["sizes"]) {
    double vp = s["vmckpt_snapshot"]["pause_ms"]["median"], vr = s["vmckpt_restore_ms"]["median"];
    double bp = s["qemu_migrate_to_file"]["pause_ms"].is_null() ? 0 : s["qemu_migrate_to_file"]["pause_ms"]["median"].get<double>();
    double br = s["qemu_migrate_to_file"]["restore_ms"].is_null() ? 0 : s["qemu_migrate_to_file"]["restore_ms"]["median"].get<double>();
    std::printf("| %llu MiB (%llu MiB) | %s | %s | %s | %s | %.0fx | %.0fx | %.0f | %s |\n",
                s["memory_mib"].get<unsigned long long>(), s["written_mib"].get<unsigned long long>(),
                fmtMs(s["vmckpt_snapshot"]["pause_ms"]).c_str(), fmtMs(s["vmckpt_restore_ms"]).c_str(),
                fmtMs(s["qemu_migrate_to_file"]["pause_ms"]).c_str(), fmtMs(s["qemu_migrate_to_file"]["restore_ms"]).c_str(),
                vp > 0 ? bp / vp : 0, vr > 0 ? br / vr : 0, s["first_snapshot"]["pause_ms"].get<double>(),
                fmtMs(s["vmckpt_snapshot"]["exclusive_mib_after_64mib_dirtied"]).c_str());
  }
  return 0;
}
