// Live snapshots (`snapshot --live`, QEMU's background-snapshot) of guests with anonymous
// RAM (create --ram anon), with real QEMU under TCG: the guest runs vmckpt-memtest (a
// pattern over most of its RAM, a counter, console commands) and keeps counting while
// its RAM is written; a restore reads the whole stream back and the guest continues
// from the snapshot. And the refusals: --live on a VM whose RAM is a file in a Btrfs
// store, a fast-path snapshot of an anonymous-RAM VM.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <thread>

#include "common/fs.hpp"
#include "common/strings.hpp"
#include "harness.hpp"
#include "loop_fs.hpp"

using namespace std::chrono_literals;
using namespace vmckpt;
using namespace vmckpt::test;  // the harness: VmckptTest, CliRun, Json, LoopFs, expectOneLineError

namespace {

// Entries of a directory whose names start with '.' (half-built snapshots).
int hiddenEntries(const std::string& dir) {
  auto names = fs::entriesWithPrefix(dir, ".");
  return static_cast<int>(std::count_if(names.begin(), names.end(), [](const auto& n) { return n != "." && n != ".."; }));
}

}  // namespace

class LiveSnapshotTest : public VmckptTest {
 protected:
  // The console from the latest "[vmckpt: restored from snapshot ID" mark on.
  std::string afterRestore(const std::string& name, const std::string& id) {
    std::string log = console(name);
    auto at = log.rfind("[vmckpt: restored from snapshot " + id);
    return at == std::string::npos ? std::string() : log.substr(at);
  }

  // The first "counter N" the guest printed after it was restored from `id` (0: none in 60 s).
  int counterAfterRestore(const std::string& name, const std::string& id) {
    for (auto deadline = std::chrono::steady_clock::now() + 60s; std::chrono::steady_clock::now() < deadline;
         std::this_thread::sleep_for(100ms)) {
      std::string tail = afterRestore(name, id);
      if (auto at = tail.find("\ncounter "); at != std::string::npos) return std::atoi(tail.c_str() + at + 9);
    }
    return 0;
  }

  // memtest checks its whole pattern; "" when it says ok, else what it said.
  std::string memtestVerify(const std::string& name) {
    const size_t from = console(name).size();
    sendConsole(name, "verify");
    for (auto deadline = std::chrono::steady_clock::now() + 120s; std::chrono::steady_clock::now() < deadline;
         std::this_thread::sleep_for(200ms)) {
      std::string said = console(name).substr(from);
      auto at = said.find("memtest: verify ");
      if (at != std::string::npos && said.find('\n', at) != std::string::npos)
        return said.find("memtest: verify ok", at) == at ? "" : said.substr(at, said.find('\n', at) - at);
    }
    return "no answer to verify";
  }

  int snapshotCount(const std::string& name) {
    return static_cast<int>(vmckpt({"snapshots", name, "--json"}).json()["snapshots"].size());
  }

  std::unique_ptr<LoopFs> loop_;  // outlives TearDown, which ends the QEMUs using it
};

TEST_F(LiveSnapshotTest, AnonymousRamGuestKeepsRunningAndComesBackFromTheStream) {
  createGuest("l1", "memtest", {"--ram", "anon"}, "256M", kMemtestArgs);
  ASSERT_EQ(vmckpt({"start", "l1"}).code, 0);
  ASSERT_TRUE(waitForConsole("l1", "memtest: filled", 180s)) << console("l1");
  ASSERT_TRUE(waitForConsole("l1", "counter 2", 60s)) << console("l1");
  Json st = vmckpt({"status", "l1", "--json"}).json();
  EXPECT_EQ(st["state"], "running");
  EXPECT_EQ(st["ram"], "anon");
  EXPECT_FALSE(fs::exists(home_ + "/vms/l1/live/mem")) << "anonymous RAM needs no RAM file";

  // The fast path cannot capture anonymous RAM: refused with the way out, guest untouched.
  CliRun plain = vmckpt({"snapshot", "l1"});
  EXPECT_EQ(plain.code, 1) << plain.err;
  expectOneLineError(plain, "use snapshot --live");

  const int before = lastCounter("l1");
  CliRun live = vmckpt({"snapshot", "l1", "--live", "--json"});
  ASSERT_EQ(live.code, 0) << live.err;
  const int after = lastCounter("l1");
  Json s = live.json();
  const std::string id = s["id"];
  EXPECT_TRUE(s["live"].get<bool>());
  EXPECT_EQ(s["ram"], "stream");
  const double pause = s["pause_ms"], total = s["total_ms"];
  EXPECT_GT(pause, 0.0);
  EXPECT_LT(pause, 5000.0);
  EXPECT_GT(total, pause);
  EXPECT_GT(s["devstate_bytes"].get<std::uint64_t>(), 128ull << 20) << "the stream should hold the guest's pattern";
  std::printf("live snapshot of a 256 MiB guest: pause %.1f ms, total %.0f ms\n", pause, total);
  // The guest ran on while its RAM was written, and runs on after.
  ASSERT_TRUE(waitForConsole("l1", cat("counter ", after + 3), 30s)) << "guest not running after the live snapshot";
  EXPECT_EQ(hiddenEntries(home_ + "/vms/l1/snapshots"), 0);

  Json insp = vmckpt({"inspect", "l1", id}).json();
  EXPECT_EQ(insp["ram"], "stream");
  std::vector<std::string> files;
  for (const auto& f : insp["files"]) files.push_back(f["name"]);
  EXPECT_NE(std::find(files.begin(), files.end(), "state"), files.end());
  EXPECT_EQ(std::find(files.begin(), files.end(), "mem"), files.end());
  CliRun ver = vmckpt({"verify", "l1", id});
  EXPECT_EQ(ver.code, 0) << ver.out << ver.err;

  // A writer that fails mid-stream: the stream is cancelled, the guest keeps counting,
  // nothing is left behind.
  const int atFault = lastCounter("l1");
  CliRun faulted = vmckpt({"snapshot", "l1", "--live"}, {{"VMCKPT_FAULT", "mid-stream:error"}});
  EXPECT_NE(faulted.code, 0);
  expectOneLineError(faulted, "injected fault at mid-stream");
  EXPECT_EQ(faulted.err.find("stuck"), std::string::npos) << faulted.err;
  EXPECT_EQ(vmckpt({"status", "l1", "--json"}).json()["state"], "running");
  ASSERT_TRUE(waitForConsole("l1", cat("counter ", atFault + 3), 30s)) << "guest not running after the failed stream";
  EXPECT_EQ(snapshotCount("l1"), 1);
  EXPECT_EQ(hiddenEntries(home_ + "/vms/l1/snapshots"), 0);

  // Killed and restored in place: the counter continues from the snapshot, not from 1,
  // and the whole pattern came back.
  ASSERT_EQ(vmckpt({"stop", "l1", "--force"}).code, 0);
  CliRun r = vmckpt({"restore", "l1", id, "--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.json()["state"], "running");
  int first = counterAfterRestore("l1", id);
  EXPECT_GE(first, before) << "counter went back before the snapshot";
  EXPECT_LE(first, after + 2) << "counter did not continue from the snapshot";
  EXPECT_EQ(memtestVerify("l1"), "") << "memory pattern damaged after restore";
  EXPECT_FALSE(fs::exists(home_ + "/vms/l1/live/state")) << "the clone's copy of the stream stays behind";

  // Beside the original: restore --as.
  CliRun as = vmckpt({"restore", "l1", id, "--as", "l2", "--json"});
  ASSERT_EQ(as.code, 0) << as.err;
  EXPECT_EQ(as.json()["state"], "running");
  int firstAs = counterAfterRestore("l2", id);
  EXPECT_GE(firstAs, before);
  EXPECT_LE(firstAs, after + 2);
  EXPECT_EQ(vmckpt({"status", "l2", "--json"}).json()["ram"], "anon");
  ASSERT_EQ(vmckpt({"stop", "l2", "--force"}).code, 0);
}

TEST_F(LiveSnapshotTest, FileRamOnBtrfsIsRefusedInOneLineAndTheGuestRunsOn) {
  if (auto why = LoopFs::unavailable("btrfs")) GTEST_SKIP() << "btrfs loop filesystem unavailable: " << *why;
  auto lfs = LoopFs::create("btrfs", 2ull << 30);
  ASSERT_TRUE(lfs) << lfs.error().message();
  loop_ = std::move(*lfs);
  useHome(loop_->mountPoint() + "/vmckpt");
  createGuest("f1", "counter");
  ASSERT_EQ(vmckpt({"start", "f1"}).code, 0);
  ASSERT_TRUE(waitForConsole("f1", "counter 1")) << console("f1");
  const int before = lastCounter("f1");
  CliRun r = vmckpt({"snapshot", "f1", "--live"});
  EXPECT_EQ(r.code, 1) << r.err;
  expectOneLineError(r, "snapshot --live needs anonymous RAM (create --ram anon)");
  EXPECT_EQ(vmckpt({"status", "f1", "--json"}).json()["state"], "running");
  ASSERT_TRUE(waitForConsole("f1", cat("counter ", before + 2), 30s)) << "guest not running after the refusal";
  EXPECT_EQ(snapshotCount("f1"), 0);
  ASSERT_EQ(vmckpt({"stop", "f1", "--force"}).code, 0);
}
