// The guest agent end to end: real guest (TCG), vmckpt-agent in it, and a workload linked
// with libvmckpt (vmckpt-plugin-demo) that prints every event it gets.
#include <algorithm>
#include <fstream>
#include <sstream>
#include <thread>

#include "common/child_process.hpp"
#include "common/strings.hpp"
#include "harness.hpp"

using namespace std::chrono_literals;
using namespace vmckpt;
using vmckpt::test::CliRun;
using vmckpt::test::expectOneLineError;
using vmckpt::test::Json;

namespace {

// "plugin-demo: event X" lines of a console text, in order.
std::vector<std::string> events(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (startsWith(line, "plugin-demo: event ")) out.push_back(line.substr(19));
  }
  return out;
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& e : v) s += (s.empty() ? "" : ",") + e;
  return s;
}

}  // namespace

class AgentTest : public vmckpt::test::VmckptTest {
 protected:
  // Boots the demo workload and waits until the agent answers and the demo registered.
  void bootDemo(const std::string& name, const std::string& demoArgs = "") {
    createGuest(name, "plugindemo", {}, "256M", demoArgs.empty() ? "" : "vmckpt.plugindemo=" + demoArgs);
    ASSERT_EQ(vmckpt({"start", name}).code, 0);
    ASSERT_TRUE(waitForConsole(name, "counter 1")) << console(name);
    auto deadline = std::chrono::steady_clock::now() + 30s;
    for (;;) {
      CliRun info = vmckpt({"agent", name, "info", "--json"});
      if (info.code == 0) {
        bool registered = false;
        Json j = info.json();  // a named value: iterating into a temporary would dangle
        for (const auto& p : j["result"]["processes"]) registered |= p.value("plugin", "") == "demo";
        if (registered) return;
      }
      ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "demo never registered: " << info.out << info.err;
      std::this_thread::sleep_for(300ms);
    }
  }

  std::string sinceMarker(const std::string& name) {
    std::string c = console(name);
    auto pos = c.rfind("[vmckpt: restored from snapshot");
    return pos == std::string::npos ? std::string() : c.substr(pos);
  }
};

TEST_F(AgentTest, EventsArriveInOrderAcrossSnapshotAndRestore) {
  bootDemo("a1");
  CliRun ping = vmckpt({"agent", "a1", "ping", "--json"});
  ASSERT_EQ(ping.code, 0) << ping.err;
  EXPECT_EQ(ping.json()["result"]["api_version"], 2);

  CliRun snap = vmckpt({"snapshot", "a1", "--agent", "required", "--json"});
  ASSERT_EQ(snap.code, 0) << snap.err;
  Json s = snap.json();
  EXPECT_TRUE(s["agent"]["quiesced"].get<bool>());
  EXPECT_GT(s["quiesce_ms"].get<double>(), 0.0);
  std::string plugins = s["agent"]["plugins"].dump();
  EXPECT_NE(plugins.find("demo"), std::string::npos) << plugins;
  EXPECT_NE(plugins.find("fsfreeze"), std::string::npos) << plugins;
  ASSERT_TRUE(waitForConsole("a1", "plugin-demo: event RESUME", 30s)) << console("a1");
  EXPECT_EQ(join(events(console("a1"))), "PRESUSPEND,PRECHECKPOINT,RESUME");

  // Killed and restored: the restored guest got PRESUSPEND and PRECHECKPOINT before the
  // capture, and now RESTART, nothing else.
  ASSERT_EQ(vmckpt({"stop", "a1", "--force"}).code, 0);
  CliRun rest = vmckpt({"restore", "a1", s["id"], "--json"});
  ASSERT_EQ(rest.code, 0) << rest.err;
  EXPECT_TRUE(rest.json()["agent_note"].is_null()) << rest.out;
  auto deadline = std::chrono::steady_clock::now() + 30s;
  while (sinceMarker("a1").find("plugin-demo: state") == std::string::npos && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(100ms);
  EXPECT_EQ(join(events(sinceMarker("a1"))), "RESTART") << sinceMarker("a1");
  EXPECT_NE(sinceMarker("a1").find("plugin-demo: state ok"), std::string::npos) << sinceMarker("a1");
  EXPECT_EQ(sinceMarker("a1").find("state BAD"), std::string::npos);
  EXPECT_EQ(vmckpt({"agent", "a1", "status", "--json"}).json()["result"]["state"], "idle");
}

TEST_F(AgentTest, FailingOrHangingPluginFailsTheSnapshotCleanly) {
  for (std::string mode : {"--fail-presuspend", "--hang-presuspend"}) {
    std::string name = mode == "--fail-presuspend" ? "f1" : "h1";
    bootDemo(name, mode);
    CliRun r = vmckpt({"snapshot", name, "--agent", "required", "--quiesce-timeout", "1500"});
    EXPECT_NE(r.code, 0) << mode;
    expectOneLineError(r, mode == "--fail-presuspend" ? "plugin_failed" : "deadline");
    EXPECT_NE(r.err.find("demo"), std::string::npos) << r.err;
    // The guest runs, everything is thawed and resumed, and no snapshot exists.
    EXPECT_EQ(vmckpt({"status", name, "--json"}).json()["state"], "running");
    EXPECT_EQ(vmckpt({"snapshots", name, "--json"}).json()["snapshots"].size(), 0u);
    int now = lastCounter(name);
    EXPECT_TRUE(waitForConsole(name, cat("counter ", now + 2), 20s)) << console(name);
    CliRun st = vmckpt({"agent", name, "status", "--json"});
    ASSERT_EQ(st.code, 0) << st.err;
    EXPECT_EQ(st.json()["result"]["state"], "idle");
    ASSERT_EQ(vmckpt({"stop", name, "--force"}).code, 0);
  }
}

TEST_F(AgentTest, FsfreezeCapturesAConsistentExt4AndLosesNoAcknowledgedWrite) {
  std::string img = home_ + "/ext4.img";
  {
    std::ofstream f(img);
    f.seekp((64 << 20) - 1);
    f.put('\0');
  }
  auto mk = runCommand({"mkfs.ext4", "-q", "-F", img}, Deadline::in(60s));
  ASSERT_TRUE(mk && mk->status.success()) << (mk ? mk->err : mk.error().message());
  createGuest("w1", "fswriter", {"--disk", img});
  ASSERT_EQ(vmckpt({"start", "w1"}).code, 0);
  ASSERT_TRUE(waitForConsole("w1", "fswriter: ack 5", 60s)) << console("w1");

  // With the agent: fsfreeze froze the disk, so the captured ext4 is clean without a
  // journal replay (no needs_recovery) and passes fsck.
  int ackedBefore = 0;  // acknowledged before the snapshot began: all must survive it
  {
    std::istringstream in(console("w1"));
    std::string line;
    while (std::getline(in, line))
      if (startsWith(line, "fswriter: ack ")) ackedBefore = std::max(ackedBefore, std::atoi(line.c_str() + 14));
  }
  ASSERT_GE(ackedBefore, 5);
  CliRun frozen = vmckpt({"snapshot", "w1", "--agent", "required", "--json"});
  ASSERT_EQ(frozen.code, 0) << frozen.err;
  Json fj = frozen.json();
  EXPECT_NE(fj["agent"]["plugins"].dump().find("fsfreeze"), std::string::npos);
  auto features = [&](const std::string& id) {
    auto d = runCommand({"dumpe2fs", "-h", home_ + "/vms/w1/snapshots/" + id + "/data/disk0.raw"}, Deadline::in(30s));
    return d ? d->out : std::string();
  };
  std::string ff = features(fj["id"]);
  ASSERT_NE(ff.find("Filesystem features:"), std::string::npos) << ff;
  EXPECT_EQ(ff.find("needs_recovery"), std::string::npos) << "frozen capture still needs journal recovery";
  auto fsck = runCommand({"e2fsck", "-fn", home_ + "/vms/w1/snapshots/" + std::string(fj["id"]) + "/data/disk0.raw"},
                         Deadline::in(60s));
  ASSERT_TRUE(fsck);
  EXPECT_EQ(fsck->status.code, 0) << fsck->out << fsck->err;
  // Control: the same writer captured without the agent is mid-journal.
  CliRun loose = vmckpt({"snapshot", "w1", "--agent", "off", "--json"});
  ASSERT_EQ(loose.code, 0) << loose.err;
  EXPECT_NE(features(loose.json()["id"]).find("needs_recovery"), std::string::npos)
      << "the control did not show an unfrozen filesystem; the test above proves nothing";

  // Killed and restored from the frozen snapshot: every write acknowledged before it is there.
  ASSERT_EQ(vmckpt({"stop", "w1", "--force"}).code, 0);
  CliRun r = vmckpt({"restore", "w1", fj["id"], "--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(r.json()["agent_note"].is_null()) << r.out;
  ASSERT_TRUE(waitForConsole("w1", "fswriter: ack", 30s));
  sendConsole("w1", "check");
  auto deadline = std::chrono::steady_clock::now() + 60s;
  while (sinceMarker("w1").find("fswriter: check") == std::string::npos && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(200ms);
  std::string after = sinceMarker("w1");
  auto pos = after.find("fswriter: check ok ");
  ASSERT_NE(pos, std::string::npos) << after.substr(0, 3000);
  EXPECT_GE(std::atoi(after.c_str() + pos + 19), ackedBefore);
  EXPECT_EQ(after.find("write f"), std::string::npos) << "writes failed after the restore (still frozen?)";
}

TEST_F(AgentTest, PolicyWhenNoAgentRuns) {
  createGuest("n1", "counter", {}, "256M", "vmckpt.agent=0");
  ASSERT_EQ(vmckpt({"start", "n1"}).code, 0);
  ASSERT_TRUE(waitForConsole("n1", "counter 1")) << console("n1");
  CliRun req = vmckpt({"snapshot", "n1", "--agent", "required"});
  EXPECT_NE(req.code, 0);
  expectOneLineError(req, "agent");
  EXPECT_EQ(vmckpt({"snapshots", "n1", "--json"}).json()["snapshots"].size(), 0u);
  CliRun autoMode = vmckpt({"snapshot", "n1", "--json"});
  ASSERT_EQ(autoMode.code, 0) << autoMode.err;
  EXPECT_FALSE(autoMode.json()["agent"]["quiesced"].get<bool>());
  EXPECT_FALSE(autoMode.json()["agent"]["note"].is_null());
  CliRun off = vmckpt({"snapshot", "n1", "--agent", "off", "--json"});
  ASSERT_EQ(off.code, 0) << off.err;
  EXPECT_EQ(vmckpt({"status", "n1", "--json"}).json()["state"], "running");
  CliRun ping = vmckpt({"agent", "n1", "ping", "--timeout", "500"});
  EXPECT_NE(ping.code, 0);
  expectOneLineError(ping, "did not answer");
}
