// Store permissions: the store and every VM and snapshot directory 0700, QEMU's sockets,
// pid file and console log 0600, every snapshot file (RAM included) 0600, and a second
// Unix user can read none of it, neither directly nor through vmckpt.
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "common/child_process.hpp"
#include "common/strings.hpp"
#include "harness.hpp"

using namespace vmckpt;
using namespace vmckpt::test;
using namespace std::chrono_literals;

namespace {

constexpr const char* kOtherUser = "vmckpt-test-other";

mode_t modeOf(const std::string& path) {
  struct stat st{};
  if (::lstat(path.c_str(), &st) != 0) return 0;
  return st.st_mode & 07777;
}

CommandOutput runAs(const std::vector<std::string>& argv) {
  std::vector<std::string> full = {"runuser", "-u", kOtherUser, "--"};
  full.insert(full.end(), argv.begin(), argv.end());
  auto r = runCommand(full, Deadline::in(30s));
  EXPECT_TRUE(r) << (r ? "" : r.error().message());
  return r ? *r : CommandOutput{};
}

}  // namespace

class PermissionsTest : public VmckptTest {
 protected:
  void SetUp() override {
    VmckptTest::SetUp();
    if (::geteuid() != 0) GTEST_SKIP() << "needs root to add a second user";
    if (!findExecutable("runuser") || !findExecutable("useradd"))
      GTEST_SKIP() << "runuser/useradd (util-linux, passwd) not installed";
    if (::getpwnam(kOtherUser) == nullptr) {
      auto r = runCommand({"useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", kOtherUser},
                          Deadline::in(30s));
      ASSERT_TRUE(r && r->status.success()) << (r ? r->err : r.error().message());
      createdUser_ = true;
    }
  }
  void TearDown() override {
    VmckptTest::TearDown();
    if (createdUser_) (void)runCommand({"userdel", kOtherUser}, Deadline::in(30s));
  }
  bool createdUser_ = false;
};

TEST_F(PermissionsTest, StoreIsPrivateAndASecondUserReadsNothing) {
  createGuest("p1", "counter");
  ASSERT_EQ(vmckpt({"start", "p1"}).code, 0);
  ASSERT_TRUE(waitForConsole("p1", "counter 1")) << console("p1");
  CliRun snap = vmckpt({"snapshot", "p1", "--json"});
  ASSERT_EQ(snap.code, 0) << snap.err;
  const std::string id = snap.json()["id"];
  const std::string vm = home_ + "/vms/p1", sdir = vm + "/snapshots/" + id;

  for (const auto& d : {home_, home_ + "/vms", vm, vm + "/live", vm + "/run", vm + "/snapshots", sdir, sdir + "/data"})
    EXPECT_EQ(modeOf(d), 0700u) << d;
  for (const auto& f : {"qmp.sock", "console.sock", "agent.sock", "qemu.pid", "serial.log"})
    EXPECT_EQ(modeOf(vm + "/run/" + f), 0600u) << f;
  EXPECT_EQ(modeOf(vm + "/live/mem") & 077, 0u) << "the guest's RAM file is readable by others";
  int files = 0;
  for (const auto& e : std::filesystem::recursive_directory_iterator(sdir)) {
    if (!e.is_regular_file()) continue;
    ++files;
    EXPECT_EQ(modeOf(e.path().string()) & 077, 0u) << e.path();
  }
  EXPECT_GE(files, 4) << "manifest, devstate, mem, kernel at least";

  // The other user, directly and through vmckpt.
  for (const auto& f : {sdir + "/data/mem", sdir + "/data/devstate", sdir + "/manifest.json", vm + "/live/mem"}) {
    CommandOutput r = runAs({"head", "-c", "1", f});
    EXPECT_FALSE(r.status.success()) << "user " << kOtherUser << " read " << f;
    EXPECT_NE(r.err.find("Permission denied"), std::string::npos) << r.err;
  }
  CommandOutput probe = runAs({"test", "-x", VMCKPT_BIN});
  if (probe.status.success()) {
    CommandOutput r = runAs({VMCKPT_BIN, "--home", home_, "snapshots", "p1"});
    EXPECT_FALSE(r.status.success()) << r.out;
    EXPECT_NE(r.err.find("Permission denied"), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  } else {
    std::cout << "[ NOTE ] " << kOtherUser << " cannot execute " << VMCKPT_BIN
              << " (build directory not world-executable); the vmckpt-as-other-user check did not run\n";
  }
}
