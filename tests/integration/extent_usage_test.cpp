// Extent accounting on real filesystems: a reflinked clone shares everything but what
// was overwritten; a copy shares nothing.
#include "vmm/store/extent_usage.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include "common/fs.hpp"
#include "common/strings.hpp"
#include "common/unique_fd.hpp"
#include "loop_fs.hpp"

namespace vmckpt::test {
namespace {

using vmm::store::Extent;
using vmm::store::ExtentMap;
using vmm::store::exclusiveBytes;
using vmm::store::mapExtents;
using vmm::store::overlapBytes;

constexpr std::uint64_t kMiB = 1 << 20;
constexpr std::uint64_t kFileBytes = 64 * kMiB;
constexpr std::uint64_t kRewriteBytes = 8 * kMiB;
constexpr std::uint64_t kRewriteAt = 20 * kMiB;
// Large enough for mkfs.xfs (300 MiB minimum); sparse, so it costs only what is written.
constexpr std::uint64_t kLoopBytes = 512 * kMiB;

// Writes `len` random bytes at `offset` (creating the file if needed) and fsyncs.
void writeRandom(const std::string& path, std::uint64_t offset, std::uint64_t len, std::uint64_t seed) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
  ASSERT_TRUE(fd) << "open " << path << ": " << std::strerror(errno);
  std::mt19937_64 rng(seed);
  std::vector<std::uint64_t> chunk(kMiB / sizeof(std::uint64_t));
  for (std::uint64_t done = 0; done < len; done += kMiB) {
    for (auto& w : chunk) w = rng();
    size_t n = static_cast<size_t>(std::min<std::uint64_t>(kMiB, len - done));
    ASSERT_EQ(::pwrite(fd.get(), chunk.data(), n, static_cast<off_t>(offset + done)), static_cast<ssize_t>(n))
        << "pwrite " << path << ": " << std::strerror(errno);
  }
  ASSERT_EQ(::fsync(fd.get()), 0) << "fsync " << path << ": " << std::strerror(errno);
}

// A byte-for-byte copy through user space: never shares extents, whatever the filesystem.
void plainCopy(const std::string& src, const std::string& dst) {
  auto content = fs::readFile(src, kFileBytes + 1);
  ASSERT_TRUE(content) << content.error().message();
  UniqueFd fd(::open(dst.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  ASSERT_TRUE(fd) << "open " << dst << ": " << std::strerror(errno);
  ASSERT_EQ(::write(fd.get(), content->data(), content->size()), static_cast<ssize_t>(content->size()));
  ASSERT_EQ(::fsync(fd.get()), 0);
}

ExtentMap mapOrFail(const std::vector<std::string>& files) {
  auto m = mapExtents(files);
  EXPECT_TRUE(m) << m.error().message();
  return m ? *m : ExtentMap();
}

std::string mib(std::uint64_t bytes) { return cat(static_cast<double>(bytes) / kMiB, " MiB"); }

}  // namespace

TEST(ExtentUsage, MergesRangesAndMeasuresOverlap) {
  // Unsorted, overlapping, touching and empty ranges collapse into [0,30) and [40,50).
  auto a = ExtentMap::fromExtents({{20, 10}, {0, 10}, {5, 10}, {15, 0}, {40, 10}, {10, 10}});
  EXPECT_EQ(a.extents(), (std::vector<Extent>{{0, 30}, {40, 10}}));
  EXPECT_EQ(a.totalBytes(), 40u);

  auto b = ExtentMap::fromExtents({{25, 20}, {48, 100}});  // [25,45) and [48,148)
  EXPECT_EQ(overlapBytes(a, b), 5u + 5u + 2u);
  EXPECT_EQ(overlapBytes(b, a), overlapBytes(a, b));
  EXPECT_EQ(exclusiveBytes(a, b), 40u - 12u);
  EXPECT_EQ(overlapBytes(a, ExtentMap()), 0u);
  EXPECT_EQ(overlapBytes(a, a), a.totalBytes());
}

TEST(ExtentUsage, MissingFileIsNotFound) {
  auto m = mapExtents({"/nonexistent/vmckpt-extent-usage"});
  ASSERT_FALSE(m);
  EXPECT_EQ(m.error().code(), Errc::notFound);
}

class ExtentUsageOnReflinkFs : public ::testing::TestWithParam<std::string> {};

TEST_P(ExtentUsageOnReflinkFs, CloneSharesAllButTheRewrite) {
  const std::string& type = GetParam();
  if (auto why = LoopFs::unavailable(type)) GTEST_SKIP() << *why;
  auto lfs = LoopFs::create(type, kLoopBytes);
  ASSERT_TRUE(lfs) << lfs.error().message();
  const std::string dir = (*lfs)->mountPoint();
  const std::string orig = dir + "/orig", clone = dir + "/clone", copy = dir + "/copy";

  ASSERT_NO_FATAL_FAILURE(writeRandom(orig, 0, kFileBytes, 1));
  ExtentMap o = mapOrFail({orig});
  EXPECT_EQ(o.totalBytes(), kFileBytes);
  EXPECT_EQ(o.unmappedBytes(), 0u);

  // A fresh clone shares every byte.
  ASSERT_TRUE(fs::cloneOrCopyFile(orig, clone));
  ExtentMap c0 = mapOrFail({clone});
  EXPECT_EQ(c0.totalBytes(), kFileBytes);
  EXPECT_EQ(overlapBytes(c0, o), kFileBytes);
  EXPECT_EQ(exclusiveBytes(c0, o), 0u);

  // Rewriting 8 MiB of the clone gives it 8 MiB of its own; the rest stays shared.
  ASSERT_NO_FATAL_FAILURE(writeRandom(clone, kRewriteAt, kRewriteBytes, 2));
  o = mapOrFail({orig});
  ExtentMap c = mapOrFail({clone});
  std::uint64_t overlap = overlapBytes(c, o), exclusive = exclusiveBytes(c, o);
  std::cout << "[ " << type << " ] clone total " << mib(c.totalBytes()) << ", overlap " << mib(overlap)
            << ", exclusive " << mib(exclusive) << ", original exclusive " << mib(exclusiveBytes(o, c))
            << ", extents clone/original " << c.extents().size() << "/" << o.extents().size() << "\n";
  EXPECT_GE(exclusive, kRewriteBytes);
  EXPECT_LE(exclusive, kRewriteBytes + kMiB);
  EXPECT_GE(overlap, kFileBytes - kRewriteBytes - kMiB);
  EXPECT_LE(overlap, kFileBytes - kRewriteBytes);
  // The original keeps its old 8 MiB to itself; both together hold 72 MiB once.
  EXPECT_EQ(exclusiveBytes(o, c), kFileBytes - overlap);
  EXPECT_EQ(mapOrFail({orig, clone}).totalBytes(), o.totalBytes() + exclusive);

  // A copy through user space shares nothing, even here.
  ASSERT_NO_FATAL_FAILURE(plainCopy(orig, copy));
  ExtentMap p = mapOrFail({copy});
  EXPECT_EQ(p.totalBytes(), kFileBytes);
  EXPECT_EQ(overlapBytes(p, o), 0u);
}

TEST_P(ExtentUsageOnReflinkFs, HolesCountNothing) {
  const std::string& type = GetParam();
  if (auto why = LoopFs::unavailable(type)) GTEST_SKIP() << *why;
  auto lfs = LoopFs::create(type, kLoopBytes);
  ASSERT_TRUE(lfs) << lfs.error().message();
  const std::string sparse = (*lfs)->mountPoint() + "/sparse";
  // 4 MiB of data at 32 MiB in a 64 MiB file, and nothing else.
  ASSERT_NO_FATAL_FAILURE(writeRandom(sparse, 32 * kMiB, 4 * kMiB, 3));
  ASSERT_EQ(::truncate(sparse.c_str(), static_cast<off_t>(kFileBytes)), 0);
  ExtentMap m = mapOrFail({sparse});
  EXPECT_EQ(m.totalBytes(), 4 * kMiB);
}

INSTANTIATE_TEST_SUITE_P(ExtentUsage, ExtentUsageOnReflinkFs, ::testing::Values("btrfs", "xfs"),
                         [](const auto& paramInfo) { return paramInfo.param; });

TEST(ExtentUsage, CopyOnPlainFsSharesNothing) {
  char t[] = "/tmp/vmckpt-extent-usage-XXXXXX";
  ASSERT_NE(::mkdtemp(t), nullptr);
  const std::string dir = t;
  struct Cleanup {
    std::string d;
    ~Cleanup() { (void)fs::removeTree(d); }
  } cleanup{dir};
  auto type = fs::filesystemType(dir);
  ASSERT_TRUE(type) << type.error().message();
  if (*type == "tmpfs") GTEST_SKIP() << "/tmp is tmpfs, which has no FIEMAP";
  if (*type == "btrfs" || *type == "xfs")
    GTEST_SKIP() << "/tmp is " << *type << ", where cloneOrCopyFile reflinks; the copy case runs on the loop filesystems";

  const std::string orig = dir + "/orig", copy = dir + "/copy";
  ASSERT_NO_FATAL_FAILURE(writeRandom(orig, 0, kFileBytes, 4));
  ASSERT_TRUE(fs::cloneOrCopyFile(orig, copy));
  ExtentMap o = mapOrFail({orig}), c = mapOrFail({copy});
  std::cout << "[ " << *type << " ] copy total " << mib(c.totalBytes()) << ", overlap " << mib(overlapBytes(c, o))
            << "\n";
  EXPECT_EQ(o.totalBytes(), kFileBytes);
  EXPECT_EQ(c.totalBytes(), kFileBytes);
  EXPECT_EQ(overlapBytes(c, o), 0u);
  EXPECT_EQ(exclusiveBytes(c, o), kFileBytes);
}

}  // namespace vmckpt::test
