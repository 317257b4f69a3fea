// Crash consistency: VMCKPT_FAULT makes a snapshot or restore fail at each of its phases
// (an error, vmckpt SIGKILLed, QEMU SIGKILLed). After each trial the invariants must hold:
// the VM runs (or, when QEMU was killed, is stopped and says so), nothing half-built is
// visible, every listed snapshot verifies, and the newest one restores with the guest's
// memory intact. CrashTest.ShortSubset runs in the default suite; CrashTest.EveryPointAndAction
// (label slow) runs every combination several times and writes crash-results.json.
#include <dirent.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

#include "common/strings.hpp"
#include "harness.hpp"
#include "loop_fs.hpp"

using namespace std::chrono_literals;
using namespace vmckpt;
using vmckpt::test::CliRun;
using vmckpt::test::Json;
using vmckpt::test::LoopFs;

namespace {

const std::vector<std::string> kSnapshotPoints = {"before-quiesce", "after-quiesce", "mid-devstate", "after-stop",
                                                  "after-capture",  "before-publish"};
const std::vector<std::string> kActions = {"error", "kill", "kill-qemu"};

struct Tally {
  int trials = 0, vmLeftPaused = 0, incompleteVisible = 0, restoresVerified = 0, invariantFailures = 0;
  std::map<std::string, int> byFault;
  Json toJson() const {
    return {{"trials", trials},
            {"vm_left_paused", vmLeftPaused},
            {"incomplete_snapshots_visible", incompleteVisible},
            {"restores_verified", restoresVerified},
            {"invariant_failures", invariantFailures},
            {"trials_by_fault", byFault}};
  }
};

// Counts failed assertions, so that a trial can tell whether it added any.
struct FailureCounter : ::testing::EmptyTestEventListener {
  int failures = 0;
  void OnTestPartResult(const ::testing::TestPartResult& r) override {
    if (r.failed()) ++failures;
  }
};

FailureCounter& failureCounter() {
  static FailureCounter* counter = [] {
    auto* c = new FailureCounter;  // owned by gtest's listener list from here
    ::testing::UnitTest::GetInstance()->listeners().Append(c);
    return c;
  }();
  return *counter;
}

}  // namespace

class CrashTest : public vmckpt::test::VmckptTest {
 protected:
  static constexpr const char* kVm = "c1";

  void SetUp() override {
    VmckptTest::SetUp();
    if (auto why = LoopFs::unavailable("btrfs")) GTEST_SKIP() << "btrfs loop filesystem unavailable: " << *why;
    auto lfs = LoopFs::create("btrfs", 4ull << 30);
    ASSERT_TRUE(lfs) << lfs.error().message();
    loop_ = std::move(*lfs);
    useHome(loop_->mountPoint() + "/vmckpt");
    createGuest(kVm, "memtest", {}, "384M", "vmckpt.memtest=--mib,160");
    ASSERT_EQ(vmckpt({"start", kVm}).code, 0);
    ASSERT_TRUE(waitForConsole(kVm, "memtest: filled", 180s)) << console(kVm);
    CliRun r = vmckpt({"snapshot", kVm, "--tag", "base"});
    ASSERT_EQ(r.code, 0) << r.err;
  }

  std::string state() {
    CliRun r = vmckpt({"status", kVm, "--json"});
    return r.code == 0 ? r.json().value("state", "") : "error";
  }

  std::vector<std::string> tmpDirs() {
    std::vector<std::string> out;
    std::string dir = home_ + "/vms/" + kVm + "/snapshots";
    if (DIR* d = ::opendir(dir.c_str())) {
      while (dirent* e = ::readdir(d))
        if (startsWith(e->d_name, ".tmp-")) out.push_back(e->d_name);
      ::closedir(d);
    }
    return out;
  }

  // Every snapshot the catalog lists verifies. Returns the newest id.
  std::string checkCatalog(Tally& t, const std::string& what) {
    CliRun r = vmckpt({"snapshots", kVm, "--json"});
    EXPECT_EQ(r.code, 0) << r.err;
    Json j = r.json();
    const Json& list = j.is_array() ? j : j["snapshots"];
    std::string newest;
    for (const auto& s : list) {
      std::string id = s.value("id", "");
      CliRun v = vmckpt({"verify", kVm, id});
      if (v.code != 0) {
        ++t.incompleteVisible;
        ADD_FAILURE() << what << ": snapshot " << id << " is listed but does not verify: " << v.err;
      }
      if (id > newest) newest = id;
    }
    if (!tmpDirs().empty()) {
      ++t.incompleteVisible;
      ADD_FAILURE() << what << ": a temporary snapshot directory is left: " << tmpDirs().front();
    }
    return newest;
  }

  static int occurrences(const std::string& text, const std::string& needle) {
    int n = 0;
    for (size_t p = text.find(needle); p != std::string::npos; p = text.find(needle, p + 1)) ++n;
    return n;
  }

  // The guest checks its whole pattern; true when it answers ok.
  bool guestVerifies() {
    int before = occurrences(console(kVm), "memtest: verify");
    sendConsole(kVm, "verify");
    for (auto d = std::chrono::steady_clock::now() + 120s; std::chrono::steady_clock::now() < d;) {
      std::string c = console(kVm);
      if (occurrences(c, "memtest: verify") > before) {
        size_t last = c.rfind("memtest: verify");
        return c.compare(last, 18, "memtest: verify ok") == 0;
      }
      std::this_thread::sleep_for(200ms);
    }
    return false;
  }

  // Restores `snap` in place (stopping whatever runs) and checks the guest's memory.
  void restoreAndVerify(Tally& t, const std::string& snap, const std::string& what) {
    (void)vmckpt({"stop", kVm, "--force"});
    CliRun r = vmckpt({"restore", kVm, snap, "--json"});
    ASSERT_EQ(r.code, 0) << what << ": " << r.err;
    std::string id = r.json().value("snapshot", "");  // `snap` may be a tag
    ASSERT_TRUE(waitForConsole(kVm, "[vmckpt: restored from snapshot " + id)) << console(kVm);
    if (guestVerifies()) ++t.restoresVerified;
    else ADD_FAILURE() << what << ": memory pattern damaged after restoring " << snap;
  }

  // One snapshot with a fault at `point`, then the invariants. QEMU killed before publish
  // (the guest already ran again) leaves a complete snapshot: that one succeeds.
  void snapshotTrial(Tally& t, const std::string& point, const std::string& action) {
    std::string fault = point + ":" + action, what = "VMCKPT_FAULT=" + fault;
    ++t.trials;
    ++t.byFault[fault];
    int failuresBefore = failureCounter().failures;
    CliRun r = vmckpt({"snapshot", kVm}, {{"VMCKPT_FAULT", fault}});
    if (point == "before-publish" && action == "kill-qemu") EXPECT_EQ(r.code, 0) << what << ": " << r.err;
    else EXPECT_NE(r.code, 0) << what << ": the snapshot did not fail";
    if (action == "error") {
      vmckpt::test::expectOneLineError(r, "injected fault at " + point);
      // No recovery needed: the failing command itself resumed and cleaned up.
      CliRun rec = vmckpt({"recover", kVm, "--json"});
      EXPECT_EQ(rec.code, 0) << rec.err;
      EXPECT_TRUE(rec.json()["actions"].empty()) << what << ": left something to recover: " << rec.out;
    } else {
      CliRun rec = vmckpt({"recover", kVm, "--json"});
      EXPECT_EQ(rec.code, 0) << what << ": " << rec.err;
    }
    std::string st = state();
    if (action == "kill-qemu") {
      EXPECT_NE(st, "running") << what;
      EXPECT_NE(st, "paused") << what;
    } else if (st != "running") {
      ++t.vmLeftPaused;
      ADD_FAILURE() << what << ": VM is " << st << " after the failed snapshot and recovery";
    }
    std::string newest = checkCatalog(t, what);
    if (action == "kill-qemu") restoreAndVerify(t, newest, what);  // back to running for the next trial
    if (failureCounter().failures != failuresBefore) ++t.invariantFailures;
  }

  // A restore with a fault in its middle; afterwards the VM is stopped with its live
  // directory intact, and a plain restore works.
  void restoreTrial(Tally& t, const std::string& action) {
    std::string fault = "mid-restore:" + action, what = "VMCKPT_FAULT=" + fault;
    ++t.trials;
    ++t.byFault[fault];
    std::string newest = checkCatalog(t, what);
    ASSERT_EQ(vmckpt({"stop", kVm, "--force"}).code, 0);
    CliRun r = vmckpt({"restore", kVm, newest}, {{"VMCKPT_FAULT", fault}});
    EXPECT_NE(r.code, 0) << what << ": the restore did not fail";
    CliRun rec = vmckpt({"recover", kVm, "--json"});
    EXPECT_EQ(rec.code, 0) << rec.err;
    std::string st = state();
    EXPECT_NE(st, "running") << what;
    EXPECT_NE(st, "paused") << what;
    EXPECT_TRUE(qemuPids().empty()) << what << ": a QEMU is left running";
    restoreAndVerify(t, newest, what);
  }

  std::unique_ptr<LoopFs> loop_;
};

TEST_F(CrashTest, ShortSubset) {
  Tally t;
  snapshotTrial(t, "after-stop", "kill");
  snapshotTrial(t, "mid-devstate", "kill");
  snapshotTrial(t, "after-capture", "error");
  snapshotTrial(t, "before-publish", "kill-qemu");
  restoreTrial(t, "kill");
  ASSERT_EQ(vmckpt({"snapshot", kVm, "--tag", "after"}).code, 0);
  restoreAndVerify(t, "after", "final");
  std::printf("crash trials: %s\n", t.toJson().dump().c_str());
  EXPECT_EQ(t.vmLeftPaused, 0);
  EXPECT_EQ(t.incompleteVisible, 0);
}

TEST_F(CrashTest, EveryPointAndAction) {
  const int rounds = std::getenv("VMCKPT_CRASH_ROUNDS") ? std::atoi(std::getenv("VMCKPT_CRASH_ROUNDS")) : 5;
  Tally t;
  for (int round = 0; round < rounds; ++round) {
    for (const auto& point : kSnapshotPoints)
      for (const auto& action : kActions) snapshotTrial(t, point, action);
    for (const auto& action : kActions) restoreTrial(t, action);
    // Every round ends with a clean snapshot restored and checked.
    ASSERT_EQ(vmckpt({"snapshot", kVm}).code, 0);
    restoreAndVerify(t, checkCatalog(t, "end of round"), "end of round");
  }
  Json out = t.toJson();
  out["rounds"] = rounds;
  std::ofstream(std::string(VMCKPT_CRASH_RESULTS)) << out.dump(2) << "\n";
  std::printf("crash trials: %s\nwritten to %s\n", out.dump().c_str(), VMCKPT_CRASH_RESULTS);
  EXPECT_GE(t.trials, 100);
  EXPECT_EQ(t.vmLeftPaused, 0);
  EXPECT_EQ(t.incompleteVisible, 0);
  EXPECT_EQ(t.invariantFailures, 0);
}
