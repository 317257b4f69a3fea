// The VM lifecycle end to end with real QEMU (TCG) and the real test guest.
#include <signal.h>
#include <sys/stat.h>

#include <dirent.h>

#include <fstream>
#include <thread>

#include "common/child_process.hpp"
#include "common/fs.hpp"
#include "common/strings.hpp"
#include "harness.hpp"

using namespace std::chrono_literals;
using namespace vmckpt;
using vmckpt::test::CliRun;
using vmckpt::test::Json;

class Lifecycle : public vmckpt::test::VmckptTest {};

TEST_F(Lifecycle, CreateStartStatusLogsPauseResumeStopDelete) {
  createGuest("t1", "counter", {}, "1G");
  CliRun st = vmckpt({"status", "t1", "--json"});
  ASSERT_EQ(st.code, 0) << st.err;
  EXPECT_EQ(st.json()["state"], "created");

  auto t0 = std::chrono::steady_clock::now();
  CliRun start = vmckpt({"start", "t1", "--json"});
  ASSERT_EQ(start.code, 0) << start.err;
  st = vmckpt({"status", "t1", "--json"});
  ASSERT_EQ(st.code, 0) << st.err;
  Json j = st.json();
  EXPECT_EQ(j["state"], "running");
  EXPECT_EQ(j["accel"], "tcg");
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s) << "running state took too long to report";
  int pid = j["pid"].get<int>();
  EXPECT_EQ(qemuPids(), std::vector<int>{pid});

  // Store layout and permissions: directories 0700, sockets 0600, RAM in a shared file.
  std::string dir = home_ + "/vms/t1";
  struct stat sb{};
  ASSERT_EQ(::stat(dir.c_str(), &sb), 0);
  EXPECT_EQ(sb.st_mode & 0777, 0700u);
  ASSERT_EQ(::stat((dir + "/run/qmp.sock").c_str(), &sb), 0);
  EXPECT_TRUE(S_ISSOCK(sb.st_mode));
  EXPECT_EQ(sb.st_mode & 0777, 0600u);
  ASSERT_EQ(::stat((dir + "/live/mem").c_str(), &sb), 0);
  EXPECT_EQ(sb.st_size, 1ll << 30);

  ASSERT_TRUE(waitForConsole("t1", "vmckpt-test-guest: ready")) << console("t1");
  ASSERT_TRUE(waitForConsole("t1", "counter 2")) << console("t1");
  CliRun logs = vmckpt({"logs", "t1"});
  ASSERT_EQ(logs.code, 0);
  EXPECT_NE(logs.out.find("vmckpt-test-guest: ready"), std::string::npos);
  CliRun tail = vmckpt({"logs", "t1", "-n", "1"});
  EXPECT_EQ(std::count(tail.out.begin(), tail.out.end(), '\n'), 1) << tail.out;

  // Pause: QMP STOP seen, and the guest really stops counting.
  CliRun pause = vmckpt({"pause", "t1", "--json"});
  ASSERT_EQ(pause.code, 0) << pause.err;
  EXPECT_EQ(pause.json()["event"], "STOP");
  EXPECT_EQ(pause.json()["state"], "paused");
  EXPECT_EQ(vmckpt({"status", "t1", "--json"}).json()["state"], "paused");
  int frozen = lastCounter("t1");
  std::this_thread::sleep_for(2500ms);
  EXPECT_EQ(lastCounter("t1"), frozen) << "guest kept running while paused";
  CliRun again = vmckpt({"pause", "t1"});
  EXPECT_EQ(again.code, 5);
  vmckpt::test::expectOneLineError(again, "already paused");

  CliRun resume = vmckpt({"resume", "t1", "--json"});
  ASSERT_EQ(resume.code, 0) << resume.err;
  EXPECT_EQ(resume.json()["event"], "RESUME");
  ASSERT_TRUE(waitForConsole("t1", cat("counter ", frozen + 2), 30s)) << "guest did not continue";

  CliRun list = vmckpt({"list", "--json"});
  ASSERT_EQ(list.code, 0);
  ASSERT_EQ(list.json()["vms"].size(), 1u);
  EXPECT_EQ(list.json()["vms"][0]["name"], "t1");

  // Graceful stop: ACPI power button; the guest powers itself off.
  CliRun stop = vmckpt({"stop", "t1", "--json"});
  ASSERT_EQ(stop.code, 0) << stop.err;
  EXPECT_EQ(stop.json()["state"], "stopped");
  EXPECT_NE(console("t1").find("power button pressed"), std::string::npos);
  EXPECT_TRUE(qemuPids().empty());
  EXPECT_FALSE(fs::exists(dir + "/run/qemu.pid"));
  EXPECT_FALSE(fs::exists(dir + "/run/qmp.sock"));
  EXPECT_EQ(vmckpt({"status", "t1", "--json"}).json()["state"], "stopped");

  CliRun del = vmckpt({"delete", "t1"});
  ASSERT_EQ(del.code, 0) << del.err;
  EXPECT_FALSE(fs::exists(dir));
  EXPECT_EQ(vmckpt({"status", "t1"}).code, 3);
  DIR* d = ::opendir((home_ + "/vms").c_str());
  ASSERT_NE(d, nullptr);
  int entries = 0;
  while (dirent* e = ::readdir(d)) entries += std::string(e->d_name) != "." && std::string(e->d_name) != "..";
  ::closedir(d);
  EXPECT_EQ(entries, 0) << "files left in the store";
}

TEST_F(Lifecycle, ForcedStopOfAPausedGuestAndRestart) {
  createGuest("t2");
  ASSERT_EQ(vmckpt({"start", "t2"}).code, 0);
  ASSERT_TRUE(waitForConsole("t2", "counter 1")) << console("t2");
  ASSERT_EQ(vmckpt({"pause", "t2"}).code, 0);
  CliRun stop = vmckpt({"stop", "t2"});
  EXPECT_EQ(stop.code, 5);
  vmckpt::test::expectOneLineError(stop, "paused");
  EXPECT_EQ(vmckpt({"status", "t2", "--json"}).json()["state"], "paused");  // unchanged
  CliRun force = vmckpt({"stop", "t2", "--force"});
  ASSERT_EQ(force.code, 0) << force.err;
  EXPECT_TRUE(qemuPids().empty());
  CliRun stopAgain = vmckpt({"stop", "t2"});
  EXPECT_EQ(stopAgain.code, 5);
  vmckpt::test::expectOneLineError(stopAgain, "not running");

  // A stopped VM boots again from scratch.
  ASSERT_EQ(vmckpt({"start", "t2"}).code, 0);
  ASSERT_TRUE(waitForConsole("t2", "counter 1")) << console("t2");
  CliRun del = vmckpt({"delete", "t2"});
  EXPECT_EQ(del.code, 5);
  vmckpt::test::expectOneLineError(del, "is running");
  ASSERT_EQ(vmckpt({"delete", "t2", "--force"}).code, 0);
  EXPECT_TRUE(qemuPids().empty());
}

TEST_F(Lifecycle, GuestPowerOffIsNoticed) {
  createGuest("t3", "idle", {}, "256M", "vmckpt.poweroff=1");
  ASSERT_EQ(vmckpt({"start", "t3"}).code, 0);
  auto deadline = std::chrono::steady_clock::now() + 90s;
  Json j;
  while (std::chrono::steady_clock::now() < deadline) {
    j = vmckpt({"status", "t3", "--json"}).json();
    if (j["state"] == "stopped") break;
    std::this_thread::sleep_for(500ms);
  }
  EXPECT_EQ(j["state"], "stopped") << j.dump();
  EXPECT_NE(j.value("note", "").find("without 'vmckpt stop'"), std::string::npos) << j.dump();
}

TEST_F(Lifecycle, DisksAreImportedAndSeenByTheGuest) {
  std::string raw = home_ + "/raw.img", qcow = home_ + "/disk.qcow2";
  {
    std::ofstream f(raw);
    f.seekp((8 << 20) - 1);
    f.put('\0');
  }
  auto q = runCommand({"qemu-img", "create", "-q", "-f", "qcow2", qcow, "16M"}, Deadline::in(30s));
  ASSERT_TRUE(q && q->status.success());
  createGuest("t4", "info", {"--disk", raw, "--disk", qcow});
  Json st = vmckpt({"status", "t4", "--json"}).json();
  EXPECT_EQ(st["disks"], 2);
  EXPECT_TRUE(fs::exists(home_ + "/vms/t4/live/disk0.raw"));
  EXPECT_TRUE(fs::exists(home_ + "/vms/t4/live/disk1.qcow2"));
  ASSERT_EQ(vmckpt({"start", "t4"}).code, 0);
  ASSERT_TRUE(waitForConsole("t4", "info: mounts")) << console("t4");
  EXPECT_NE(console("t4").find("disk vda 16384 sectors"), std::string::npos) << console("t4");
  EXPECT_NE(console("t4").find("disk vdb 32768 sectors"), std::string::npos) << console("t4");
  EXPECT_NE(console("t4").find("virtio port org.vmckpt.agent.0"), std::string::npos);
  ASSERT_EQ(vmckpt({"stop", "t4", "--force"}).code, 0);
}
