// The stream format alone: a round trip, and every truncation and every single-bit flip
// of a small stream is refused (nothing damaged ever reads back as a complete stream).
#include "vmm/transfer/stream.hpp"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <vector>

#include "common/unique_fd.hpp"

namespace vmckpt::vmm::transfer {
namespace {

// An in-memory file holding `bytes`, positioned at 0.
UniqueFd memFile(const std::vector<std::uint8_t>& bytes) {
  UniqueFd fd(::memfd_create("stream", MFD_CLOEXEC));
  EXPECT_EQ(::write(fd.get(), bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
  ::lseek(fd.get(), 0, SEEK_SET);
  return fd;
}

std::vector<std::uint8_t> readAll(int fd) {
  std::vector<std::uint8_t> out(static_cast<size_t>(::lseek(fd, 0, SEEK_END)));
  EXPECT_EQ(::pread(fd, out.data(), out.size(), 0), static_cast<ssize_t>(out.size()));
  return out;
}

std::vector<std::uint8_t> sampleStream() {
  UniqueFd fd(::memfd_create("stream", MFD_CLOEXEC));
  StreamWriter w(fd.get());
  EXPECT_TRUE(w.begin());
  EXPECT_TRUE(w.json(RecordType::header, {{"format", {{"major", 1}}}}));
  EXPECT_TRUE(w.json(RecordType::file, {{"name", "mem"}, {"size", 100}}));
  std::vector<std::uint8_t> data = {1, 2, 3, 4, 5};
  EXPECT_TRUE(w.data(10, data));
  EXPECT_TRUE(w.zero(50, 20));
  EXPECT_TRUE(w.json(RecordType::fileEnd, {{"name", "mem"}}));
  EXPECT_TRUE(w.end());
  EXPECT_EQ(w.bytes(), static_cast<std::uint64_t>(::lseek(fd.get(), 0, SEEK_CUR)));
  return readAll(fd.get());
}

// Reads a whole stream; ok only when it ends with a valid trailer.
Status readStream(const std::vector<std::uint8_t>& bytes, std::vector<Record>* out = nullptr) {
  UniqueFd fd = memFile(bytes);
  StreamReader r(fd.get());
  VMCKPT_TRY(r.begin());
  for (;;) {
    auto rec = r.next();
    if (!rec) return fail(rec.error());
    if (out) {
      Record copy = *rec;
      copy.data = {};
      out->push_back(copy);
    }
    if (rec->type == RecordType::data && rec->data.size() != 5) return fail(Errc::corrupt, "data size");
    if (rec->type == RecordType::end) return {};
  }
}

TEST(Stream, RoundTrip) {
  std::vector<Record> recs;
  auto s = readStream(sampleStream(), &recs);
  ASSERT_TRUE(s) << s.error().message();
  ASSERT_EQ(recs.size(), 6u);
  EXPECT_EQ(recs[0].type, RecordType::header);
  EXPECT_EQ(recs[1].json["name"], "mem");
  EXPECT_EQ(recs[2].offset, 10u);
  EXPECT_EQ(recs[3].offset, 50u);
  EXPECT_EQ(recs[3].length, 20u);
  EXPECT_EQ(recs[5].type, RecordType::end);
}

TEST(Stream, EveryTruncationIsRefused) {
  auto bytes = sampleStream();
  for (size_t n = 0; n < bytes.size(); ++n) {
    std::vector<std::uint8_t> cut(bytes.begin(), bytes.begin() + static_cast<long>(n));
    auto s = readStream(cut);
    ASSERT_FALSE(s) << "truncated to " << n << " bytes and accepted";
    EXPECT_EQ(s.error().code(), Errc::corrupt);
    if (n >= 16) {
      EXPECT_NE(s.error().message().find("truncated at byte"), std::string::npos) << s.error().message();
    }
  }
}

TEST(Stream, EveryBitFlipIsRefused) {
  auto bytes = sampleStream();
  for (size_t i = 0; i < bytes.size(); ++i)
    for (int bit = 0; bit < 8; ++bit) {
      auto bad = bytes;
      bad[i] ^= static_cast<std::uint8_t>(1u << bit);
      ASSERT_FALSE(readStream(bad)) << "bit " << bit << " of byte " << i << " flipped and accepted";
    }
}

TEST(Stream, OversizedRecordsAreRefusedBeforeReading) {
  std::vector<std::uint8_t> bytes = {'V', 'M', 'C', 'K', 'S', 'T', 'R', 'M', 1, 0, 0, 0, 0, 0, 0, 0};
  // A data record claiming 2 GiB: refused by its header, not by trying to read it.
  std::vector<std::uint8_t> rec = {3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x80, 0, 0, 0, 0};
  bytes.insert(bytes.end(), rec.begin(), rec.end());
  auto s = readStream(bytes);
  ASSERT_FALSE(s);
  EXPECT_NE(s.error().message().find("outside its limits"), std::string::npos) << s.error().message();
}

TEST(Stream, NotAStream) {
  auto s = readStream({'h', 'e', 'l', 'l', 'o', ' ', 'w', 'o', 'r', 'l', 'd', '!', '!', '!', '!', '!'});
  ASSERT_FALSE(s);
  EXPECT_NE(s.error().message().find("not a vmckpt export stream"), std::string::npos);
}

}  // namespace
}  // namespace vmckpt::vmm::transfer
