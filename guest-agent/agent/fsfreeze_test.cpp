// Unit tests of fsfreeze's choice of filesystems. Nothing is frozen here: freezing a
// filesystem of the machine that runs the tests is the last thing a test should do.
#include "fsfreeze.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>

#include "common/temp_dir.hpp"

using namespace vmckpt::agent;

namespace {

const char* kMounts =
    "rootfs / rootfs rw,size=118000k 0 0\n"
    "proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0\n"
    "sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0\n"
    "devtmpfs /dev devtmpfs rw,relatime,size=10k 0 0\n"
    "tmpfs /run tmpfs rw,relatime,mode=755 0 0\n"
    "/dev/vda /mnt/data ext4 rw,relatime 0 0\n"
    "/dev/vdb /mnt/ro xfs ro,relatime 0 0\n"
    "/dev/vdc /mnt/with\\040space ext4 rw 0 0\n"
    "server:/export /nfs nfs rw 0 0\n";

TEST(FsFreeze, ParsesMounts) {
  auto m = parseMounts(kMounts);
  ASSERT_EQ(m.size(), 9u);
  EXPECT_EQ(m[5].source, "/dev/vda");
  EXPECT_EQ(m[5].target, "/mnt/data");
  EXPECT_EQ(m[5].fstype, "ext4");
  EXPECT_TRUE(m[5].readWrite());
  EXPECT_FALSE(m[6].readWrite());
  EXPECT_EQ(m[7].target, "/mnt/with space");
}

TEST(FsFreeze, CandidatesAreWritableDevBackedMounts) {
  std::vector<std::string> picked;
  for (const auto& m : parseMounts(kMounts))
    if (isFreezeCandidate(m)) picked.push_back(m.target);
  EXPECT_EQ(picked, (std::vector<std::string>{"/mnt/data", "/mnt/with space"}));
}

TEST(FsFreeze, TargetsNeedABlockDeviceAndAreOnePerFilesystem) {
  vmckpt::TempDir dir("vmckpt-fsfreeze");
  std::string mounts = dir.path() + "/mounts";
  std::string text = "/dev/null /tmp ext4 rw 0 0\n";  // a character device: never
  // Any block device of this machine, listed twice on the same directory: one target.
  std::string blk;
  for (const char* c : {"/dev/loop0", "/dev/vda", "/dev/sda", "/dev/nvme0n1", "/dev/ram0"}) {
    struct stat st{};
    if (::stat(c, &st) == 0 && S_ISBLK(st.st_mode)) {
      blk = c;
      break;
    }
  }
  if (!blk.empty()) text += blk + " " + dir.path() + " ext4 rw 0 0\n" + blk + " " + dir.path() + " ext4 rw 0 0\n";
  std::ofstream(mounts) << text;
  auto t = freezeTargets(mounts);
  ASSERT_TRUE(t.has_value()) << t.error();
  if (blk.empty()) {
    EXPECT_TRUE(t->empty());
    GTEST_SKIP() << "no block device here to check the positive case";
  }
  ASSERT_EQ(t->size(), 1u);
  EXPECT_EQ((*t)[0].mountPoint, dir.path());
  EXPECT_EQ((*t)[0].source, blk);
}

TEST(FsFreeze, MissingMountsFileIsAnError) {
  auto t = freezeTargets("/nonexistent/mounts");
  ASSERT_FALSE(t.has_value());
  EXPECT_NE(t.error().find("/nonexistent/mounts"), std::string::npos);
}

TEST(FsFreeze, EmptyJobFinishes) {
  auto job = FreezeJob::start({});
  ASSERT_TRUE(job.has_value());
  auto out = (*job)->take();
  EXPECT_TRUE(out.frozen.empty());
  EXPECT_TRUE(out.error.empty());
  EXPECT_TRUE((*job)->finished());
}

}  // namespace
