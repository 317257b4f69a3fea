// Export and import between two stores on plain directories, with snapshots written by
// hand (no QEMU): files come back byte for byte, an increment carries only the changed
// blocks (including ones that became zeros, and a file that grew), and a damaged stream
// leaves nothing behind. The proof with a real guest is SnapshotTest.ExportImport* in
// tests/integration.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <random>

#include "common/fs.hpp"
#include "common/sha256.hpp"
#include "common/strings.hpp"
#include "common/temp_dir.hpp"
#include "common/unique_fd.hpp"
#include "vmm/lifecycle.hpp"

namespace vmckpt::vmm {
namespace {

constexpr std::uint64_t kMiB = 1ull << 20;

std::string readWhole(const std::string& path) {
  auto t = fs::readFile(path, 64 << 20);
  EXPECT_TRUE(t) << path;
  return t ? *t : std::string();
}

void writeAt(const std::string& path, std::uint64_t at, const std::string& bytes) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT, 0600));
  ASSERT_TRUE(fd);
  ASSERT_EQ(::pwrite(fd.get(), bytes.data(), bytes.size(), static_cast<off_t>(at)), static_cast<ssize_t>(bytes.size()));
}

// Names in a directory, without "." and "..".
std::vector<std::string> entries(const std::string& dir) {
  std::vector<std::string> out;
  for (auto& n : fs::entriesWithPrefix(dir, ""))
    if (n != "." && n != "..") out.push_back(n);
  return out;
}

class TransferTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(tmp_.path().empty());
    for (const auto& d : {src(), dst()}) ASSERT_TRUE(fs::makeDirs(d + "/vms/vm1/live"));
    spec_.name = "vm1";
    spec_.memoryBytes = 16 * kMiB;
    spec_.kernelBoot = true;
    ASSERT_TRUE(fs::writeFileAtomic(src() + "/vms/vm1/spec.json", spec_.toJson().dump()));
    ::rmdir((dst() + "/vms/vm1/live").c_str());
    ::rmdir((dst() + "/vms/vm1").c_str());
  }
  std::string src() const { return tmp_.path() + "/src"; }
  std::string dst() const { return tmp_.path() + "/dst"; }
  VmManager manager(const std::string& home) {
    auto root = StoreRoot::open(home);
    EXPECT_TRUE(root);
    return VmManager(std::move(*root));
  }

  // A published snapshot of vm1 in the source store whose data/ is a copy of `files`.
  void makeSnapshot(const std::string& id, const std::string& parent, const std::string& filesDir) {
    std::string dir = cat(src(), "/vms/vm1/snapshots/", id);
    ASSERT_TRUE(fs::makeDirs(dir + "/data"));
    store::Manifest m;
    m.id = id;
    m.vm = "vm1";
    m.parent = parent;
    m.created = "2026-11-22T00:00:00Z";
    m.spec = spec_;
    for (const auto& n : {std::string("mem"), std::string("kernel")}) {
      ASSERT_TRUE(fs::copyFile(filesDir + "/" + n, dir + "/data/" + n, fs::CopyMethod::copyOnly));
      struct stat st{};
      ::stat((dir + "/data/" + n).c_str(), &st);
      auto sum = sha256File(dir + "/data/" + n);
      m.files.push_back({n, static_cast<std::uint64_t>(st.st_size), *sum});
    }
    ASSERT_TRUE(store::writeManifest(dir + "/manifest.json", m));
  }

  // Exports into a file; returns its path.
  std::string exportTo(const std::string& snap, const std::string& parent) {
    std::string out = cat(tmp_.path(), "/", snap, ".stream");
    UniqueFd fd(::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    auto r = manager(src()).exportSnapshot("vm1", snap, {parent, {}}, fd.get());
    EXPECT_TRUE(r) << (r ? "" : r.error().message());
    return out;
  }

  Result<ImportResult> importFrom(const std::string& path, const std::string& as = "") {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    ImportOptions opts;
    opts.asName = as;
    return manager(dst()).importSnapshot(fd.get(), opts);
  }

  TempDir tmp_;
  VmSpec spec_;
};

TEST_F(TransferTest, ChainArrivesByteForByteAndIncrementsCarryOnlyChanges) {
  std::string work = tmp_.path() + "/work";
  ASSERT_TRUE(fs::makeDirs(work));
  // mem: 8 MiB, sparse, random data in its first and fifth MiB; kernel: 100 KiB.
  std::mt19937 rng(7);
  auto random = [&](size_t n) {
    std::string s(n, '\0');
    for (auto& c : s) c = static_cast<char>(rng());
    return s;
  };
  {
    UniqueFd fd(::open((work + "/mem").c_str(), O_WRONLY | O_CREAT, 0600));
    ASSERT_EQ(::ftruncate(fd.get(), 8 * kMiB), 0);
  }
  writeAt(work + "/mem", 0, random(kMiB));
  writeAt(work + "/mem", 4 * kMiB, random(kMiB));
  writeAt(work + "/kernel", 0, random(100 << 10));
  makeSnapshot("s1", "", work);
  // s2: one page rewritten, one 64 KiB block zeroed; s3: mem grew by 1 MiB of data.
  writeAt(work + "/mem", 4096, random(4096));
  writeAt(work + "/mem", 4 * kMiB, std::string(64 << 10, '\0'));
  makeSnapshot("s2", "s1", work);
  writeAt(work + "/mem", 8 * kMiB, random(kMiB));
  makeSnapshot("s3", "s2", work);

  std::string base = exportTo("s1", ""), inc1 = exportTo("s2", "s1"), inc2 = exportTo("s3", "s2");
  struct stat b{}, i1{}, i2{};
  ::stat(base.c_str(), &b);
  ::stat(inc1.c_str(), &i1);
  ::stat(inc2.c_str(), &i2);
  EXPECT_GT(b.st_size, static_cast<off_t>(2 * kMiB + (100 << 10)));  // the data, not the holes
  EXPECT_LT(b.st_size, static_cast<off_t>(3 * kMiB));
  EXPECT_LT(i1.st_size, static_cast<off_t>(100 << 10)) << "one changed block and one zeroed block";
  EXPECT_GT(i2.st_size, static_cast<off_t>(kMiB));
  EXPECT_LT(i2.st_size, static_cast<off_t>(kMiB + (64 << 10)));

  // Increment before its base: refused, nothing created.
  auto early = importFrom(inc1);
  ASSERT_FALSE(early);
  EXPECT_EQ(early.error().code(), Errc::notFound);
  EXPECT_NE(early.error().message().find("import the base first"), std::string::npos) << early.error().message();
  EXPECT_FALSE(fs::exists(dst() + "/vms/vm1"));

  for (const auto& s : {base, inc1, inc2}) {
    auto r = importFrom(s);
    ASSERT_TRUE(r) << r.error().message();
  }
  for (const auto& id : {"s1", "s2", "s3"})
    for (const auto& f : {"mem", "kernel"})
      EXPECT_EQ(readWhole(cat(dst(), "/vms/vm1/snapshots/", id, "/data/", f)),
                readWhole(cat(src(), "/vms/vm1/snapshots/", id, "/data/", f)))
          << id << "/" << f;
  auto snaps = manager(dst()).snapshots("vm1");
  ASSERT_TRUE(snaps);
  ASSERT_EQ(snaps->size(), 3u);
  EXPECT_EQ((*snaps)[2].manifest.parent, "s2");
  EXPECT_TRUE(store::verifySnapshot((*snaps)[2]).ok);

  // The same snapshot twice: refused.
  auto again = importFrom(inc2);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code(), Errc::alreadyExists);
}

TEST_F(TransferTest, DamagedOrTruncatedStreamLeavesNothing) {
  std::string work = tmp_.path() + "/work";
  ASSERT_TRUE(fs::makeDirs(work));
  writeAt(work + "/mem", 0, std::string(3 * kMiB, 'x'));
  writeAt(work + "/kernel", 0, "kernel");
  makeSnapshot("s1", "", work);
  std::string good = exportTo("s1", "");
  std::string bytes = readWhole(good);

  std::string flipped = bytes;
  flipped[bytes.size() / 2] ^= 0x10;  // inside mem's data
  std::string bad = tmp_.path() + "/bad.stream";
  ASSERT_TRUE(fs::writeFileAtomic(bad, flipped));
  auto r = importFrom(bad);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::corrupt);
  EXPECT_NE(r.error().message().find("SHA-256"), std::string::npos) << r.error().message();

  ASSERT_TRUE(fs::writeFileAtomic(bad, bytes.substr(0, bytes.size() / 3)));
  r = importFrom(bad);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("truncated at byte"), std::string::npos) << r.error().message();
  auto left = entries(dst() + "/vms");
  EXPECT_TRUE(left.empty()) << "something half-imported is left: " << (left.empty() ? "" : left[0]);

  // Into an existing VM: a damaged increment leaves its snapshots as they were.
  ASSERT_TRUE(importFrom(good));
  auto again = importFrom(bad, "");
  ASSERT_FALSE(again);
  EXPECT_EQ(entries(dst() + "/vms/vm1/snapshots"), std::vector<std::string>{"s1"});
  // --as: a second VM from the same stream.
  auto as = importFrom(good, "vm2");
  ASSERT_TRUE(as) << as.error().message();
  EXPECT_TRUE(as->createdVm);
  EXPECT_EQ(manager(dst()).snapshots("vm2")->at(0).manifest.vm, "vm2");
}

}  // namespace
}  // namespace vmckpt::vmm
