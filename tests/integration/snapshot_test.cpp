// Snapshot and restore with real QEMU (TCG) on the three store modes: Btrfs and XFS
// on loop devices made by the test, and a plain directory (copy mode). The guest runs
// vmckpt-memtest: a known pattern over most of its RAM, a counter, and console commands
// (dirty N MiB, verify).
#include <dirent.h>
#include <signal.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <functional>
#include <sstream>
#include <thread>

#include "common/child_process.hpp"
#include "common/fs.hpp"
#include "common/scope_exit.hpp"
#include "common/strings.hpp"
#include "common/temp_dir.hpp"
#include "common/unique_fd.hpp"
#include "harness.hpp"
#include "loop_fs.hpp"

using namespace std::chrono_literals;
using namespace vmckpt;
using vmckpt::test::CliRun;
using vmckpt::test::expectOneLineError;
using vmckpt::test::Json;
using vmckpt::test::kMemtestArgs;
using vmckpt::test::LoopFs;

namespace {

constexpr std::uint64_t kMiB = 1ull << 20;
// The console after the last "[vmckpt: restored from snapshot ...]" line (or all of it).
std::string sinceLastRestore(const std::string& log) {
  auto pos = log.rfind("[vmckpt: restored from snapshot");
  return pos == std::string::npos ? log : log.substr(pos);
}

int firstCounter(const std::string& text) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line))
    if (startsWith(line, "counter ")) return std::atoi(line.c_str() + 8);
  return 0;
}

int countOf(const std::string& text, const std::string& needle) {
  int n = 0;
  for (size_t pos = text.find(needle); pos != std::string::npos; pos = text.find(needle, pos + 1)) ++n;
  return n;
}

std::vector<std::string> listDir(const std::string& dir) {
  std::vector<std::string> names;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d))
      if (std::string(e->d_name) != "." && std::string(e->d_name) != "..") names.push_back(e->d_name);
    ::closedir(d);
  }
  return names;
}

}  // namespace

class SnapshotTest : public vmckpt::test::VmckptTest {
 protected:
  // Puts the store on `store`: "btrfs" or "xfs" (a loop filesystem of `size`), or "copy"
  // (the plain temporary directory).
  void useStore(const std::string& store, std::uint64_t size = 6ull << 30) {
    if (store == "copy") return;
    if (auto why = LoopFs::unavailable(store)) GTEST_SKIP() << store << " loop filesystem unavailable: " << *why;
    auto lfs = LoopFs::create(store, size);
    ASSERT_TRUE(lfs) << lfs.error().message();
    loop_ = std::move(*lfs);
    useHome(loop_->mountPoint() + "/vmckpt");
  }

  // Boots a memtest guest and waits until its pattern is written and it counts.
  void bootMemtest(const std::string& name, const std::string& memory = "512M") {
    createGuest(name, "memtest", {}, memory, kMemtestArgs);
    CliRun r = vmckpt({"start", name});
    ASSERT_EQ(r.code, 0) << r.err;
    ASSERT_TRUE(waitForConsole(name, "memtest: filled", 180s)) << console(name);
    ASSERT_TRUE(waitForConsole(name, "counter 2", 60s)) << console(name);
  }

  // Asks the guest to check its whole pattern after the last restore; true when it says ok.
  bool guestVerifies(const std::string& name) {
    int before = countOf(sinceLastRestore(console(name)), "memtest: verify");
    sendConsole(name, "verify");
    auto deadline = std::chrono::steady_clock::now() + 120s;
    while (std::chrono::steady_clock::now() < deadline) {
      std::string tail = sinceLastRestore(console(name));
      if (countOf(tail, "memtest: verify") > before) return tail.find("memtest: verify ok") != std::string::npos;
      std::this_thread::sleep_for(200ms);
    }
    ADD_FAILURE() << "no verify answer from the guest: " << console(name).substr(0, 4000);
    return false;
  }

  // Has the guest rewrite its first `mib` MiB (the next generation of its pattern).
  void dirty(const std::string& name, int mib) {
    int before = countOf(console(name), "memtest: dirtied");
    sendConsole(name, cat("dirty ", mib));
    auto deadline = std::chrono::steady_clock::now() + 60s;
    while (countOf(console(name), "memtest: dirtied") == before && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(100ms);
    ASSERT_GT(countOf(console(name), "memtest: dirtied"), before) << console(name);
  }

  Json snapshot(const std::string& name, const std::vector<std::string>& extra = {}) {
    std::vector<std::string> args = {"snapshot", name, "--json"};
    args.insert(args.end(), extra.begin(), extra.end());
    CliRun r = vmckpt(args);
    EXPECT_EQ(r.code, 0) << r.err;
    return r.json();
  }

  // Kills the VM, restores `snap` in place, and checks the guest continues from there.
  // The guest runs on while `snapshot` finishes (the seal's fsync comes after the resume),
  // so the counter in the snapshot lies between the ones read before and after it.
  void killRestoreAndCheck(const std::string& name, const std::string& snap, int counterBefore, int counterAfter) {
    ASSERT_EQ(vmckpt({"stop", name, "--force"}).code, 0);
    CliRun r = vmckpt({"restore", name, snap, "--json"});
    ASSERT_EQ(r.code, 0) << r.err;
    Json j = r.json();
    EXPECT_EQ(j["state"], "running");
    EXPECT_EQ(j["snapshot"], snap);
    ASSERT_TRUE(waitForConsole(name, "[vmckpt: restored from snapshot " + snap)) << console(name);
    auto deadline = std::chrono::steady_clock::now() + 60s;
    int first = 0;
    while (std::chrono::steady_clock::now() < deadline && (first = firstCounter(sinceLastRestore(console(name)))) == 0)
      std::this_thread::sleep_for(100ms);
    // The snapshot fell between two ticks: the next tick is the one after it.
    EXPECT_GE(first, counterBefore) << "counter went back before the snapshot";
    EXPECT_LE(first, counterAfter + 2) << "counter did not continue from the snapshot";
    EXPECT_TRUE(guestVerifies(name)) << "memory pattern damaged after restore";
  }

  std::unique_ptr<LoopFs> loop_;
};

class SnapshotRoundTrip : public SnapshotTest, public ::testing::WithParamInterface<std::string> {};

TEST_P(SnapshotRoundTrip, KilledGuestComesBackExactlyWhereItWas) {
  const std::string store = GetParam();
  useStore(store);
  if (IsSkipped()) return;
  bootMemtest("v1");
  int beforeSnapshot = lastCounter("v1");
  Json s = snapshot("v1");
  int atSnapshot = lastCounter("v1");
  EXPECT_EQ(s["store_mode"], store == "xfs" ? "reflink" : store);
  EXPECT_GT(s["pause_ms"].get<double>(), 0.0);
  EXPECT_GT(s["devstate_bytes"].get<std::uint64_t>(), 0u);
  EXPECT_TRUE(s["parent"].is_null());
  std::string id = s["id"];
  // Let the guest move on, so that a restore that did nothing would show.
  ASSERT_TRUE(waitForConsole("v1", cat("counter ", atSnapshot + 4), 60s));
  killRestoreAndCheck("v1", id, beforeSnapshot, atSnapshot);

  // The catalog: listed, inspectable, verifiable.
  CliRun list = vmckpt({"snapshots", "v1", "--json"});
  ASSERT_EQ(list.code, 0) << list.err;
  ASSERT_EQ(list.json()["snapshots"].size(), 1u);
  CliRun insp = vmckpt({"inspect", "v1", id});
  ASSERT_EQ(insp.code, 0);
  EXPECT_EQ(insp.json()["qemu"]["machine"].get<std::string>().substr(0, 6), "pc-q35");
  EXPECT_EQ(vmckpt({"verify", "v1", id}).code, 0);
  // Nothing half-written is lying around.
  for (const auto& n : listDir(home_ + "/vms/v1/snapshots")) EXPECT_NE(n[0], '.') << n;
  EXPECT_FALSE(fs::exists(home_ + "/vms/v1/live/devstate"));

  if (store == "copy") {
    // Ctrl-C in the middle of a slow (copy-mode) snapshot never leaves the guest paused.
    for (int delayMs : {150, 400, 800}) {
      auto child = ChildProcess::spawn({.argv = {VMCKPT_BIN, "snapshot", "v1"},
                                        .env = environment(),
                                        .stdoutTo = Redirect::null(),
                                        .stderrTo = Redirect::null()});
      ASSERT_TRUE(child);
      std::this_thread::sleep_for(std::chrono::milliseconds(delayMs));
      child->signal(SIGINT);
      ASSERT_TRUE(child->wait(Deadline::in(60s)));
      EXPECT_EQ(vmckpt({"status", "v1", "--json"}).json()["state"], "running") << "after SIGINT at " << delayMs << " ms";
      int now = lastCounter("v1");
      EXPECT_TRUE(waitForConsole("v1", cat("counter ", now + 1), 10s)) << "guest not running after SIGINT";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Stores, SnapshotRoundTrip, ::testing::Values("btrfs", "xfs", "copy"),
                         [](const auto& p) { return p.param; });

// Two VMs of one job (snapshot --group): a failure anywhere leaves both running and no
// snapshot of either; a group snapshot stops both for one overlapping window, and each
// comes back from its member snapshot with its memory.
TEST_F(SnapshotTest, GroupSnapshotStopsTheJobTogetherAndAFailureLeavesNothing) {
  useStore("btrfs");
  if (IsSkipped()) return;
  bootMemtest("g1", "256M");
  bootMemtest("g2", "256M");
  const std::vector<std::string> vms = {"g1", "g2"};

  expectOneLineError(vmckpt({"snapshot", "g1", "g2"}), "add --group JOB");
  expectOneLineError(vmckpt({"snapshot", "g1", "nosuch", "--group", "job1"}), "nosuch");
  expectOneLineError(vmckpt({"snapshot", "g1", "g2", "--group", "job1"}, {{"VMCKPT_FAULT", "after-capture:error"}}),
                     "injected fault at after-capture");
  for (const auto& vm : vms) {
    EXPECT_EQ(vmckpt({"status", vm, "--json"}).json()["state"], "running") << vm;
    EXPECT_EQ(vmckpt({"snapshots", vm, "--json"}).json()["snapshots"].size(), 0u) << vm;
    EXPECT_EQ(listDir(cat(home_, "/vms/", vm, "/snapshots")).size(), 0u) << vm << ": a half-built snapshot is left";
    int now = lastCounter(vm);
    EXPECT_TRUE(waitForConsole(vm, cat("counter ", now + 2), 30s)) << vm << " was left stopped";
  }

  int before[2] = {lastCounter("g1"), lastCounter("g2")};
  CliRun r = vmckpt({"snapshot", "g1", "g2", "--group", "job1", "--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  int after[2] = {lastCounter("g1"), lastCounter("g2")};
  Json g = r.json();
  EXPECT_EQ(g["group"], "job1");
  ASSERT_EQ(g["snapshots"].size(), 2u);
  std::string ids[2];
  double pauses[2];
  for (int i = 0; i < 2; ++i) {
    const Json& s = g["snapshots"][i];
    EXPECT_EQ(s["vm"], vms[i]);
    EXPECT_EQ(s["group"]["id"], g["id"]);
    EXPECT_EQ(s["group"]["vms"], Json(vms));
    EXPECT_TRUE(s["agent"]["quiesced"].get<bool>()) << s.dump();
    ids[i] = s["id"];
    pauses[i] = s["pause_ms"].get<double>();
    EXPECT_GT(pauses[i], 0.0);
  }
  // One window: g1 stops first and resumes only after g2 is captured, so the group's
  // first-stop-to-last-resume is shorter than the two pauses added (taken one after the
  // other, it would be longer).
  EXPECT_LT(g["pause_ms"].get<double>(), pauses[0] + pauses[1]) << g.dump();
  EXPECT_GE(g["pause_ms"].get<double>() + 0.01, std::max(pauses[0], pauses[1]));
  CliRun insp = vmckpt({"inspect", "g2", ids[1]});
  ASSERT_EQ(insp.code, 0) << insp.err;
  EXPECT_EQ(insp.json()["group"]["name"], "job1");

  for (int i = 0; i < 2; ++i) ASSERT_TRUE(waitForConsole(vms[i], cat("counter ", after[i] + 3), 60s));
  for (int i = 0; i < 2; ++i) killRestoreAndCheck(vms[i], ids[i], before[i], after[i]);
}

TEST_F(SnapshotTest, ChainOfThreeRestoresInAnyOrderAndCostsOnlyWhatChanged) {
  useStore("btrfs");
  if (IsSkipped()) return;
  bootMemtest("c1");
  std::vector<std::string> ids;
  std::vector<int> counters, countersBefore;
  std::vector<Json> snaps;
  for (int i = 0; i < 3; ++i) {
    if (i > 0) {
      ASSERT_NO_FATAL_FAILURE(dirty("c1", 64));
    }
    countersBefore.push_back(lastCounter("c1"));
    snaps.push_back(snapshot("c1", {"--tag", cat("s", i + 1)}));
    ids.push_back(snaps.back()["id"]);
    counters.push_back(lastCounter("c1"));
  }
  EXPECT_EQ(snaps[1]["parent"], ids[0]);
  EXPECT_EQ(snaps[2]["parent"], ids[1]);
  // Incremental: 64 MiB dirtied -> under 1.25 x 64 MiB (plus device state) of new data.
  for (int i = 1; i < 3; ++i) {
    std::uint64_t excl = snaps[i]["exclusive_bytes"], dev = snaps[i]["devstate_bytes"];
    EXPECT_LT(excl, 80 * kMiB + dev) << "snapshot " << i + 1 << " cost more than what the guest changed";
    EXPECT_GE(excl, 60 * kMiB) << "snapshot " << i + 1 << " did not capture the 64 MiB the guest wrote";
  }
  // Any order, by tag and by id.
  killRestoreAndCheck("c1", ids[1], countersBefore[1], counters[1]);
  killRestoreAndCheck("c1", ids[2], countersBefore[2], counters[2]);
  killRestoreAndCheck("c1", ids[0], countersBefore[0], counters[0]);
  // A snapshot after restoring s1 descends from s1: the tree forks.
  Json fork = snapshot("c1");
  EXPECT_EQ(fork["parent"], ids[0]);
  CliRun tree = vmckpt({"snapshots", "c1"});
  EXPECT_EQ(tree.code, 0);
  EXPECT_NE(tree.out.find("s3"), std::string::npos) << tree.out;

  // Side by side: a restore --as another name leaves the original running.
  CliRun as = vmckpt({"restore", "c1", "s2", "--as", "c2", "--paused", "--json"});
  ASSERT_EQ(as.code, 0) << as.err;
  EXPECT_EQ(as.json()["state"], "paused");
  EXPECT_EQ(vmckpt({"status", "c1", "--json"}).json()["state"], "running");
  // A paused guest can be snapshotted and stays paused.
  Json ofPaused = snapshot("c2");
  EXPECT_EQ(ofPaused["pause_ms"], 0.0);
  EXPECT_EQ(vmckpt({"status", "c2", "--json"}).json()["state"], "paused");
  ASSERT_EQ(vmckpt({"resume", "c2"}).code, 0);
  EXPECT_EQ(vmckpt({"status", "c2", "--json"}).json()["state"], "running");
  EXPECT_EQ(qemuPids().size(), 2u);
  ASSERT_EQ(vmckpt({"stop", "c2", "--force"}).code, 0);

  // Deleting the middle snapshot keeps the others restorable.
  ASSERT_EQ(vmckpt({"delete-snapshot", "c1", "s2"}).code, 0);
  Json after = vmckpt({"snapshots", "c1", "--json"}).json();
  EXPECT_EQ(after["snapshots"].size(), 3u);
  for (const auto& s : after["snapshots"])
    if (s["id"] == ids[2]) {
      EXPECT_EQ(s["parent"], ids[0]);
    }
  killRestoreAndCheck("c1", ids[2], countersBefore[2], counters[2]);
}

TEST_F(SnapshotTest, RawAndQcow2DisksAreCapturedWithMemory) {
  useStore("btrfs");
  if (IsSkipped()) return;
  std::string raw = loop_->mountPoint() + "/raw.img", qcow = loop_->mountPoint() + "/disk.qcow2";
  {
    std::ofstream f(raw);
    f.seekp((8 << 20) - 1);
    f.put('\0');
  }
  auto q = runCommand({"qemu-img", "create", "-q", "-f", "qcow2", qcow, "16M"}, Deadline::in(30s));
  ASSERT_TRUE(q && q->status.success());
  createGuest("d1", "diskcounter", {"--disk", raw, "--disk", qcow});
  ASSERT_EQ(vmckpt({"start", "d1"}).code, 0);
  ASSERT_TRUE(waitForConsole("d1", "diskcounter: ok 3 vdb")) << console("d1");
  Json s = snapshot("d1");
  std::string id = s["id"];
  Json insp = vmckpt({"inspect", "d1", id}).json();
  std::vector<std::string> names;
  for (const auto& f : insp["files"]) names.push_back(f["name"]);
  EXPECT_NE(std::find(names.begin(), names.end(), "disk0.raw"), names.end());
  EXPECT_NE(std::find(names.begin(), names.end(), "disk1.qcow2"), names.end());
  ASSERT_TRUE(waitForConsole("d1", "diskcounter: ok 7 vdb")) << console("d1");
  ASSERT_EQ(vmckpt({"stop", "d1", "--force"}).code, 0);
  ASSERT_EQ(vmckpt({"restore", "d1", id}).code, 0);
  // Two rounds after the restore: each disk must hold what memory last wrote to it.
  auto deadline = std::chrono::steady_clock::now() + 60s;
  while (countOf(sinceLastRestore(console("d1")), "diskcounter:") < 4 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(100ms);
  std::string after = sinceLastRestore(console("d1"));
  EXPECT_GE(countOf(after, "diskcounter: ok"), 4) << after;
  EXPECT_EQ(countOf(after, "MISMATCH"), 0) << after;
  EXPECT_NE(after.find(" vda"), std::string::npos);
  EXPECT_NE(after.find(" vdb"), std::string::npos);
}

TEST_F(SnapshotTest, FullDiskDuringCaptureResumesTheGuestAndLeavesNoSnapshot) {
  // A small XFS whose free space a ballast file cuts to half of what the RAM file
  // occupies: copy mode, which copies RAM while the guest is paused, runs out of space.
  useStore("xfs", 1ull << 30);
  if (IsSkipped()) return;
  bootMemtest("f1", "448M");
  struct stat mem{};
  ASSERT_EQ(::stat((home_ + "/vms/f1/live/mem").c_str(), &mem), 0);
  struct statvfs sv{};
  ASSERT_EQ(::statvfs(home_.c_str(), &sv), 0);
  const long long used = static_cast<long long>(mem.st_blocks) * 512;
  const long long avail = static_cast<long long>(sv.f_bavail) * static_cast<long long>(sv.f_frsize);
  ASSERT_GT(used, 100ll << 20) << "the guest's pattern is not in the RAM file";
  if (avail > used / 2) {
    UniqueFd ballast(::open((loop_->mountPoint() + "/ballast").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
    ASSERT_TRUE(ballast);
    ASSERT_EQ(::posix_fallocate(ballast.get(), 0, avail - used / 2), 0);
  }
  int before = lastCounter("f1");
  CliRun r = vmckpt({"snapshot", "f1", "--store-mode", "copy"});
  EXPECT_NE(r.code, 0);
  expectOneLineError(r, "No space left on device");
  EXPECT_EQ(vmckpt({"status", "f1", "--json"}).json()["state"], "running");
  ASSERT_TRUE(waitForConsole("f1", cat("counter ", before + 2), 30s)) << "guest not running after the failure";
  EXPECT_EQ(vmckpt({"snapshots", "f1", "--json"}).json()["snapshots"].size(), 0u);
  EXPECT_TRUE(listDir(home_ + "/vms/f1/snapshots").empty());
  EXPECT_FALSE(fs::exists(home_ + "/vms/f1/live/devstate"));
  EXPECT_TRUE(guestVerifies("f1"));
}

// The disk fills while QEMU writes the device state (reflink store: the capture itself
// needs no data blocks, the ~330 KiB device state does): the snapshot fails with ENOSPC
// in one line, the guest runs on, and no snapshot or temporary directory is left.
TEST_F(SnapshotTest, FullDiskDuringDeviceStateWriteResumesTheGuestAndLeavesNoSnapshot) {
  useStore("xfs", 1ull << 30);
  if (IsSkipped()) return;
  createGuest("f2", "counter");
  ASSERT_EQ(vmckpt({"start", "f2"}).code, 0);
  ASSERT_TRUE(waitForConsole("f2", "counter 1")) << console("f2");
  // The RAM file is sparse: on a full filesystem the guest's next write to a page never
  // touched would get SIGBUS and end QEMU (see the README). Allocated first, the guest
  // runs on and what fills up is the snapshot's own writing.
  {
    UniqueFd mem(::open((home_ + "/vms/f2/live/mem").c_str(), O_RDWR | O_CLOEXEC));
    ASSERT_TRUE(mem);
    struct stat st{};
    ASSERT_EQ(::fstat(mem.get(), &st), 0);
    ASSERT_EQ(::fallocate(mem.get(), 0, 0, st.st_size), 0);
    ASSERT_EQ(::fsync(mem.get()), 0);
  }
  struct statvfs sv{};
  ASSERT_EQ(::statvfs(home_.c_str(), &sv), 0);
  const long long avail = static_cast<long long>(sv.f_bavail) * static_cast<long long>(sv.f_frsize);
  // Room for the journal, the directories and the start of the ~330 KiB device state
  // (found by trying on XFS: 192 KiB fails at creating the file, 256 KiB mid-write).
  const long long leave = 288 << 10;
  ASSERT_GT(avail, leave);
  UniqueFd ballast(::open((loop_->mountPoint() + "/ballast").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
  ASSERT_TRUE(ballast);
  ASSERT_EQ(::posix_fallocate(ballast.get(), 0, avail - leave), 0);
  ASSERT_EQ(::fsync(ballast.get()), 0);

  int before = lastCounter("f2");
  CliRun r = vmckpt({"snapshot", "f2"});
  EXPECT_NE(r.code, 0);
  expectOneLineError(r, "No space left on device");
  EXPECT_NE(r.err.find("device state"), std::string::npos) << r.err;
  EXPECT_EQ(vmckpt({"status", "f2", "--json"}).json()["state"], "running");
  ASSERT_TRUE(waitForConsole("f2", cat("counter ", before + 2), 30s)) << "guest not running after the failure";
  EXPECT_EQ(vmckpt({"snapshots", "f2", "--json"}).json()["snapshots"].size(), 0u);
  EXPECT_TRUE(listDir(home_ + "/vms/f2/snapshots").empty());

  // With the space back, the next snapshot works.
  ballast.reset();
  ASSERT_EQ(::unlink((loop_->mountPoint() + "/ballast").c_str()), 0);
  CliRun ok = vmckpt({"snapshot", "f2"});
  EXPECT_EQ(ok.code, 0) << ok.err;
}

TEST_F(SnapshotTest, TamperedOrNewerSnapshotsAreRefused) {
  createGuest("t1", "counter");
  ASSERT_EQ(vmckpt({"start", "t1"}).code, 0);
  ASSERT_TRUE(waitForConsole("t1", "counter 1")) << console("t1");
  Json s = snapshot("t1");
  std::string id = s["id"], dir = home_ + "/vms/t1/snapshots/" + id;
  EXPECT_EQ(s["store_mode"], "copy");

  CliRun running = vmckpt({"restore", "t1", id});
  EXPECT_EQ(running.code, 5);
  expectOneLineError(running, "is running");
  CliRun taken = vmckpt({"restore", "t1", id, "--as", "t1"});
  EXPECT_EQ(taken.code, 5);
  CliRun unknown = vmckpt({"restore", "t1", "nosuchsnap"});
  EXPECT_EQ(unknown.code, 3);
  expectOneLineError(unknown, "no snapshot nosuchsnap");
  ASSERT_EQ(vmckpt({"stop", "t1", "--force"}).code, 0);
  CliRun stopped = vmckpt({"snapshot", "t1"});
  EXPECT_EQ(stopped.code, 5);
  expectOneLineError(stopped, "not running");

  // Flip one byte of the device state.
  auto flipByte = [&] {
    std::fstream f(dir + "/data/devstate", std::ios::in | std::ios::out | std::ios::binary);
    ASSERT_TRUE(f);
    f.seekg(1000);
    char c = 0;
    f.read(&c, 1);
    c ^= 0x40;
    f.seekp(1000);
    f.write(&c, 1);
  };
  flipByte();
  CliRun bad = vmckpt({"restore", "t1", id});
  EXPECT_EQ(bad.code, 1);
  expectOneLineError(bad, "sha256");
  EXPECT_TRUE(qemuPids().empty());
  EXPECT_EQ(vmckpt({"status", "t1", "--json"}).json()["state"], "stopped");
  CliRun ver = vmckpt({"verify", "t1", id, "--json"});
  EXPECT_EQ(ver.code, 1);
  EXPECT_FALSE(ver.json()["ok"].get<bool>());
  flipByte();  // repaired
  EXPECT_EQ(vmckpt({"verify", "t1", id}).code, 0);
  EXPECT_EQ(vmckpt({"verify", id}).code, 0);  // the VM name may be left out
  CliRun none = vmckpt({"inspect", "nosuch"});
  EXPECT_EQ(none.code, 3);
  expectOneLineError(none, "no snapshot nosuch in any VM");

  // A machine type this QEMU does not have.
  Json j = Json::parse(*fs::readFile(dir + "/manifest.json"));
  Json original = j;
  j["qemu"]["machine"] = "pc-q35-99.0";
  std::ofstream(dir + "/manifest.json") << j.dump();
  CliRun machine = vmckpt({"restore", "t1", id, "--as", "t1b"});
  EXPECT_EQ(machine.code, 1);
  expectOneLineError(machine, "lacks machine type pc-q35-99.0");
  EXPECT_EQ(vmckpt({"status", "t1b"}).code, 3);  // nothing left behind

  // A manifest from a newer vmckpt is not guessed at.
  j = original;
  j["format"]["major"] = 99;
  std::ofstream(dir + "/manifest.json") << j.dump();
  CliRun newer = vmckpt({"restore", "t1", id});
  EXPECT_EQ(newer.code, 1);
  expectOneLineError(newer, "newer than this vmckpt understands");
  EXPECT_NE(vmckpt({"inspect", "t1", id}).code, 0);
}

// Each kind of damage a snapshot can suffer on disk is refused by `verify` and `restore`
// with the reason, leaves nothing running, and once undone the snapshot restores again.
TEST_F(SnapshotTest, DamagedSnapshotsAreRefusedWithAPreciseReason) {
  createGuest("d1", "counter");
  ASSERT_EQ(vmckpt({"start", "d1"}).code, 0);
  ASSERT_TRUE(waitForConsole("d1", "counter 1")) << console("d1");
  const int atSnapshot = lastCounter("d1");
  Json s = snapshot("d1");
  const std::string id = s["id"], dir = home_ + "/vms/d1/snapshots/" + id, data = dir + "/data";
  ASSERT_EQ(vmckpt({"stop", "d1", "--force"}).code, 0);
  const std::string manifest = *fs::readFile(dir + "/manifest.json");
  const std::string devstate = *fs::readFile(data + "/devstate", 64 << 20);
  ASSERT_GT(devstate.size(), 4096u);

  struct Case {
    std::string what;
    std::function<void()> damage, repair;
    std::string verifySays, restoreSays;  // verify's reason ("" when verify fails like restore)
  };
  auto writeRaw = [](const std::string& path, const std::string& bytes) {
    ::chmod(path.c_str(), 0600);
    std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
  };
  const std::string outside = home_ + "/planted";
  std::vector<Case> cases = {
      {"truncated device state", [&] { ASSERT_EQ(::truncate((data + "/devstate").c_str(), 2048), 0); },
       [&] { writeRaw(data + "/devstate", devstate); }, "devstate: size 2048", "devstate has size 2048"},
      {"missing RAM file", [&] { ASSERT_EQ(::rename((data + "/mem").c_str(), (outside + "-mem").c_str()), 0); },
       [&] { ASSERT_EQ(::rename((outside + "-mem").c_str(), (data + "/mem").c_str()), 0); }, "mem: missing",
       "mem is missing"},
      {"RAM file replaced by a symlink to a file of the same size",
       [&] {
         ASSERT_EQ(::rename((data + "/mem").c_str(), (outside + "-mem").c_str()), 0);
         ASSERT_EQ(::symlink((outside + "-mem").c_str(), (data + "/mem").c_str()), 0);
       },
       [&] {
         ASSERT_EQ(::unlink((data + "/mem").c_str()), 0);
         ASSERT_EQ(::rename((outside + "-mem").c_str(), (data + "/mem").c_str()), 0);
       },
       "mem: is a symbolic link", "mem is a symbolic link"},
      {"device state replaced by a symlink to an identical copy",
       [&] {
         writeRaw(outside + "-devstate", devstate);
         ASSERT_EQ(::unlink((data + "/devstate").c_str()), 0);
         ASSERT_EQ(::symlink((outside + "-devstate").c_str(), (data + "/devstate").c_str()), 0);
       },
       [&] {
         ASSERT_EQ(::unlink((data + "/devstate").c_str()), 0);
         writeRaw(data + "/devstate", devstate);
       },
       "devstate: is a symbolic link", "devstate is a symbolic link"},
      {"manifest with an unknown key",
       [&] {
         Json j = Json::parse(manifest);
         j["post_restore_hook"] = "/bin/sh -c evil";
         writeRaw(dir + "/manifest.json", j.dump());
       },
       [&] { writeRaw(dir + "/manifest.json", manifest); }, "", "unknown key 'post_restore_hook'"},
      {"manifest replaced by a symlink",
       [&] {
         writeRaw(outside + "-manifest", manifest);
         ASSERT_EQ(::unlink((dir + "/manifest.json").c_str()), 0);
         ASSERT_EQ(::symlink((outside + "-manifest").c_str(), (dir + "/manifest.json").c_str()), 0);
       },
       [&] {
         ASSERT_EQ(::unlink((dir + "/manifest.json").c_str()), 0);
         writeRaw(dir + "/manifest.json", manifest);
       },
       "", "manifest.json: a symbolic link"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    c.damage();
    CliRun ver = vmckpt({"verify", "d1", id, "--json"});
    EXPECT_EQ(ver.code, 1) << ver.out;
    if (!c.verifySays.empty()) {
      Json v = ver.json();
      EXPECT_FALSE(v["ok"].get<bool>());
      ASSERT_FALSE(v["problems"].empty());
      EXPECT_NE(v["problems"][0].get<std::string>().find(c.verifySays), std::string::npos) << v.dump();
    } else {
      expectOneLineError(ver, c.restoreSays);
    }
    CliRun res = vmckpt({"restore", "d1", id});
    EXPECT_EQ(res.code, 1);
    expectOneLineError(res, c.restoreSays);
    EXPECT_TRUE(qemuPids().empty()) << "a refused restore started QEMU";
    EXPECT_EQ(vmckpt({"status", "d1", "--json"}).json()["state"], "stopped");
    c.repair();
    ASSERT_EQ(vmckpt({"verify", "d1", id}).code, 0) << "repair of '" << c.what << "' did not restore the snapshot";
  }
  // Undamaged again: it restores and the guest continues from the snapshot.
  ASSERT_EQ(vmckpt({"restore", "d1", id}).code, 0);
  auto deadline = std::chrono::steady_clock::now() + 60s;
  int first = 0;
  while (std::chrono::steady_clock::now() < deadline && (first = firstCounter(sinceLastRestore(console("d1")))) == 0)
    std::this_thread::sleep_for(100ms);
  EXPECT_GE(first, atSnapshot) << console("d1");
  EXPECT_LE(first, atSnapshot + 2) << console("d1");
}

// Issue 8: a chain of three snapshots exported from a Btrfs store and imported into a
// second store on a plain directory (another store mode, standing for another host):
// the increments are a small fraction of the base, the imported snapshots verify and
// restore, and a damaged or truncated stream is refused and leaves nothing behind.
TEST_F(SnapshotTest, ExportImportChainOnlyChangesTravelAndDamageIsRefused) {
  useStore("btrfs");
  if (IsSkipped()) return;
  bootMemtest("e1", "256M");
  std::vector<std::string> ids;
  std::vector<int> before, after;
  for (int i = 0; i < 3; ++i) {
    if (i > 0) {
      ASSERT_NO_FATAL_FAILURE(dirty("e1", 4));
    }
    before.push_back(lastCounter("e1"));
    ids.push_back(snapshot("e1")["id"]);
    after.push_back(lastCounter("e1"));
  }
  const std::string streams = loop_->mountPoint() + "/streams";
  ASSERT_TRUE(fs::makeDirs(streams));
  std::uint64_t baseRead = 0, inc1Read = 0, inc2Read = 0;  // bytes export read from the snapshots
  auto exportOne = [&](const std::string& snap, const std::string& parent, const std::string& out,
                       std::uint64_t& read) -> std::uint64_t {
    std::vector<std::string> args = {"export", "e1", snap, "-o", out, "--json"};
    if (!parent.empty()) args.insert(args.end(), {"--parent", parent});
    CliRun r = vmckpt(args);
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_FALSE(fs::exists(out + ".part"));
    if (r.code != 0) return 0;
    read = r.json()["bytes_read"].get<std::uint64_t>();
    return r.json()["stream_bytes"].get<std::uint64_t>();
  };
  std::uint64_t base = exportOne(ids[0], "", streams + "/base", baseRead);
  std::uint64_t inc1 = exportOne(ids[1], ids[0], streams + "/inc1", inc1Read);
  std::uint64_t inc2 = exportOne(ids[2], ids[1], streams + "/inc2", inc2Read);
  std::printf("export: base %llu bytes, increments %llu and %llu bytes (%.1f%% and %.1f%% of the base)\n",
              static_cast<unsigned long long>(base), static_cast<unsigned long long>(inc1),
              static_cast<unsigned long long>(inc2), 100.0 * static_cast<double>(inc1) / static_cast<double>(base),
              100.0 * static_cast<double>(inc2) / static_cast<double>(base));
  std::printf("export read: base %llu bytes, increments %llu and %llu bytes\n", static_cast<unsigned long long>(baseRead),
              static_cast<unsigned long long>(inc1Read), static_cast<unsigned long long>(inc2Read));
  EXPECT_GT(base, 150 * kMiB) << "the base carries the guest's pattern";
  EXPECT_LT(inc1, base / 10) << "an increment after 4 MiB dirtied is a small fraction of the base";
  EXPECT_LT(inc2, base / 10);
  // Btrfs: the ranges where a snapshot shares extents with its parent are not read; what
  // is read is the changed ranges of both and the small files (kernel, initrd, device
  // state) whose SHA-256 travels. Reading both snapshots whole would be twice the base.
  EXPECT_LT(inc1Read, baseRead / 5) << "an increment reads what changed, not both snapshots";
  EXPECT_LT(inc2Read, baseRead / 5);
  EXPECT_GT(inc1, 4 * kMiB) << "the 4 MiB the guest dirtied must travel";

  // The second store ("the other host") on the plain temporary directory: copy mode.
  // While it is used, this test's home is that store (console, qemuPids, teardown).
  TempDir peer("vmckpt-peer");
  ASSERT_FALSE(peer.path().empty());
  const std::string srcHome = home_;
  auto peerRun = [&](const std::vector<std::string>& args) { return vmckpt(args, {{"VMCKPT_HOME", peer.path()}}); };
  auto nothingImported = [&] {
    auto vms = listDir(peer.path() + "/vms");
    EXPECT_TRUE(vms.empty()) << "left in the store: " << (vms.empty() ? "" : vms[0]);
  };

  // Damaged: one byte flipped in the middle (RAM data); truncated: cut at two thirds.
  {
    std::string bytes = *fs::readFile(streams + "/base", 1ull << 30);
    std::string bad = bytes;
    bad[bad.size() / 2] ^= 0x01;
    ASSERT_TRUE(fs::writeFileAtomic(streams + "/damaged", bad));
    CliRun r = peerRun({"import", "-i", streams + "/damaged"});
    EXPECT_NE(r.code, 0);
    expectOneLineError(r, "SHA-256");
    nothingImported();
    ASSERT_TRUE(fs::writeFileAtomic(streams + "/truncated", bytes.substr(0, bytes.size() * 2 / 3)));
    r = peerRun({"import", "-i", streams + "/truncated"});
    EXPECT_NE(r.code, 0);
    expectOneLineError(r, "truncated at byte");
    nothingImported();
    r = peerRun({"import", "-i", streams + "/inc1"});
    EXPECT_EQ(r.code, 3);
    expectOneLineError(r, "import the base first");
    nothingImported();
  }

  // Base and first increment from files; the second through a pipe, as over ssh.
  CliRun r = peerRun({"import", "-i", streams + "/base", "--map", "net=user", "--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.json()["created_vm"], true);
  r = peerRun({"import", "-i", streams + "/inc1", "--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.json()["parent"], ids[0]);
  std::string pipeline = cat("VMCKPT_HOME=", shellQuote(srcHome), " ", VMCKPT_BIN, " export e1 ", ids[2], " --parent ",
                             ids[1], " -o - | VMCKPT_HOME=", shellQuote(peer.path()), " ", VMCKPT_BIN, " import -i - --json");
  auto piped = ChildProcess::spawn({.argv = {"/bin/sh", "-c", pipeline},
                                    .env = environment(),
                                    .stdoutTo = Redirect::toFile(streams + "/pipe.out"),
                                    .stderrTo = Redirect::toFile(streams + "/pipe.err")});
  ASSERT_TRUE(piped) << piped.error().message();
  auto done = piped->wait(Deadline::in(120s));
  ASSERT_TRUE(done) << done.error().message();
  ASSERT_TRUE(done->success()) << *fs::readFile(streams + "/pipe.err");
  EXPECT_NE(fs::readFile(streams + "/pipe.out")->find(ids[1]), std::string::npos) << "import's JSON names the parent";
  for (const auto& id : ids) {
    CliRun v = peerRun({"verify", "e1", id});
    EXPECT_EQ(v.code, 0) << v.out << v.err;
  }
  Json peerSpec = Json::parse(*fs::readFile(peer.path() + "/vms/e1/spec.json"), nullptr, false);
  EXPECT_EQ(peerSpec["device_map"]["net"], "user") << "--map is kept in the VM spec";

  // The newest imported snapshot restores on "the other host" and continues from there.
  home_ = peer.path();
  ScopeExit backHome([&] {
    for (int pid : qemuPids()) ::kill(pid, SIGKILL);
    home_ = srcHome;
  });
  r = vmckpt({"restore", "e1", ids[2], "--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  ASSERT_TRUE(waitForConsole("e1", "[vmckpt: restored from snapshot " + ids[2])) << console("e1");
  auto deadline = std::chrono::steady_clock::now() + 60s;
  int first = 0;
  while (std::chrono::steady_clock::now() < deadline && (first = firstCounter(sinceLastRestore(console("e1")))) == 0)
    std::this_thread::sleep_for(100ms);
  EXPECT_GE(first, before[2]);
  EXPECT_LE(first, after[2] + 2);
  EXPECT_TRUE(guestVerifies("e1")) << "memory pattern damaged after export, import and restore";
  ASSERT_EQ(vmckpt({"stop", "e1", "--force"}).code, 0);
}
