// vmckpt as libvirt's qemu hook, against a private libvirtd (libvirt_harness.hpp): the hook
// logs every call, records the domain's end, and rewrites the domain XML on restore by the
// domain's device map (net=user), which libvirt then runs.
#include <netinet/in.h>
#include <sys/socket.h>

#include <chrono>
#include <sstream>
#include <thread>

#include "common/fs.hpp"
#include "common/strings.hpp"
#include "common/unique_fd.hpp"
#include "libvirt_harness.hpp"

namespace vmckpt::test {
namespace {

using namespace std::chrono_literals;

std::vector<Json> hookLog(const std::string& home) {
  std::vector<Json> out;
  auto text = fs::readFile(home + "/libvirt/hook.log");
  if (!text) return out;
  std::istringstream in(*text);
  for (std::string line; std::getline(in, line);) out.push_back(Json::parse(line, nullptr, false));
  return out;
}

// A UDP port on 127.0.0.1 that was free a moment ago (the system picks it).
int freeUdpPort() {
  UniqueFd fd(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&a), &len) != 0)
    return -1;
  return ntohs(a.sin_port);
}

// The log's "op sub" pairs for one domain, in order.
std::vector<std::string> calls(const std::vector<Json>& log, const std::string& domain) {
  std::vector<std::string> out;
  for (const auto& j : log)
    if (j.is_object() && j.value("domain", "") == domain) out.push_back(cat(j.value("op", ""), " ", j.value("sub", "")));
  return out;
}

// Whether `want` appears in `got` in this order (other calls may come between).
bool inOrder(const std::vector<std::string>& got, const std::vector<std::string>& want) {
  size_t i = 0;
  for (const auto& g : got)
    if (i < want.size() && g == want[i]) ++i;
  return i == want.size();
}

TEST_F(LibvirtTest, RestoreHookRewritesTheDomainByItsDeviceMap) {
  CliRun inst = vmckpt({"libvirt-hook", "install", "--hooks-dir", hooksDir(), "--json"});
  ASSERT_EQ(inst.code, 0) << inst.err;
  EXPECT_NE(inst.json()["note"].get<std::string>().find("restart"), std::string::npos);
  CliRun map = vmckpt({"libvirt-hook", "map", "lvt1", "--map", "net=user"});
  ASSERT_EQ(map.code, 0) << map.err;
  if (auto why = startDaemons()) GTEST_SKIP() << "private libvirtd unavailable: " << *why;

  // A UDP socket backend needs nothing on the host (no network, bridge or tap); the rewrite
  // keeps mac and model (libvirt's ABI check) and swaps the backend for user networking.
  int remote = freeUdpPort(), local = freeUdpPort();
  ASSERT_GT(remote, 0);
  ASSERT_GT(local, 0);
  defineDomain("lvt1", cat("    <interface type='udp'><mac address='52:54:00:00:00:01'/>",
                           "<source address='127.0.0.1' port='", remote, "'><local address='127.0.0.1' port='", local,
                           "'/></source><model type='e1000'/></interface>\n"));
  CliRun start = virsh({"start", "lvt1"});
  ASSERT_EQ(start.code, 0) << start.err;
  std::string saved = dir_ + "/lvt1.save";
  CliRun save = virsh({"save", "lvt1", saved});
  ASSERT_EQ(save.code, 0) << save.err;
  CliRun restore = virsh({"restore", saved});
  ASSERT_EQ(restore.code, 0) << restore.err;
  CliRun state = virsh({"domstate", "lvt1"});
  EXPECT_EQ(trim(state.out), "running") << state.err;
  CliRun xml = virsh({"dumpxml", "lvt1"});
  ASSERT_EQ(xml.code, 0) << xml.err;
  EXPECT_NE(xml.out.find("<interface type='user'>"), std::string::npos) << xml.out;
  EXPECT_NE(xml.out.find("52:54:00:00:00:01"), std::string::npos);
  EXPECT_NE(xml.out.find("<model type='e1000'/>"), std::string::npos);
  EXPECT_EQ(xml.out.find("type='udp'"), std::string::npos) << "the udp backend is gone";
  CliRun destroy = virsh({"destroy", "lvt1"});
  ASSERT_EQ(destroy.code, 0) << destroy.err;

  auto log = hookLog(home_);
  auto got = calls(log, "lvt1");
  EXPECT_TRUE(inOrder(got, {"prepare begin", "start begin", "started begin", "stopped end", "release end",
                            "restore begin", "prepare begin", "start begin", "started begin", "stopped end",
                            "release end"}))
      << join(got, ", ");
  bool sawRestore = false;
  for (const auto& j : log)
    if (j.value("op", "") == "restore") {
      sawRestore = true;
      EXPECT_EQ(j.value("extra", ""), "-");
      EXPECT_EQ(j["changes"].size(), 1u) << j.dump();
      EXPECT_FALSE(j.contains("error")) << j.dump();
    }
  EXPECT_TRUE(sawRestore);
  auto record = fs::readFile(home_ + "/libvirt/domains/lvt1.json");
  ASSERT_TRUE(record);
  Json r = Json::parse(*record);
  EXPECT_TRUE(r["ended"].is_string());
  EXPECT_EQ(r["device_map"]["net"], "user");

  CliRun un = vmckpt({"libvirt-hook", "uninstall", "--hooks-dir", hooksDir()});
  EXPECT_EQ(un.code, 0) << un.err;
}

// Polls the domain's serial log for `text` (after `from`), up to `timeout`.
bool waitSerial(const std::string& log, const std::string& text, std::chrono::seconds timeout, size_t from = 0) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    auto t = fs::readFile(log);
    if (t && t->size() > from && t->find(text, from) != std::string::npos) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  return false;
}

int lastCounterIn(const std::string& text) {
  std::istringstream in(text);
  int last = 0;
  for (std::string line; std::getline(in, line);)
    if (startsWith(line, "counter ")) last = std::max(last, std::atoi(line.c_str() + 8));
  return last;
}

int firstCounterIn(const std::string& text) {
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (startsWith(line, "counter ")) return std::atoi(line.c_str() + 8);
  return 0;
}

// The proof: a libvirt domain snapshotted by vmckpt (live path while its memory is
// anonymous, fast path after libvirt-prepare), destroyed, and restored by vmckpt carries on
// counting with its memory pattern intact, under the device map's rewrite; the errors for a
// daemon that is not there, an unknown domain and a missing agent channel are one line each.
TEST_F(LibvirtTest, SnapshotDestroyRestoreBringsTheDomainBackWithItsMemory) {
  CliRun down = vmckptBeside({"snapshot", "--connect", uri(), "lvs"});
  expectOneLineError(down, "libvirtd is not running");
  ASSERT_EQ(vmckptBeside({"libvirt-hook", "install", "--hooks-dir", hooksDir()}).code, 0);
  ASSERT_EQ(vmckptBeside({"libvirt-hook", "map", "lvs", "--map", "net=user"}).code, 0);
  if (auto why = startDaemons()) GTEST_SKIP() << "private libvirtd unavailable: " << *why;
  expectOneLineError(vmckptBeside({"snapshot", "--connect", uri(), "nosuch"}), "no domain named 'nosuch'");

  int remote = freeUdpPort(), local = freeUdpPort();
  defineDomain("lvs", cat("    <interface type='udp'><mac address='52:54:00:00:00:02'/>",
                          "<source address='127.0.0.1' port='", remote, "'><local address='127.0.0.1' port='", local,
                          "'/></source><model type='e1000'/></interface>\n"),
               "vmckpt.workload=memtest vmckpt.memtest=--mib,48");
  const std::string log = serialLog("lvs");
  ASSERT_EQ(virsh({"start", "lvs"}).code, 0);
  ASSERT_TRUE(waitSerial(log, "memtest: filled", 120s)) << *fs::readFile(log);

  // No agent channel yet: auto goes on without it, required refuses. Memory is anonymous:
  // a live snapshot.
  expectOneLineError(vmckptBeside({"snapshot", "--connect", uri(), "lvs", "--agent", "required"}), "no vmckpt agent channel");
  CliRun live = vmckptBeside({"snapshot", "--connect", uri(), "lvs", "--json"});
  ASSERT_EQ(live.code, 0) << live.err;
  Json lj = live.json();
  EXPECT_EQ(lj["ram"], "stream");
  EXPECT_FALSE(lj["agent"]["quiesced"].get<bool>());
  const std::string liveId = lj["id"];
  EXPECT_EQ(trim(virsh({"domstate", "lvs"}).out), "running");
  ASSERT_EQ(virsh({"destroy", "lvs"}).code, 0);

  // libvirt-prepare shows its diff, and changes the domain only with --apply.
  CliRun show = vmckptBeside({"libvirt-prepare", "--connect", uri(), "lvs"});
  ASSERT_EQ(show.code, 0) << show.err;
  EXPECT_NE(show.out.find("+    <source type='file'/>"), std::string::npos) << show.out;
  EXPECT_NE(show.out.find("org.vmckpt.agent.0"), std::string::npos) << show.out;
  EXPECT_EQ(virsh({"dumpxml", "lvs"}).out.find("org.vmckpt.agent.0"), std::string::npos);
  ASSERT_EQ(vmckptBeside({"libvirt-prepare", "--connect", uri(), "lvs", "--apply"}).code, 0);
  std::string prepared = virsh({"dumpxml", "lvs"}).out;
  EXPECT_NE(prepared.find("<access mode='shared'/>"), std::string::npos) << prepared;
  EXPECT_NE(prepared.find("org.vmckpt.agent.0"), std::string::npos) << prepared;
  CliRun again = vmckptBeside({"libvirt-prepare", "--connect", uri(), "lvs", "--json"});
  EXPECT_TRUE(again.json()["changes"].empty()) << again.out;

  // Fast path with the agent quiesced.
  ASSERT_EQ(virsh({"start", "lvs"}).code, 0);
  ASSERT_TRUE(waitSerial(log, "memtest: filled", 120s)) << *fs::readFile(log);
  ASSERT_TRUE(waitSerial(log, "counter 3", 60s));
  CliRun fast = vmckptBeside({"snapshot", "--connect", uri(), "lvs", "--agent", "required", "--tag", "prepared", "--json"});
  ASSERT_EQ(fast.code, 0) << fast.err;
  Json fj = fast.json();
  EXPECT_EQ(fj["ram"], "file");
  EXPECT_TRUE(fj["agent"]["quiesced"].get<bool>());
  std::printf("libvirt fast-path snapshot: pause %.1f ms, total %.0f ms, %s store\n", fj["pause_ms"].get<double>(),
              fj["total_ms"].get<double>(), fj["store_mode"].get<std::string>().c_str());
  const int atSnapshot = lastCounterIn(*fs::readFile(log));
  ASSERT_TRUE(waitSerial(log, cat("counter ", atSnapshot + 3), 30s)) << "the guest runs on after the snapshot";
  ASSERT_EQ(virsh({"destroy", "lvs"}).code, 0);

  // A running domain is not reverted without --force.
  CliRun snaps = vmckptBeside({"snapshots", "--connect", uri(), "lvs", "--json"});
  ASSERT_EQ(snaps.code, 0) << snaps.err;
  EXPECT_EQ(snaps.json().size(), 2u);
  EXPECT_EQ(vmckptBeside({"verify", "--connect", uri(), "lvs", "prepared"}).code, 0);

  CliRun back = vmckptBeside({"restore", "--connect", uri(), "lvs", "prepared", "--json"});
  ASSERT_EQ(back.code, 0) << back.err;
  EXPECT_EQ(back.json()["xml_changes"].size(), 1u) << back.out;
  EXPECT_EQ(trim(virsh({"domstate", "lvs"}).out), "running");
  ASSERT_TRUE(waitSerial(log, "counter", 30s));
  ASSERT_TRUE(waitSerial(log, cat("counter ", atSnapshot + 2), 30s)) << *fs::readFile(log);
  // QEMU's log starts anew with the restored QEMU: the guest counts on from the snapshot
  // instead of booting (a fresh boot would print "counter 1" after "memtest: filled").
  std::string after = *fs::readFile(log);
  EXPECT_EQ(after.find("memtest: filled"), std::string::npos) << after;
  EXPECT_GE(firstCounterIn(after), atSnapshot - 1) << after;
  EXPECT_LE(firstCounterIn(after), atSnapshot + 1) << after;
  sendSerial("lvs", "verify");
  ASSERT_TRUE(waitSerial(log, "memtest: verify", 60s)) << *fs::readFile(log);
  EXPECT_TRUE(waitSerial(log, "memtest: verify ok", 1s)) << *fs::readFile(log);
  std::string restored = virsh({"dumpxml", "lvs"}).out;
  EXPECT_NE(restored.find("<interface type='user'>"), std::string::npos) << "the device map's rewrite: " << restored;

  // Running: refused without --force; the live snapshot (memory in the stream) comes back too.
  expectOneLineError(vmckptBeside({"restore", "--connect", uri(), "lvs", liveId}), "--force");
  CliRun liveBack = vmckptBeside({"restore", "--connect", uri(), "lvs", liveId, "--force"});
  ASSERT_EQ(liveBack.code, 0) << liveBack.err;
  ASSERT_TRUE(waitSerial(log, "counter", 30s));
  sendSerial("lvs", "verify");
  ASSERT_TRUE(waitSerial(log, "memtest: verify", 60s)) << *fs::readFile(log);
  EXPECT_TRUE(waitSerial(log, "memtest: verify ok", 1s)) << *fs::readFile(log);
  EXPECT_EQ(virsh({"dumpxml", "lvs"}).out.find("org.vmckpt.agent.0"), std::string::npos)
      << "the live snapshot's definition is the one before libvirt-prepare";

  auto got = calls(hookLog(home_), "lvs");
  EXPECT_TRUE(inOrder(got, {"prepare begin", "start begin", "started begin", "stopped end", "release end"}))
      << join(got, ", ");
  EXPECT_EQ(vmckptBeside({"libvirt-hook", "uninstall", "--hooks-dir", hooksDir()}).code, 0);
}

}  // namespace
}  // namespace vmckpt::test
