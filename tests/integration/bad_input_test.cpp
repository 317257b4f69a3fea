// Bad input gets a one-line error and a non-zero exit, and changes nothing.
#include <signal.h>
#include <unistd.h>

#include <fstream>
#include <thread>

#include "common/fs.hpp"
#include "common/strings.hpp"
#include "harness.hpp"

using namespace std::chrono_literals;
using namespace vmckpt;
using vmckpt::test::expectOneLineError;
using vmckpt::test::CliRun;
using vmckpt::test::Json;

class BadInput : public vmckpt::test::VmckptTest {};

TEST_F(BadInput, UnknownVm) {
  for (const char* verb : {"status", "start", "stop", "pause", "resume", "delete", "logs"}) {
    CliRun r = vmckpt({verb, "nope"});
    EXPECT_EQ(r.code, 3) << verb;
    expectOneLineError(r, "no VM named nope");
  }
  CliRun j = vmckpt({"status", "nope", "--json"});
  EXPECT_EQ(j.json()["error"]["code"], "not_found");
}

TEST_F(BadInput, InvalidValuesCreateNothing) {
  std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"create", "x", "--memory", "0", "--kernel", kernel()}, "greater than zero"},
      {{"create", "x", "--memory", "banana", "--kernel", kernel()}, "not a number"},
      {{"create", "x", "--memory", "1G"}, "nothing to boot"},
      {{"create", "x", "--memory", "1G", "--kernel", kernel(), "--vcpus", "0"}, "vcpus"},
      {{"create", "x", "--memory", "1G", "--kernel", kernel(), "--accel", "warp"}, "accel 'warp'"},
      {{"create", "x", "--memory", "1G", "--kernel", kernel(), "--net", "bridge"}, "network 'bridge'"},
      {{"create", "../x", "--memory", "1G", "--kernel", kernel()}, "VM name"},
      {{"create", "x", "--memory", "1G", "--kernel", kernel(), "--qemu-arg", "-daemonize"}, "managed by vmckpt"},
  };
  for (const auto& [args, msg] : cases) {
    CliRun r = vmckpt(args);
    EXPECT_EQ(r.code, 2) << args[3];
    expectOneLineError(r, msg);
  }
  CliRun missing = vmckpt({"create", "x", "--memory", "1G", "--kernel", "/nonexistent/vmlinuz"});
  EXPECT_EQ(missing.code, 3);
  expectOneLineError(missing, "kernel /nonexistent/vmlinuz: no such file");
  CliRun missingDisk = vmckpt({"create", "x", "--memory", "1G", "--disk", "/nonexistent/disk.img"});
  EXPECT_EQ(missingDisk.code, 3);
  expectOneLineError(missingDisk, "no such file");
  CliRun usage = vmckpt({"create"});
  EXPECT_EQ(usage.code, 2);
  expectOneLineError(usage, "name is required");
  EXPECT_EQ(vmckpt({"list", "--json"}).json()["vms"].size(), 0u);
  EXPECT_EQ(vmckpt({"status", "x"}).code, 3);
}

TEST_F(BadInput, DuplicateNameKeepsTheFirst) {
  createGuest("dup");
  std::string spec = *fs::readFile(home_ + "/vms/dup/spec.json");
  CliRun r = vmckpt({"create", "dup", "--memory", "512M", "--kernel", kernel()});
  EXPECT_EQ(r.code, 4);
  expectOneLineError(r, "already exists");
  EXPECT_EQ(*fs::readFile(home_ + "/vms/dup/spec.json"), spec);
}

TEST_F(BadInput, QemuMissingFromPath) {
  createGuest("nq");
  CliRun r = vmckpt({"start", "nq"}, {{"PATH", "/nonexistent"}});
  EXPECT_EQ(r.code, 3);
  expectOneLineError(r, "qemu-system-x86_64: not found in PATH");
  CliRun r2 = vmckpt({"start", "nq"}, {{"VMCKPT_QEMU", "/nonexistent/qemu"}});
  EXPECT_EQ(r2.code, 3);
  expectOneLineError(r2, "/nonexistent/qemu");
  EXPECT_EQ(vmckpt({"status", "nq", "--json"}).json()["state"], "created");
  EXPECT_TRUE(qemuPids().empty());
  CliRun doctor = vmckpt({"doctor", "--json"}, {{"PATH", "/nonexistent"}});
  EXPECT_EQ(doctor.code, 1);
  EXPECT_FALSE(doctor.json()["healthy"].get<bool>());
}

TEST_F(BadInput, QemuRefusingToStartIsReportedInOneLine) {
  createGuest("bad", "idle", {"--qemu-arg", "-no-such-qemu-option"});
  CliRun r = vmckpt({"start", "bad"});
  EXPECT_EQ(r.code, 1);
  expectOneLineError(r, "QEMU failed to start");
  EXPECT_NE(r.err.find("no-such-qemu-option"), std::string::npos) << r.err;
  EXPECT_TRUE(qemuPids().empty());
  EXPECT_FALSE(fs::exists(home_ + "/vms/bad/run/qemu.pid"));
}

TEST_F(BadInput, StartingARunningVmAndStalePidFiles) {
  createGuest("s1");
  ASSERT_EQ(vmckpt({"start", "s1"}).code, 0);
  CliRun twice = vmckpt({"start", "s1"});
  EXPECT_EQ(twice.code, 5);
  expectOneLineError(twice, "already running");
  auto pids = qemuPids();
  ASSERT_EQ(pids.size(), 1u);

  // QEMU dies behind vmckpt's back: the pid file is stale.
  ::kill(pids[0], SIGKILL);
  for (int i = 0; i < 100 && !qemuPids().empty(); ++i) std::this_thread::sleep_for(50ms);
  ASSERT_TRUE(fs::exists(home_ + "/vms/s1/run/qemu.pid"));
  Json st = vmckpt({"status", "s1", "--json"}).json();
  EXPECT_EQ(st["state"], "stopped");
  EXPECT_TRUE(st["pid"].is_null());

  // A pid file naming a live process that is not our QEMU (pid reuse) is stale too.
  std::ofstream(home_ + "/vms/s1/run/qemu.pid") << ::getpid() << "\n";
  EXPECT_EQ(vmckpt({"status", "s1", "--json"}).json()["state"], "stopped");
  CliRun restart = vmckpt({"start", "s1", "--json"});
  ASSERT_EQ(restart.code, 0) << restart.err;
  EXPECT_EQ(restart.json()["state"], "running");
  EXPECT_NE(restart.json()["pid"].get<int>(), ::getpid());
  ASSERT_EQ(vmckpt({"stop", "s1", "--force"}).code, 0);
  EXPECT_EQ(::kill(::getpid(), 0), 0);  // we were never signalled
}

TEST_F(BadInput, DamagedSpecIsReportedNotTrusted) {
  createGuest("c1");
  std::ofstream(home_ + "/vms/c1/spec.json") << R"({"format": {"major": 9, "minor": 0}, "name": "c1"})";
  CliRun r = vmckpt({"start", "c1"});
  EXPECT_EQ(r.code, 1);
  expectOneLineError(r, "newer than this vmckpt understands");
  std::ofstream(home_ + "/vms/c1/spec.json") << "{not json";
  CliRun r2 = vmckpt({"status", "c1"});
  expectOneLineError(r2, "not valid JSON");
}
