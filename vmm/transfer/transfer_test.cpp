// Export and import between two stores on plain directories, with snapshots written by
// hand (no QEMU): files come back byte for byte, an increment carries only the changed
// blocks (including ones that became zeros, and a file that grew), and a damaged stream
// leaves nothing behind; which ranges an increment must read, from both files' extents
// (a fake extent list, and real files on whatever filesystem /tmp is); a large file
// verified by size (format 1.1) is accepted only where the format allows it. The proof with
// a real guest on Btrfs is SnapshotTest.ExportImport* in tests/integration.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <linux/fiemap.h>
#include <sys/stat.h>
#include <unistd.h>

#include <functional>
#include <random>

#include "common/fs.hpp"
#include "common/sha256.hpp"
#include "common/strings.hpp"
#include "common/temp_dir.hpp"
#include "common/unique_fd.hpp"
#include "vmm/lifecycle.hpp"
#include "vmm/transfer/extents.hpp"
#include "vmm/transfer/stream.hpp"

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
      auto sum = sha256File(dir + "/data/" + n);  // as the store: large files are checked by size
      m.files.push_back({n, static_cast<std::uint64_t>(st.st_size),
                         static_cast<std::uint64_t>(st.st_size) > store::kChecksumLimit ? std::string() : *sum});
    }
    ASSERT_TRUE(store::writeManifest(dir + "/manifest.json", m));
  }

  // Exports into a file; returns its path.
  std::string exportTo(const std::string& snap, const std::string& parent, ExportResult* result = nullptr) {
    std::string out = cat(tmp_.path(), "/", snap, ".stream");
    UniqueFd fd(::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    auto r = manager(src()).exportSnapshot("vm1", snap, {parent, {}}, fd.get());
    EXPECT_TRUE(r) << (r ? "" : r.error().message());
    if (r && result) *result = *r;
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

// ---- which ranges an increment reads (extents.hpp) ----

using transfer::FileExtent;
using transfer::Segment;
using transfer::SegmentKind;
constexpr std::uint64_t kKiB = 1024, kBlk = 64 * kKiB;
constexpr std::uint32_t kShared = FIEMAP_EXTENT_SHARED;

TEST(ExportExtents, SharedAndHolesAreSkippedTheRestComparedInWholeBlocks) {
  // cur: [0,256K) shared with the parent; [256K,260K) rewritten (own extent); [260K,512K)
  // shared again; [512K,1M) a hole in both; [1M,1M+64K) data only in cur.
  std::vector<FileExtent> parent = {{0, 1000 * kKiB, 512 * kKiB, kShared}};
  std::vector<FileExtent> cur = {{0, 1000 * kKiB, 256 * kKiB, kShared},
                                 {256 * kKiB, 5000 * kKiB, 4 * kKiB, 0},
                                 {260 * kKiB, 1260 * kKiB, 252 * kKiB, kShared | FIEMAP_EXTENT_LAST},
                                 {1024 * kKiB, 7000 * kKiB, kBlk, 0}};
  const std::uint64_t size = 1024 * kKiB + kBlk;
  auto s = transfer::classifyRange(cur, size, parent, 512 * kKiB, 0, size, kBlk);
  std::vector<Segment> want = {{0, 256 * kKiB, SegmentKind::shared},
                               {256 * kKiB, kBlk, SegmentKind::compare},  // the 4 KiB, widened to its block
                               {320 * kKiB, 192 * kKiB, SegmentKind::shared},
                               {512 * kKiB, 512 * kKiB, SegmentKind::holes},
                               {1024 * kKiB, kBlk, SegmentKind::compare}};
  EXPECT_EQ(s, want);
}

TEST(ExportExtents, OnlyPlainSharedExtentsAtTheSameAddressAreTrusted) {
  const std::uint64_t size = 2 * kBlk;
  auto kind = [&](std::uint64_t curPhys, std::uint32_t curFlags, std::uint64_t parPhys, std::uint32_t parFlags) {
    std::vector<FileExtent> cur = {{0, curPhys, size, curFlags}}, parent = {{0, parPhys, size, parFlags}};
    auto s = transfer::classifyRange(cur, size, parent, size, 0, size, kBlk);
    return s.size() == 1 && s[0].length == size ? s[0].kind : SegmentKind::compare;
  };
  EXPECT_EQ(kind(4096, kShared, 4096, kShared), SegmentKind::shared);
  EXPECT_EQ(kind(4096, kShared, 8192, kShared), SegmentKind::compare) << "another physical place";
  EXPECT_EQ(kind(4096, 0, 4096, kShared), SegmentKind::compare) << "not flagged shared";
  for (std::uint32_t f : {FIEMAP_EXTENT_ENCODED, FIEMAP_EXTENT_DATA_INLINE | FIEMAP_EXTENT_NOT_ALIGNED,
                          FIEMAP_EXTENT_DELALLOC, FIEMAP_EXTENT_UNKNOWN, FIEMAP_EXTENT_DATA_ENCRYPTED})
    EXPECT_EQ(kind(4096, kShared | f, 4096, kShared | f), SegmentKind::compare) << "flags " << f;
  // The same physical bytes at another logical offset: not the same bytes at this one.
  std::vector<FileExtent> cur = {{0, 4096 + kBlk, kBlk, kShared}}, parent = {{kBlk, 4096 + kBlk, kBlk, kShared}};
  auto s = transfer::classifyRange(cur, kBlk, parent, 2 * kBlk, 0, kBlk, kBlk);
  EXPECT_EQ(s, (std::vector<Segment>{{0, kBlk, SegmentKind::compare}}));
  // Overlapping extents (never from a sane kernel): nothing is trusted.
  std::vector<FileExtent> bad = {{0, 0, kBlk, kShared}, {4096, 0, kBlk, kShared}};
  s = transfer::classifyRange(bad, 2 * kBlk, bad, 2 * kBlk, 0, 2 * kBlk, kBlk);
  EXPECT_EQ(s, (std::vector<Segment>{{0, 2 * kBlk, SegmentKind::compare}}));
}

TEST(ExportExtents, PastTheParentsEndNothingIsSharedAndTheTailIsNotWidenedPastTheRange) {
  // The parent's extent runs past its size (preallocated); the clone on the importing
  // side reads zeros there, so cur's bytes must travel even where the extent is shared.
  const std::uint64_t size = 3 * kBlk + 100;
  std::vector<FileExtent> cur = {{0, 0, 4 * kBlk, kShared}}, parent = {{0, 0, 4 * kBlk, kShared}};
  auto s = transfer::classifyRange(cur, size, parent, kBlk + 4096, 0, size, kBlk);
  EXPECT_EQ(s, (std::vector<Segment>{{0, kBlk, SegmentKind::shared}, {kBlk, 2 * kBlk + 100, SegmentKind::compare}}));
  // A window in the middle of a file: extents starting before it are clipped to it.
  s = transfer::classifyRange(cur, size, parent, size, kBlk, 2 * kBlk, kBlk);
  EXPECT_EQ(s, (std::vector<Segment>{{kBlk, kBlk, SegmentKind::shared}}));
}

// Real files on /tmp's filesystem (ext4, tmpfs, ... : no shared extents): an increment
// of a large sparse file reads only what is not a hole in both (or everything where there
// is no FIEMAP), still carries the file's SHA-256, and arrives byte for byte.
TEST_F(TransferTest, IncrementOfALargeSparseFileWithoutSharedExtents) {
  std::string work = tmp_.path() + "/work";
  ASSERT_TRUE(fs::makeDirs(work));
  const std::uint64_t memSize = store::kChecksumLimit + 16 * kMiB;
  {
    UniqueFd fd(::open((work + "/mem").c_str(), O_WRONLY | O_CREAT, 0600));
    ASSERT_EQ(::ftruncate(fd.get(), static_cast<off_t>(memSize)), 0);
  }
  writeAt(work + "/mem", 0, std::string(kMiB, 'a'));
  writeAt(work + "/mem", 70 * kMiB, std::string(kMiB, 'b'));
  writeAt(work + "/kernel", 0, "kernel");
  makeSnapshot("s1", "", work);
  writeAt(work + "/mem", 70 * kMiB + 4096, std::string(4096, 'c'));
  makeSnapshot("s2", "s1", work);

  ExportResult r1, r2;
  std::string base = exportTo("s1", "", &r1), inc = exportTo("s2", "s1", &r2);
  EXPECT_EQ(r1.bytesRead, 2 * kMiB + 6) << "a whole export reads the data, not the holes";
  UniqueFd probe(::open(cat(src(), "/vms/vm1/snapshots/s2/data/mem").c_str(), O_RDONLY | O_CLOEXEC));
  auto ext = transfer::fileExtents(probe.get(), "mem", 0, memSize);
  if (ext)
    EXPECT_EQ(r2.bytesRead, 2 * (2 * kMiB + 6)) << "holes in both are not read";
  else
    EXPECT_EQ(r2.bytesRead, 2 * (memSize + 6)) << "no FIEMAP here: " << ext.error().message();
  std::string stream = readWhole(inc);
  EXPECT_EQ(stream.find("\"verified\""), std::string::npos) << "nothing shared, so every file has its SHA-256";
  EXPECT_LT(stream.size(), 100 << 10);

  ASSERT_TRUE(importFrom(base));
  auto r = importFrom(inc);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(*sha256File(dst() + "/vms/vm1/snapshots/s2/data/mem"), *sha256File(src() + "/vms/vm1/snapshots/s2/data/mem"));
}

// Rewrites a stream record by record; `edit` may change a JSON record (type, json).
std::string rewriteStream(const std::string& in, const std::string& out,
                          const std::function<void(transfer::RecordType, transfer::Json&)>& edit) {
  UniqueFd from(::open(in.c_str(), O_RDONLY | O_CLOEXEC));
  UniqueFd to(::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  transfer::StreamReader r(from.get());
  transfer::StreamWriter w(to.get());
  EXPECT_TRUE(r.begin());
  EXPECT_TRUE(w.begin());
  for (;;) {
    auto rec = r.next();
    EXPECT_TRUE(rec) << rec.error().message();
    if (!rec) break;
    using T = transfer::RecordType;
    if (rec->type == T::end) {
      EXPECT_TRUE(w.end());
      break;
    }
    if (rec->type == T::data)
      EXPECT_TRUE(w.data(rec->offset, rec->data));
    else if (rec->type == T::zero)
      EXPECT_TRUE(w.zero(rec->offset, rec->length));
    else {
      edit(rec->type, rec->json);
      EXPECT_TRUE(w.json(rec->type, rec->json));
    }
  }
  return out;
}

// Format 1.1: a large file of an increment may be verified by its size; nowhere else. 1.0
// streams still import, a newer minor is refused.
TEST_F(TransferTest, SizeVerifiedFilesOnlyWhereTheFormatAllows) {
  std::string work = tmp_.path() + "/work";
  ASSERT_TRUE(fs::makeDirs(work));
  {
    UniqueFd fd(::open((work + "/mem").c_str(), O_WRONLY | O_CREAT, 0600));
    ASSERT_EQ(::ftruncate(fd.get(), static_cast<off_t>(store::kChecksumLimit + kMiB)), 0);
  }
  writeAt(work + "/mem", 0, std::string(kMiB, 'a'));
  writeAt(work + "/kernel", 0, "kernel");
  makeSnapshot("s1", "", work);
  writeAt(work + "/mem", 4096, std::string(4096, 'c'));
  makeSnapshot("s2", "s1", work);
  std::string base = exportTo("s1", ""), inc = exportTo("s2", "s1");
  auto bySize = [](const std::string& file, int minor) {
    return [file, minor](transfer::RecordType t, transfer::Json& j) {
      if (t == transfer::RecordType::header) j["format"]["minor"] = minor;
      if (t == transfer::RecordType::fileEnd && j["name"] == file) j = {{"name", file}, {"sha256", ""}, {"verified", "size"}};
    };
  };
  std::string kernelBySize = rewriteStream(inc, tmp_.path() + "/k.stream", bySize("kernel", 1));
  std::string memOld = rewriteStream(inc, tmp_.path() + "/m0.stream", bySize("mem", 0));
  std::string memNew = rewriteStream(inc, tmp_.path() + "/m1.stream", bySize("mem", 1));
  std::string newer = rewriteStream(inc, tmp_.path() + "/n.stream", bySize("none", 2));
  std::string baseBySize = rewriteStream(base, tmp_.path() + "/b.stream", bySize("mem", 1));
  std::string old = rewriteStream(inc, tmp_.path() + "/old.stream", [](transfer::RecordType t, transfer::Json& j) {
    if (t == transfer::RecordType::header) j["format"] = {{"major", 1}, {"minor", 0}};
  });

  auto refused = [&](const std::string& stream, const std::string& why) {
    auto r = importFrom(stream);
    ASSERT_FALSE(r) << stream;
    EXPECT_EQ(r.error().code(), Errc::corrupt);
    EXPECT_NE(r.error().message().find(why), std::string::npos) << r.error().message();
  };
  refused(baseBySize, "with a SHA-256");  // a whole file was read whole: it must carry its SHA-256
  EXPECT_TRUE(entries(dst() + "/vms").empty());
  ASSERT_TRUE(importFrom(base));
  refused(kernelBySize, "with a SHA-256");  // small: the manifest checks it by SHA-256
  refused(memOld, "with a SHA-256");        // format 1.0 has no size verification
  refused(newer, "stream format 1.2 is newer than this vmckpt reads (1.1)");
  EXPECT_EQ(entries(dst() + "/vms/vm1/snapshots"), std::vector<std::string>{"s1"}) << "nothing half-imported";
  auto r = importFrom(memNew);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(*sha256File(dst() + "/vms/vm1/snapshots/s2/data/mem"), *sha256File(src() + "/vms/vm1/snapshots/s2/data/mem"));
  ASSERT_TRUE(importFrom(base, "vm2"));
  auto r0 = importFrom(old, "vm2");  // a 1.0 increment (every file with its SHA-256) still imports
  ASSERT_TRUE(r0) << r0.error().message();
}

}  // namespace
}  // namespace vmckpt::vmm
