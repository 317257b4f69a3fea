// Passthrough devices (create --passthrough) across snapshot and restore with real QEMU
// (TCG): an emulated e1000e in its own pcie-root-port stands in for a VFIO GPU. The
// snapshot must unplug it after the agent's quiesce and plug it back after cont, before
// the thaw; a restore's QEMU starts with the empty slot and plugs it once the guest runs;
// a failure at any step leaves the VM running with its device, thawed, and no snapshot.
#include <signal.h>

#include <thread>

#include "common/deadline.hpp"
#include "common/strings.hpp"
#include "harness.hpp"
#include "qmp/qmp_client.hpp"

using namespace std::chrono_literals;
using namespace vmckpt;
using vmckpt::test::CliRun;
using vmckpt::test::expectOneLineError;
using vmckpt::test::Json;

namespace {

// e1000e has device state of its own: a capture that still held it would not load into
// the restore's QEMU, which has only the empty slot.
const char* kDevice = "e1000e,id=nic7";
const char* kId = "nic7";

// Whether a query-pci answer lists a device with that qdev id, behind bridges too.
bool listsDevice(const Json& devices, const std::string& id) {
  if (!devices.is_array()) return false;
  for (const auto& d : devices) {
    if (d.value("qdev_id", "") == id) return true;
    if (auto b = d.find("pci_bridge"); b != d.end() && listsDevice(b->value("devices", Json::array()), id)) return true;
  }
  return false;
}

int counterAfter(const std::string& text) {
  int last = 0;
  for (const auto& line : split(text, '\n'))
    if (startsWith(line, "counter ")) last = std::max(last, std::atoi(line.c_str() + 8));
  return last;
}

}  // namespace

class PassthroughTest : public vmckpt::test::VmckptTest {
 protected:
  // One QMP command on the VM's monitor; the connection is closed again at once (QEMU's
  // monitor takes one client at a time, and vmckpt needs it next).
  Json qmp(const std::string& vm, const std::string& command) {
    auto c = qmp::Client::connect(cat(home_, "/vms/", vm, "/run/qmp.sock"), Deadline::in(10s));
    if (!c) {
      ADD_FAILURE() << c.error().message();
      return Json();
    }
    auto r = c->execute(command);
    if (!r) {
      ADD_FAILURE() << r.error().message();
      return Json();
    }
    return *r;
  }
  // The guest has enumerated the device (the slot's secondary bus is numbered) and QEMU has it.
  bool devicePresent(const std::string& vm) {
    Json pci = qmp(vm, "query-pci");
    for (const auto& bus : pci)
      if (listsDevice(bus.value("devices", Json::array()), kId)) return true;
    return false;
  }
  std::string runState(const std::string& vm) { return qmp(vm, "query-status").value("status", ""); }
  std::string agentState(const std::string& vm) {
    CliRun st = vmckpt({"agent", vm, "status", "--json"});
    return st.code == 0 ? st.json()["result"].value("state", "") : "agent status failed: " + st.err;
  }
  size_t snapshotCount(const std::string& vm) {
    CliRun list = vmckpt({"snapshots", vm, "--json"});
    EXPECT_EQ(list.code, 0) << list.err;
    return list.json()["snapshots"].size();
  }

  // Boots a counting guest with the device, and waits until its agent answers and the
  // guest has the device on its PCI bus.
  void boot(const std::string& vm, const std::string& kernelArgs = "") {
    createGuest(vm, "counter", {"--passthrough", kDevice}, "256M", kernelArgs);
    CliRun r = vmckpt({"start", vm});
    ASSERT_EQ(r.code, 0) << r.err;
    ASSERT_TRUE(waitForConsole(vm, "counter 2", 120s)) << console(vm);
    auto deadline = std::chrono::steady_clock::now() + 60s;
    while (vmckpt({"agent", vm, "ping"}).code != 0) {
      ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "the guest agent never answered";
      std::this_thread::sleep_for(300ms);
    }
    ASSERT_TRUE(devicePresent(vm)) << qmp(vm, "query-pci").dump();
  }

  // The guest runs with its device, thawed, and nothing was published.
  void expectUntouched(const std::string& vm, const std::string& step) {
    EXPECT_EQ(runState(vm), "running") << step;
    EXPECT_TRUE(devicePresent(vm)) << step;
    EXPECT_EQ(agentState(vm), "idle") << step;
    EXPECT_EQ(snapshotCount(vm), 0u) << step;
    int before = lastCounter(vm);
    EXPECT_TRUE(waitForConsole(vm, cat("counter ", before + 1), 30s)) << step << ": the guest stopped counting";
  }
};

TEST_F(PassthroughTest, SnapshotUnplugsTheDeviceForTheCaptureAndRestorePlugsItBack) {
  boot("p1");
  CliRun snap = vmckpt({"snapshot", "p1", "--agent", "required", "--json", "-vvv"});
  ASSERT_EQ(snap.code, 0) << snap.err;
  Json s = snap.json();
  EXPECT_EQ(s["unplugged"], Json::array({kId}));
  EXPECT_TRUE(s["agent"]["quiesced"].get<bool>());
  EXPECT_GT(s["timings"]["unplug_ms"].get<double>(), 0);
  EXPECT_GT(s["timings"]["replug_ms"].get<double>(), 0);
  const std::string id = s["id"];

  // The order, from vmckpt's own log (-vvv: QMP traffic, agent steps): quiesce, unplug
  // confirmed by QEMU's event, device-state migration and its pause, cont, replug, thaw.
  const std::string& log = snap.err;
  std::vector<std::string> steps = {
      "guest agent: quiesced",       R"("execute":"device_del")", R"("event": "DEVICE_DELETED")",
      R"("execute":"migrate","id")", R"("event": "STOP")",        R"("execute":"cont")",
      R"("event": "RESUME")",        R"("execute":"device_add")", "guest agent: thawed"};
  size_t at = 0;
  for (const auto& step : steps) {
    size_t pos = log.find(step, at);
    ASSERT_NE(pos, std::string::npos) << "'" << step << "' missing or out of order in:\n" << log.substr(0, 20000);
    at = pos + 1;
  }

  // After the snapshot: running, device back, agent thawed; the manifest records the unplug.
  EXPECT_EQ(runState("p1"), "running");
  EXPECT_TRUE(devicePresent("p1"));
  EXPECT_EQ(agentState("p1"), "idle");
  CliRun inspect = vmckpt({"inspect", "p1", id, "--json"});
  ASSERT_EQ(inspect.code, 0) << inspect.err;
  Json manifest = inspect.json();
  EXPECT_EQ(manifest["passthrough"]["unplugged"], Json::array({kId})) << manifest.dump();
  EXPECT_EQ(manifest["spec"]["passthrough"][0]["driver"], "e1000e");

  // Restore: the device state was captured without the device (an e1000e in it would not
  // load into a QEMU with only the empty slot); it is plugged once the guest runs.
  const int atSnapshot = lastCounter("p1");
  ASSERT_EQ(vmckpt({"stop", "--force", "p1"}).code, 0);
  // The device map may name another host device only for a device with host= (vfio-pci).
  CliRun badMap = vmckpt({"restore", "p1", id, "--map", "pci_nic7=0000:66:00.0"});
  EXPECT_EQ(badMap.code, 2);
  expectOneLineError(badMap, "device map pci_nic7: passthrough device nic7 (e1000e) has no host= to replace");
  CliRun restore = vmckpt({"restore", "p1", id, "--json"});
  ASSERT_EQ(restore.code, 0) << restore.err;
  EXPECT_GT(restore.json()["phases_ms"]["replug"].get<double>(), 0);
  EXPECT_EQ(runState("p1"), "running");
  ASSERT_TRUE(waitForConsole("p1", "[vmckpt: restored from snapshot " + id)) << console("p1");
  // The guest continues from where it was captured.
  auto deadline = std::chrono::steady_clock::now() + 60s;
  while (counterAfter(test::sinceRestore(console("p1"))) < 3 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(200ms);
  const int resumedAt = counterAfter(test::sinceRestore(console("p1")));
  EXPECT_GE(resumedAt, 3) << console("p1");
  EXPECT_LE(resumedAt, atSnapshot + 40) << "the restored guest did not continue from the snapshot";
  // query-pci lists the device once the guest has the slot's bus numbered: restored, it has.
  EXPECT_TRUE(devicePresent("p1")) << qmp("p1", "query-pci").dump();

  // And a second snapshot of the restored VM unplugs and replugs it again.
  CliRun again = vmckpt({"snapshot", "p1", "--agent", "required", "--json"});
  ASSERT_EQ(again.code, 0) << again.err;
  EXPECT_EQ(again.json()["unplugged"], Json::array({kId}));
  EXPECT_TRUE(devicePresent("p1"));
}

TEST_F(PassthroughTest, AFailureAtAnyStepLeavesTheVmRunningWithItsDeviceThawedAndNoSnapshot) {
  boot("p2");
  // The passthrough steps and the capture's own, injected (VMCKPT_FAULT=<point>:error).
  for (const std::string point : {"before-unplug", "mid-unplug", "after-unplug", "after-quiesce", "after-stop",
                                  "after-capture", "replug", "before-publish"}) {
    CliRun r = vmckpt({"snapshot", "p2", "--agent", "required"}, {{"VMCKPT_FAULT", point + ":error"}});
    EXPECT_NE(r.code, 0) << point;
    expectOneLineError(r, "injected fault at " + point);
    expectUntouched("p2", point);
  }
  // vmckpt killed with the device unplugged (and the guest frozen): the next command's
  // recovery plugs it back and thaws the guest.
  CliRun killed = vmckpt({"snapshot", "p2", "--agent", "required"}, {{"VMCKPT_FAULT", "after-unplug:kill"}});
  EXPECT_EQ(killed.code, 128 + SIGKILL) << killed.err;
  EXPECT_FALSE(devicePresent("p2"));
  CliRun recovered = vmckpt({"recover", "p2", "--json"});
  ASSERT_EQ(recovered.code, 0) << recovered.err;
  EXPECT_NE(recovered.out.find("plugged back the passthrough devices the snapshot had unplugged"), std::string::npos)
      << recovered.out;
  expectUntouched("p2", "recovery after a kill");
  // Refusals before anything happens: paused VM, live snapshot, group snapshot, migration.
  ASSERT_EQ(vmckpt({"pause", "p2"}).code, 0);
  CliRun paused = vmckpt({"snapshot", "p2"});
  EXPECT_EQ(paused.code, 5);
  expectOneLineError(paused, "the VM is paused, and its guest must run to release its passthrough devices (nic7)");
  ASSERT_EQ(vmckpt({"resume", "p2"}).code, 0);
  CliRun live = vmckpt({"snapshot", "p2", "--live"});
  expectOneLineError(live, "snapshot --live of a VM with passthrough devices (nic7) is not supported");
  CliRun migrate = vmckpt({"migrate", "p2", "--to", "127.0.0.1:9"});
  expectOneLineError(migrate, "live migration of a VM with passthrough devices is not supported");
  expectUntouched("p2", "refusals");
  // And then a snapshot works.
  CliRun ok = vmckpt({"snapshot", "p2", "--agent", "required", "--json"});
  ASSERT_EQ(ok.code, 0) << ok.err;
  EXPECT_TRUE(devicePresent("p2"));
}

// A guest that never releases the device (its ACPI PCI hotplug driver is off, so it
// ignores the eject request): no DEVICE_DELETED comes, the snapshot fails on the timeout
// and the device stays where it was.
TEST_F(PassthroughTest, AGuestThatNeverReleasesTheDeviceFailsTheSnapshotOnTheTimeoutAndKeepsIt) {
  boot("p3", "acpiphp.disable=1");
  auto t0 = std::chrono::steady_clock::now();
  CliRun r = vmckpt({"snapshot", "p3", "--agent", "required", "--unplug-timeout", "1500"});
  auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(r.code, 6) << r.err;  // timeout
  expectOneLineError(r, "unplug: device_del nic7: the guest did not release it within 1500 ms (no DEVICE_DELETED)");
  EXPECT_GE(took, 1500ms);
  EXPECT_LT(took, 20s);
  expectUntouched("p3", "unplug timeout");
}

TEST_F(PassthroughTest, CreateRefusesMalformedDevicesInOneLine) {
  for (const std::string bad : {"vfio-pci,id=gpu0,host=0000:65:00.0;reboot", "vfio-pci", "e1000e,id=x,bus=pcie.0",
                                "vfio-pci,id=GPU,host=0000:65:00.0"}) {
    CliRun r = vmckpt({"create", "bad", "--memory", "64M", "--kernel", kernel(), "--passthrough", bad});
    EXPECT_EQ(r.code, 2) << bad;
    expectOneLineError(r, "passthrough");
  }
  CliRun pc =
      vmckpt({"create", "bad", "--memory", "64M", "--kernel", kernel(), "--machine", "pc", "--passthrough", kDevice});
  EXPECT_EQ(pc.code, 2);
  expectOneLineError(pc, "passthrough devices need the q35 machine");
  EXPECT_NE(vmckpt({"status", "bad"}).code, 0);
}
