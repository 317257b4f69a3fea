#include "common/sha256.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <string>

#include "common/child_process.hpp"
#include "common/fs.hpp"
#include "common/temp_dir.hpp"
#include "common/unique_fd.hpp"
#include "common/strings.hpp"

using namespace vmckpt;
using namespace std::chrono_literals;

namespace {

std::string hashOf(std::string_view s) {
  Sha256 h;
  h.update(s);
  return h.hexDigest();
}


}  // namespace

// The FIPS 180-4 / NIST example messages.
TEST(Sha256, StandardVectors) {
  EXPECT_EQ(hashOf(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(hashOf("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(hashOf("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

TEST(Sha256, OneMillionA) {
  // Fed 1000 bytes at a time to exercise the incremental path.
  Sha256 h;
  std::string chunk(1000, 'a');
  for (int i = 0; i < 1000; ++i) h.update(chunk);
  EXPECT_EQ(h.hexDigest(), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  EXPECT_EQ(hashOf(std::string(1000000, 'a')),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256, SplitsDoNotMatter) {
  // Lengths around the 55/56/64-byte padding edges, fed in every two-piece split.
  for (size_t len : {0u, 1u, 55u, 56u, 63u, 64u, 65u, 119u, 120u, 128u, 200u}) {
    std::string msg;
    for (size_t i = 0; i < len; ++i) msg.push_back(static_cast<char>(i * 7 + 3));
    std::string whole = hashOf(msg);
    for (size_t cut = 0; cut <= len; ++cut) {
      Sha256 h;
      h.update(msg.data(), cut);
      h.update(msg.data() + cut, len - cut);
      ASSERT_EQ(h.hexDigest(), whole) << "len " << len << " cut " << cut;
    }
  }
}

TEST(Sha256, DigestIsStableOnceFinished) {
  Sha256 h;
  h.update("abc");
  std::string first = h.hexDigest();
  h.update("more");
  EXPECT_EQ(h.hexDigest(), first);
}

TEST(Sha256, FileMatchesMemoryAndSha256sum) {
  TempDir d;
  // 2.5 MiB: crosses the 1 MiB read-chunk boundary and ends mid-chunk.
  std::string content;
  content.reserve(5 << 19);
  for (size_t i = 0; i < (5u << 19); ++i) content.push_back(static_cast<char>((i * 2654435761u) >> 13));
  std::string f = d.path() + "/data";
  ASSERT_TRUE(fs::writeFileAtomic(f, content));

  auto r = sha256File(f);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(*r, hashOf(content));

  auto tool = runCommand({"sha256sum", f}, Deadline::in(10s));
  ASSERT_TRUE(tool) << tool.error().message();
  ASSERT_TRUE(tool->status.success()) << tool->err;
  EXPECT_EQ(tool->out.substr(0, 64), *r);

  std::string empty = d.path() + "/empty";
  ASSERT_TRUE(fs::writeFileAtomic(empty, ""));
  EXPECT_EQ(sha256File(empty).value_or(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

// sha256Fd hashes the whole file whatever the offset, and leaves the offset where it was:
// restore hands the very descriptor it checked to QEMU, which reads from that offset.
TEST(Sha256, FdHashesWholeFileAndKeepsOffset) {
  TempDir d;
  std::string f = d.path() + "/data";
  ASSERT_TRUE(fs::writeFileAtomic(f, "hello, device state"));
  UniqueFd fd(::open(f.c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(fd);
  ASSERT_EQ(::lseek(fd.get(), 7, SEEK_SET), 7);
  auto r = sha256Fd(fd.get(), f);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(*r, hashOf("hello, device state"));
  EXPECT_EQ(::lseek(fd.get(), 0, SEEK_CUR), 7);
}

TEST(Sha256, MissingFileIsNotFound) {
  auto r = sha256File("/nonexistent/vmckpt-sha256");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::notFound);
}
