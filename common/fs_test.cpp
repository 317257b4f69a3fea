#include "common/fs.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <sys/stat.h>
#include <unistd.h>

#include "common/strings.hpp"
#include "common/temp_dir.hpp"

using namespace vmckpt;


TEST(Fs, AtomicWriteAndRead) {
  TempDir d;
  std::string f = d.path() + "/a.json";
  ASSERT_TRUE(fs::writeFileAtomic(f, "one"));
  ASSERT_TRUE(fs::writeFileAtomic(f, "two", 0640));
  auto r = fs::readFile(f);
  ASSERT_TRUE(r);
  EXPECT_EQ(*r, "two");
  struct stat st{};
  ASSERT_EQ(::stat(f.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0640u);
}

TEST(Fs, ReadRefusesOversizedAndReportsMissing) {
  TempDir d;
  std::string f = d.path() + "/big";
  ASSERT_TRUE(fs::writeFileAtomic(f, std::string(100, 'x')));
  auto r = fs::readFile(f, 10);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::corrupt);
  auto m = fs::readFile(d.path() + "/missing");
  ASSERT_FALSE(m);
  EXPECT_EQ(m.error().code(), Errc::notFound);
}

TEST(Fs, MakeDirsSetsMode) {
  TempDir d;
  std::string p = d.path() + "/x/y/z";
  ASSERT_TRUE(fs::makeDirs(p, 0700));
  struct stat st{};
  ASSERT_EQ(::stat(p.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
}

TEST(Fs, CopyKeepsContentAndHoles) {
  TempDir d;
  std::string src = d.path() + "/src", dst = d.path() + "/dst";
  {
    FILE* f = std::fopen(src.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fputs("head", f);
    std::fseek(f, 8 << 20, SEEK_SET);  // an 8 MiB hole
    std::fputs("tail", f);
    std::fclose(f);
  }
  ASSERT_TRUE(fs::cloneOrCopyFile(src, dst));
  auto a = fs::readFile(src, 64 << 20), b = fs::readFile(dst, 64 << 20);
  ASSERT_TRUE(a && b);
  EXPECT_EQ(*a, *b);
  struct stat st{};
  ASSERT_EQ(::stat(dst.c_str(), &st), 0);
  EXPECT_LT(st.st_blocks * 512, 1 << 20) << "hole was filled";
  auto missing = fs::cloneOrCopyFile(d.path() + "/nope", dst);
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code(), Errc::notFound);
}

TEST(Fs, EntriesWithPrefix) {
  TempDir d;
  for (const char* n : {".tmp-a", ".tmp-b", "tmp-c", "other"}) ASSERT_TRUE(fs::writeFileAtomic(d.path() + "/" + n, ""));
  auto found = fs::entriesWithPrefix(d.path(), ".tmp-");
  std::sort(found.begin(), found.end());
  EXPECT_EQ(found, (std::vector<std::string>{".tmp-a", ".tmp-b"}));
  EXPECT_TRUE(fs::entriesWithPrefix(d.path() + "/missing", ".tmp-").empty());
}
