// The CUDA bookkeeping that needs no driver: GPU UUIDs, the device map's gpu value and
// the scan for NVIDIA device files (against a /proc laid out in a temporary directory).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>

#include "common/temp_dir.hpp"
#include "gpu_uuid.hpp"
#include "nvidia_fds.hpp"

using namespace vmckpt;
using namespace vmckpt::cuda;

TEST(GpuUuid, RoundTripsTheFormNvidiaSmiPrints) {
  const std::string s = "GPU-abad7602-5de6-345b-691c-8071996c13fb";
  auto u = parseGpuUuid(s);
  ASSERT_TRUE(u.has_value());
  EXPECT_EQ((*u)[0], 0xab);
  EXPECT_EQ((*u)[15], 0xfb);
  EXPECT_EQ(formatGpuUuid(*u), s);
  EXPECT_EQ(formatGpuUuid(*parseGpuUuid("GPU-ABAD7602-5DE6-345B-691C-8071996C13FB")), s);
}

TEST(GpuUuid, RefusesAnythingElse) {
  for (const char* bad : {"", "GPU-", "abad7602-5de6-345b-691c-8071996c13fb", "GPU-abad7602-5de6-345b-691c-8071996c13f",
                          "GPU-abad7602-5de6-345b-691c-8071996c13fb0", "GPU-abad76025de6-345b-691c-8071996c13fb",
                          "GPU-abad7602-5de6-345b-691c-8071996c13fg", "MIG-abad7602-5de6-345b-691c-8071996c13fb"})
    EXPECT_FALSE(parseGpuUuid(bad).has_value()) << bad;
}

TEST(GpuTarget, SameNoneOrOneGpu) {
  EXPECT_EQ(parseGpuTarget("")->kind, GpuTarget::Kind::same);
  EXPECT_EQ(parseGpuTarget("same")->kind, GpuTarget::Kind::same);
  EXPECT_EQ(parseGpuTarget("none")->kind, GpuTarget::Kind::none);
  auto t = parseGpuTarget("GPU-abad7602-5de6-345b-691c-8071996c13fb");
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->kind, GpuTarget::Kind::uuid);
  EXPECT_EQ(formatGpuUuid(t->uuid), "GPU-abad7602-5de6-345b-691c-8071996c13fb");
  auto bad = parseGpuTarget("0000:65:00.0");
  ASSERT_FALSE(bad.has_value());
  EXPECT_NE(bad.error().message().find("want same, none or a GPU UUID"), std::string::npos);
}

namespace {
// A process directory under a fake /proc: comm and fd symlinks to the given targets.
void fakeProcess(const std::string& root, const std::string& pid, const std::string& comm,
                 const std::vector<std::string>& targets) {
  std::string dir = root + "/" + pid;
  ASSERT_EQ(::mkdir(dir.c_str(), 0755), 0);
  ASSERT_EQ(::mkdir((dir + "/fd").c_str(), 0755), 0);
  std::ofstream(dir + "/comm") << comm << "\n";
  for (size_t i = 0; i < targets.size(); ++i)
    ASSERT_EQ(::symlink(targets[i].c_str(), (dir + "/fd/" + std::to_string(i)).c_str()), 0);
}
}  // namespace

TEST(NvidiaHolders, FindsEveryHolderOnceInPidOrder) {
  TempDir tmp("vmckpt-cuda-proc");
  ASSERT_FALSE(tmp.path().empty());
  const std::string root = tmp.path();
  fakeProcess(root, "900", "trainer", {"/dev/null", "/dev/nvidiactl", "/dev/nvidia0", "/dev/nvidia0", "/dev/nvidia-uvm"});
  fakeProcess(root, "31", "python3", {"/dev/nvidia0"});
  fakeProcess(root, "77", "bash", {"/dev/pts/0", "/tmp/x"});
  fakeProcess(root, "500", "agent", {"/dev/nvidiactl"});  // excluded below, as the agent excludes itself
  ASSERT_EQ(::mkdir((root + "/sys").c_str(), 0755), 0);   // not a pid
  auto h = findNvidiaHolders(root, 500);
  ASSERT_EQ(h.size(), 2u);
  EXPECT_EQ(h[0].pid, 31);
  EXPECT_EQ(h[0].comm, "python3");
  EXPECT_EQ(h[1].pid, 900);
  EXPECT_EQ(h[1].files, (std::vector<std::string>{"/dev/nvidia-uvm", "/dev/nvidia0", "/dev/nvidiactl"}));
  EXPECT_EQ(describeHolder(h[1]), "900 (trainer: /dev/nvidia-uvm, /dev/nvidia0, /dev/nvidiactl)");
  EXPECT_EQ(nvidiaFilesOf(31, root), std::vector<std::string>{"/dev/nvidia0"});
  EXPECT_TRUE(nvidiaFilesOf(77, root).empty());
  EXPECT_TRUE(nvidiaFilesOf(12345, root).empty());  // gone
}

TEST(NvidiaHolders, ThisProcessHoldsNone) {
  EXPECT_TRUE(nvidiaFilesOf(::getpid()).empty());
  for (const auto& h : findNvidiaHolders()) EXPECT_NE(h.pid, ::getpid());
}
