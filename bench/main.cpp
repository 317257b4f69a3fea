// vmckpt-bench: vmckpt's snapshot and restore against the methods a user would pick
// instead (QEMU stop+migrate-to-file, background-snapshot, snapshot-save), on the same
// guest, in one run; plus a scaling check at a large guest and the runtime cost of
// file-backed guest RAM. Writes STEM.json (all numbers and host facts), STEM.md (table
// and ratios) and STEM.png (plot). See bench/README.md.
#include <signal.h>
#include <sys/utsname.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <thread>

#include "bench/methods.hpp"
#include "bench/report.hpp"
#include "bench/runtime_cost.hpp"
#include "common/child_process.hpp"
#include "common/fs.hpp"
#include "common/log.hpp"
#include "loop_fs.hpp"
#include "vmm/qemu_process.hpp"
#include "vmm/vm_record.hpp"

using namespace vmckpt;
using namespace vmckpt::bench;
using namespace std::chrono_literals;

namespace {

const std::vector<std::string> kAllMethods = {"vmckpt-btrfs",         "vmckpt-reflink-xfs",       "vmckpt-copy",
                                              "qemu-migrate-to-file", "qemu-background-snapshot", "qemu-snapshot-save"};
// Methods run only when named (--methods, --live): not part of the default comparison.
const std::vector<std::string> kOptionalMethods = {"vmckpt-live"};

struct Options {
  std::vector<std::uint64_t> sizes = {1ull << 30, 2ull << 30, 4ull << 30};
  int runs = 5;
  std::vector<std::string> methods = kAllMethods;
  std::uint64_t scalingSize = 0;  // 0: no scaling check
  int scalingRuns = 3;
  bool runtime = true;
  RuntimeCostOptions rc;
  std::string outDir = "bench/results";
  std::string stem;  // default: date-time + stemSuffix
  std::string stemSuffix;
  bool plot = true;
  std::string guest = VMCKPT_TEST_GUEST_DIR;
  std::string reportFrom;  // --report: only rewrite .md/.png from this JSON
};

[[noreturn]] void usageError(const std::string& msg) {
  std::fprintf(stderr, "vmckpt-bench: %s (see --help)\n", msg.c_str());
  std::exit(2);
}

std::uint64_t sizeArg(const std::string& s) {
  auto ps = parseSize(s);
  if (!ps.ok) usageError(ps.error);
  return ps.bytes;
}

int intArg(const std::string& opt, const std::string& s, int min) {
  try {
    size_t used = 0;
    int v = std::stoi(s, &used);
    if (used == s.size() && v >= min) return v;
  } catch (const std::exception&) {
  }
  usageError(cat(opt, " wants a whole number >= ", min, ", not '", s, "'"));
}

const char* kHelp =
    "usage: vmckpt-bench [options]\n"
    "\n"
    "Measures vmckpt snapshot/restore against QEMU's own methods on the same guest, in\n"
    "one run: pause (QMP STOP to RESUME), snapshot total (until durable), restore to\n"
    "running, bytes written, disk cost of a snapshot after the guest dirtied 64 MiB. The\n"
    "guest's memory pattern is verified after every restore. Needs root (loop devices),\n"
    "the test guest (make image), gnuplot for the plot.\n"
    "\n"
    "  --sizes LIST          guest memory sizes (default 1G,2G,4G); half of each is written\n"
    "  --runs N              repetitions per method (default 5)\n"
    "  --methods LIST        subset of: vmckpt-btrfs, vmckpt-reflink-xfs, vmckpt-copy,\n"
    "                        qemu-migrate-to-file, qemu-background-snapshot,\n"
    "                        qemu-snapshot-save (default all of these), and\n"
    "                        vmckpt-live (snapshot --live of an anonymous-RAM guest)\n"
    "  --scaling SIZE        also one guest of SIZE (e.g. 16G), 1/8 of it written,\n"
    "                        vmckpt-btrfs and qemu-migrate-to-file only\n"
    "  --scaling-runs N      repetitions for the scaling check (default 3)\n"
    "  --no-runtime          skip the runtime-cost measurement\n"
    "  --runtime-memory SIZE guest for the runtime cost (default 2G)\n"
    "  --runtime-seconds N   length of one runtime measurement (default 30)\n"
    "  --runtime-runs N      measurements per RAM backing (default 3)\n"
    "  --runtime-only        only the runtime-cost measurement\n"
    "  --runtime-tuned       also measure file-backed RAM with host writeback tuned for\n"
    "                        guest RAM (changes vm.dirty_* sysctls for those runs and\n"
    "                        puts them back; see bench/RUNTIME_COST.md)\n"
    "  --out-dir DIR         where STEM.json/.md/.png go (default bench/results)\n"
    "  --stem NAME           file name stem (default: UTC date and time)\n"
    "  --no-plot             skip the PNG\n"
    "  --smoke               one 256 MiB guest, one run, every method, a 3 s runtime\n"
    "                        check on a 512 MiB guest (the test suite runs this)\n"
    "  --live                the fast path against snapshot --live: vmckpt-btrfs and\n"
    "                        vmckpt-live on one 1 GiB guest size (512 MiB written),\n"
    "                        5 runs each, no runtime cost, no plot; STEM defaults to\n"
    "                        the UTC date and time + \".live\" (sizes and runs can\n"
    "                        still be given after it)\n"
    "  --guest DIR           test guest kernel+initrd (default: the build's)\n"
    "  --report FILE.json    measure nothing: rewrite FILE.md and FILE.png from FILE.json\n"
    "\n"
    "Exit status: 0 when every method succeeded, 1 when any failed (results are still\n"
    "written, with the failure), 2 on bad usage.\n";

Options parse(int argc, char** argv) {
  Options o;
  bool runtimeOnly = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) usageError(cat(a, " needs a value"));
      return argv[++i];
    };
    if (a == "--runs") o.runs = intArg(a, next(), 1);
    else if (a == "--sizes") {
      o.sizes.clear();
      for (const auto& s : split(next(), ',')) o.sizes.push_back(sizeArg(s));
    } else if (a == "--methods") {
      o.methods.clear();
      for (const auto& m : split(next(), ',')) {
        if (std::find(kAllMethods.begin(), kAllMethods.end(), m) == kAllMethods.end() &&
            std::find(kOptionalMethods.begin(), kOptionalMethods.end(), m) == kOptionalMethods.end())
          usageError(cat("unknown method ", m));
        o.methods.push_back(m);
      }
    } else if (a == "--scaling") o.scalingSize = sizeArg(next());
    else if (a == "--scaling-runs") o.scalingRuns = intArg(a, next(), 1);
    else if (a == "--no-runtime") o.runtime = false;
    else if (a == "--runtime-memory") o.rc.memoryBytes = sizeArg(next());
    else if (a == "--runtime-seconds") o.rc.seconds = intArg(a, next(), 1);
    else if (a == "--runtime-runs") o.rc.runs = intArg(a, next(), 1);
    else if (a == "--runtime-only") runtimeOnly = true;
    else if (a == "--runtime-tuned") o.rc.tunedWriteback = true;
    else if (a == "--out-dir") o.outDir = next();
    else if (a == "--stem") o.stem = next();
    else if (a == "--no-plot") o.plot = false;
    else if (a == "--guest") o.guest = next();
    else if (a == "--report") o.reportFrom = next();
    else if (a == "--smoke") {
      o.sizes = {256ull << 20};
      o.runs = 1;
      o.scalingSize = 0;
      o.rc.memoryBytes = 512ull << 20;
      o.rc.seconds = 3;
      o.rc.runs = 1;
    } else if (a == "--live") {
      o.sizes = {1ull << 30};
      o.runs = 5;
      o.methods = {"vmckpt-btrfs", "vmckpt-live"};
      o.scalingSize = 0;
      o.runtime = false;
      o.plot = false;
      o.stemSuffix = ".live";
    } else if (a == "--help" || a == "-h") {
      std::fputs(kHelp, stdout);
      std::exit(0);
    } else {
      usageError(cat("unknown option ", a));
    }
  }
  if (runtimeOnly) {
    o.sizes.clear();
    o.scalingSize = 0;
    o.runtime = true;
  }
  o.rc.guestDir = o.guest;
  return o;
}

std::string firstLine(const std::string& s) { return std::string(trim(s.substr(0, s.find('\n')))); }

Json hostFacts(const Options& o) {
  struct utsname u{};
  ::uname(&u);
  Json h = {{"cores", std::thread::hardware_concurrency()}, {"kernel", u.release}, {"date", vmm::nowIso()}};
  if (auto cpu = fs::readFile("/proc/cpuinfo", 1 << 20)) {
    if (auto p = cpu->find("model name"); p != std::string::npos) {
      auto line = firstLine(cpu->substr(p));
      h["cpu"] = std::string(trim(line.substr(line.find(':') + 1)));
    }
  }
  if (auto mem = fs::readFile("/proc/meminfo", 1 << 20)) {
    if (auto p = mem->find("MemTotal:"); p != std::string::npos) {
      unsigned long long kib = std::stoull(mem->substr(p + 9));
      h["memory"] = formatSize(kib * 1024);
    }
  }
  if (auto q = vmm::findQemu()) {
    if (auto v = runCommand({*q, "--version"}, Deadline::in(10s))) h["qemu"] = firstLine(v->out);
  }
  std::string backing = "?";
  if (auto t = fs::filesystemType("/tmp")) backing = *t;
  h["filesystem"] = cat("loop devices (sparse image files on the host's ", backing,
                        " /tmp): Btrfs for vmckpt-btrfs and the QEMU methods, XFS (reflink) for vmckpt-reflink-xfs "
                        "and vmckpt-copy");
  h["guest"] = o.guest;
  if (auto l = fs::readFile("/proc/loadavg", 4096)) h["loadavg_at_start"] = std::string(trim(*l));
  return h;
}

bool wants(const Options& o, const std::string& m) {
  return std::find(o.methods.begin(), o.methods.end(), m) != o.methods.end();
}

Json runSize(const Options& o, std::uint64_t memBytes, std::uint64_t writtenMib, int runs,
             const std::vector<std::string>& methods) {
  SizeRun r{o.guest, memBytes, writtenMib, 64, runs};
  std::fprintf(stderr, "== %llu MiB guest, %llu MiB written, %d runs\n",
               static_cast<unsigned long long>(memBytes >> 20), static_cast<unsigned long long>(writtenMib), runs);
  auto in = [&](const std::string& m) { return std::find(methods.begin(), methods.end(), m) != methods.end(); };
  std::vector<VmckptStore> stores;
  if (in("vmckpt-btrfs")) stores.push_back(VmckptStore::btrfs);
  if (in("vmckpt-reflink-xfs")) stores.push_back(VmckptStore::reflinkXfs);
  if (in("vmckpt-copy")) stores.push_back(VmckptStore::copy);
  if (in("vmckpt-live")) stores.push_back(VmckptStore::btrfsLive);
  std::vector<QemuMethod> qemu;
  if (in("qemu-migrate-to-file")) qemu.push_back(QemuMethod::migrateToFile);
  if (in("qemu-background-snapshot")) qemu.push_back(QemuMethod::backgroundSnapshot);
  if (in("qemu-snapshot-save")) qemu.push_back(QemuMethod::snapshotSave);
  Json size = {{"memory_mib", memBytes >> 20}, {"written_mib", writtenMib}, {"dirty_mib", r.dirtyMib},
               {"methods", Json::array()}};
  for (auto& m : runVmckpt(r, stores)) size["methods"].push_back(m.toJson());
  for (auto& m : runQemuMethods(r, qemu)) size["methods"].push_back(m.toJson());
  return size;
}

bool allOk(const Json& size) {
  for (const auto& m : size["methods"])
    if (!m["ok"].get<bool>()) return false;
  return true;
}

// "2026-11-21T230453Z": the run's UTC start, without the colons (file names).
std::string defaultStem() {
  std::string t = vmm::nowIso();
  std::erase(t, ':');
  return t;
}

int rewriteReport(const std::string& json) {
  auto text = fs::readFile(json, 64 << 20);
  if (!text) {
    std::fprintf(stderr, "vmckpt-bench: error: %s\n", text.error().message().c_str());
    return 1;
  }
  std::string base = json.size() > 5 && json.ends_with(".json") ? json.substr(0, json.size() - 5) : json;
  try {
    Json res = Json::parse(*text);
    check(fs::writeFileAtomic(base + ".md", markdownReport(res), 0644), "write the table");
    plotPng(res, base + ".png");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vmckpt-bench: error: %s: %s\n", json.c_str(), e.what());
    return 1;
  }
  std::fprintf(stderr, "wrote %s.md and %s.png\n", base.c_str(), base.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  ::signal(SIGPIPE, SIG_IGN);
  installStopHandlers();
  log::setLevel(log::Level::warn);
  Options o = parse(argc, argv);
  if (!o.reportFrom.empty()) return rewriteReport(o.reportFrom);
  if (auto why = test::LoopFs::unavailable("btrfs")) {
    std::fprintf(stderr, "vmckpt-bench: error: cannot make a Btrfs loop filesystem: %s\n", why->c_str());
    return 1;
  }
  if (!fs::exists(o.guest + "/kernel") || !fs::exists(o.guest + "/initrd")) {
    std::fprintf(stderr, "vmckpt-bench: error: no test guest in %s (run make image)\n", o.guest.c_str());
    return 1;
  }
  if (o.stem.empty()) o.stem = defaultStem() + o.stemSuffix;
  if (auto s = fs::makeDirs(o.outDir, 0755); !s) {
    std::fprintf(stderr, "vmckpt-bench: error: %s\n", s.error().message().c_str());
    return 1;
  }
  const std::string base = o.outDir + "/" + o.stem;

  Json res = {{"host", hostFacts(o)},
              {"config", {{"runs", o.runs}, {"dirty_mib", 64}, {"written_fraction", 0.5}, {"methods", o.methods}}},
              {"sizes", Json::array()}};
  bool ok = true;
  for (auto sz : o.sizes) {
    if (stopSignal()) break;
    res["sizes"].push_back(runSize(o, sz, (sz >> 20) / 2, o.runs, o.methods));
    ok = ok && allOk(res["sizes"].back());
  }
  if (o.scalingSize && !stopSignal()) {
    std::vector<std::string> ms;
    for (const auto& m : {"vmckpt-btrfs", "qemu-migrate-to-file"})
      if (wants(o, m)) ms.push_back(m);
    res["scaling"] = runSize(o, o.scalingSize, (o.scalingSize >> 20) / 8, o.scalingRuns, ms);
    ok = ok && allOk(res["scaling"]);
  }
  if (o.runtime && !stopSignal()) {
    try {
      res["runtime_cost"] = measureRuntimeCost(o.rc);
      res["runtime_cost"]["ok"] = true;
    } catch (const BenchError& e) {
      std::fprintf(stderr, "   runtime cost FAILED: %s\n", e.what());
      res["runtime_cost"] = {{"ok", false}, {"error", e.what()}};
      ok = false;
    }
  }
  if (int sig = stopSignal()) {
    // Guests stopped and loop devices detached by now (destructors); a partial run is no result.
    std::fprintf(stderr, "vmckpt-bench: stopped by SIG%s; guests stopped, loop devices detached, no results written\n",
                 sigabbrev_np(sig));
    return 128 + sig;
  }
  // The effective accelerator, from the first method that booted a guest.
  for (const auto& s : res["sizes"])
    for (const auto& m : s["methods"])
      if (m["extra"].contains("accel") && !res["host"].contains("accel")) res["host"]["accel"] = m["extra"]["accel"];

  for (const auto& s : res["sizes"]) {
    Json r = ratiosAt(s);
    if (!res.contains("ratios")) res["ratios"] = Json::array();
    res["ratios"].push_back({{"memory_mib", s["memory_mib"]}, {"pause", r["pause"]}, {"restore", r["restore"]}});
  }
  if (auto l = fs::readFile("/proc/loadavg", 4096)) res["host"]["loadavg_at_end"] = std::string(trim(*l));
  std::string md = markdownReport(res);
  auto wrote = fs::writeFileAtomic(base + ".json", res.dump(2) + "\n", 0644);
  if (wrote) wrote = fs::writeFileAtomic(base + ".md", md, 0644);
  if (!wrote) {
    std::fprintf(stderr, "vmckpt-bench: error: %s\n", wrote.error().message().c_str());
    return 1;
  }
  if (o.plot && !res["sizes"].empty()) {
    try {
      plotPng(res, base + ".png");
    } catch (const BenchError& e) {
      std::fprintf(stderr, "vmckpt-bench: plot failed: %s\n", e.what());
      ok = false;
    }
  }
  std::fputs(md.c_str(), stdout);
  std::fprintf(stderr, "results: %s.json, %s.md%s\n", base.c_str(), base.c_str(),
               o.plot && !res["sizes"].empty() ? cat(", ", base, ".png").c_str() : "");
  if (!ok) std::fprintf(stderr, "vmckpt-bench: some methods FAILED (see the results)\n");
  return ok ? 0 : 1;
}
