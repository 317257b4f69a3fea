// vmckpt as libvirt's qemu hook, against a private libvirtd (libvirt_harness.hpp): the hook
// logs every call, records the domain's end, and rewrites the domain XML on restore by the
// domain's device map (net=user), which libvirt then runs.
#include <netinet/in.h>
#include <sys/socket.h>

#include <sstream>

#include "common/fs.hpp"
#include "common/strings.hpp"
#include "common/unique_fd.hpp"
#include "libvirt_harness.hpp"

namespace vmckpt::test {
namespace {

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

}  // namespace
}  // namespace vmckpt::test
