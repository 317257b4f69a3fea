#include "vmm/libvirt/hook.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <sstream>

#include "common/fs.hpp"
#include "common/temp_dir.hpp"
#include "vmm/libvirt/hook_install.hpp"

namespace vmckpt::vmm::libvirt {
namespace {

const char* kXml = "<domain type='qemu'><name>d1</name><devices>"
                   "<interface type='user'><mac address='52:54:00:00:00:01'/><model type='e1000'/></interface>"
                   "</devices></domain>";

std::vector<Json> logLines(const std::string& home) {
  std::vector<Json> out;
  auto text = fs::readFile(hookLogPath(home));
  if (!text) return out;
  std::istringstream in(*text);
  for (std::string line; std::getline(in, line);) out.push_back(Json::parse(line));
  return out;
}

TEST(LibvirtHook, LogsEveryCallAndRewritesOnlyRestoreAndMigrateWithAMap) {
  TempDir t;
  auto plain = runHook(t.path(), {"d1", "restore", "begin", "-"}, kXml);
  ASSERT_TRUE(plain) << plain.error().message();
  EXPECT_FALSE(*plain) << "no map: libvirt keeps its XML";

  ASSERT_TRUE(saveDomainDeviceMap(t.path(), "d1", {{"net", "user"}}));
  auto start = runHook(t.path(), {"d1", "start", "begin", "-"}, kXml);
  ASSERT_TRUE(start);
  EXPECT_FALSE(*start);
  auto restore = runHook(t.path(), {"d1", "restore", "begin", "-"}, kXml);
  ASSERT_TRUE(restore) << restore.error().message();
  ASSERT_TRUE(*restore);
  EXPECT_NE((*restore)->find("<interface type=\"user\">"), std::string::npos);
  auto migrate = runHook(t.path(), {"d1", "migrate", "begin", "-"}, kXml);
  ASSERT_TRUE(migrate && *migrate);

  ASSERT_TRUE(runHook(t.path(), {"d1", "release", "end", "-"}, ""));
  auto lines = logLines(t.path());
  ASSERT_EQ(lines.size(), 5u);
  EXPECT_EQ(lines[2]["op"], "restore");
  EXPECT_EQ(lines[2]["sub"], "begin");
  EXPECT_EQ(lines[2]["extra"], "-");
  EXPECT_EQ(lines[2]["changes"].size(), 1u);
  EXPECT_TRUE(lines[4]["time"].is_string());
  auto record = Json::parse(*fs::readFile(domainRecordPath(t.path(), "d1")));
  EXPECT_TRUE(record["ended"].is_string());
  EXPECT_EQ(record["device_map"]["net"], "user") << "release keeps the map";
  struct stat st{};
  ASSERT_EQ(::stat((t.path() + "/libvirt").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
}

TEST(LibvirtHook, BadRewriteFailsRestoreButNotOtherOps) {
  TempDir t;
  ASSERT_TRUE(saveDomainDeviceMap(t.path(), "d1", {{"gpu", "a100"}}));
  auto r = runHook(t.path(), {"d1", "restore", "begin", "-"}, kXml);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("rewrite domain d1 for restore"), std::string::npos) << r.error().message();
  auto broken = runHook(t.path(), {"d1", "migrate", "begin", "-"}, "<domain>");
  ASSERT_FALSE(broken);
  EXPECT_TRUE(runHook(t.path(), {"d1", "prepare", "begin", "-"}, "<domain>"));
  auto lines = logLines(t.path());
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_TRUE(lines[0]["error"].is_string());
}

TEST(LibvirtHook, DomainNamesAreValidatedBeforeUseInAPath) {
  TempDir t;
  EXPECT_FALSE(saveDomainDeviceMap(t.path(), "../evil", {{"net", "user"}}));
  EXPECT_FALSE(loadDomainDeviceMap(t.path(), "a/b"));
  for (std::string_view good : {"a", "job-1.x_2", "A", "9"}) EXPECT_TRUE(validateDomainName(good)) << good;
  EXPECT_TRUE(validateDomainName(std::string(64, 'a')));
  EXPECT_FALSE(validateDomainName(std::string(65, 'a')));
  for (std::string_view bad : std::initializer_list<std::string_view>{
           "", ".", "..", ".hidden", "-rf", "a/b", "../x", "a b", "a\nb", "ä", "a:b", "a*", std::string_view("a\0b", 3)})
    EXPECT_FALSE(validateDomainName(bad)) << bad;
  // libvirt may send such a name: logged, nothing rewritten, nothing written beside the log.
  auto r = runHook(t.path(), {"../evil", "restore", "begin", "-"}, kXml);
  ASSERT_TRUE(r);
  EXPECT_FALSE(*r);
  ASSERT_TRUE(runHook(t.path(), {"../evil", "release", "end", "-"}, ""));
  EXPECT_FALSE(fs::exists(t.path() + "/libvirt/evil.json"));
  EXPECT_EQ(logLines(t.path()).size(), 2u);
}

TEST(LibvirtHook, InstallWritesAnExecutableScriptAndUninstallRemovesOnlyOurs) {
  TempDir t;
  std::string dir = t.path() + "/hooks/qemu.d";
  auto path = installHook(dir, "/opt/vmckpt bin/vmckpt", "/var/lib/vmckpt");
  ASSERT_TRUE(path) << path.error().message();
  struct stat st{};
  ASSERT_EQ(::stat(path->c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0755u);
  auto text = *fs::readFile(*path);
  EXPECT_NE(text.find("exec '/opt/vmckpt bin/vmckpt' libvirt-hook run -- \"$@\""), std::string::npos) << text;
  EXPECT_NE(text.find("VMCKPT_HOME=/var/lib/vmckpt\n"), std::string::npos) << text;
  EXPECT_FALSE(installHook(dir, "relative/vmckpt", "/h"));
  EXPECT_FALSE(installHook(dir, "/bin/vmckpt", "/h\nrm -rf /"));
  ASSERT_TRUE(uninstallHook(dir));
  EXPECT_FALSE(fs::exists(*path));
  EXPECT_EQ(uninstallHook(dir).error().code(), Errc::notFound);
  ASSERT_TRUE(fs::writeFileAtomic(*path, "#!/bin/sh\necho theirs\n", 0755));
  EXPECT_EQ(uninstallHook(dir).error().code(), Errc::wrongState);
  EXPECT_TRUE(fs::exists(*path));
}

}  // namespace
}  // namespace vmckpt::vmm::libvirt
