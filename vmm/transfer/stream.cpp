#include "vmm/transfer/stream.hpp"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/strings.hpp"

namespace vmckpt::vmm::transfer {
namespace {

constexpr std::uint8_t kMagic[8] = {'V', 'M', 'C', 'K', 'S', 'T', 'R', 'M'};
constexpr size_t kRecordHeaderBytes = 16;

void put32(std::uint8_t* p, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<std::uint8_t>(v >> (8 * i));
}
void put64(std::uint8_t* p, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<std::uint8_t>(v >> (8 * i));
}
std::uint32_t get32(const std::uint8_t* p) {
  std::uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
std::uint64_t get64(const std::uint8_t* p) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

std::span<const std::uint8_t> bytesOf(const std::string& s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

bool jsonRecord(RecordType t) { return t == RecordType::header || t == RecordType::file || t == RecordType::fileEnd; }

}  // namespace

std::string_view recordTypeName(RecordType t) {
  switch (t) {
    case RecordType::header: return "header";
    case RecordType::file: return "file";
    case RecordType::data: return "data";
    case RecordType::zero: return "zero";
    case RecordType::fileEnd: return "file-end";
    case RecordType::end: return "end";
  }
  return "unknown";
}

Status StreamWriter::write(std::span<const std::uint8_t> b) {
  hash_.update(b.data(), b.size());
  return writeRaw(b);
}

Status StreamWriter::writeRaw(std::span<const std::uint8_t> b) {
  while (!b.empty()) {
    ssize_t n = ::write(fd_, b.data(), b.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return failErrno("write the stream", errno);
    }
    b = b.subspan(static_cast<size_t>(n));
    bytes_ += static_cast<std::uint64_t>(n);
  }
  return {};
}

Status StreamWriter::begin() {
  std::uint8_t pre[16];
  std::memcpy(pre, kMagic, 8);
  put32(pre + 8, kStreamVersion);
  put32(pre + 12, 0);
  return write(pre);
}

Status StreamWriter::record(RecordType type, std::span<const std::uint8_t> a, std::span<const std::uint8_t> b) {
  std::uint8_t h[kRecordHeaderBytes];
  put32(h, static_cast<std::uint32_t>(type));
  put32(h + 4, 0);
  put64(h + 8, a.size() + b.size());
  VMCKPT_TRY(write(h));
  VMCKPT_TRY(write(a));
  return write(b);
}

Status StreamWriter::json(RecordType type, const Json& j) {
  std::string text = j.dump();
  if (text.size() > kMaxJsonBytes)
    return fail(Errc::invalidArgument, cat(recordTypeName(type), " record of ", text.size(), " bytes exceeds the stream's limit"));
  return record(type, bytesOf(text));
}

Status StreamWriter::data(std::uint64_t offset, std::span<const std::uint8_t> bytes) {
  if (bytes.size() > kMaxDataBytes) return fail(Errc::internal, "data record larger than the stream's limit");
  std::uint8_t off[8];
  put64(off, offset);
  return record(RecordType::data, off, bytes);
}

Status StreamWriter::zero(std::uint64_t offset, std::uint64_t length) {
  std::uint8_t p[16];
  put64(p, offset);
  put64(p + 8, length);
  return record(RecordType::zero, p);
}

Status StreamWriter::end() {
  std::uint8_t h[kRecordHeaderBytes];
  put32(h, static_cast<std::uint32_t>(RecordType::end));
  put32(h + 4, 0);
  put64(h + 8, Sha256::kDigestBytes);
  VMCKPT_TRY(write(h));
  Sha256::Digest d = hash_.digest();
  return writeRaw(d);  // the trailer is not part of what it hashes
}

Status StreamReader::read(std::uint8_t* into, std::uint64_t n, std::string_view what) {
  std::uint64_t got = 0;
  while (got < n) {
    ssize_t r = ::read(fd_, into + got, static_cast<size_t>(std::min<std::uint64_t>(n - got, 1 << 20)));
    if (r < 0) {
      if (errno == EINTR) continue;
      return failErrno(cat("read the stream at byte ", bytes_ + got), errno);
    }
    if (r == 0)
      return fail(Errc::corrupt, cat("stream truncated at byte ", bytes_ + got, ": ", n - got, " more bytes of the ", what,
                                     " expected"));
    got += static_cast<std::uint64_t>(r);
  }
  bytes_ += n;
  return {};
}

Status StreamReader::begin() {
  std::uint8_t pre[16];
  VMCKPT_TRY(read(pre, sizeof pre, "preamble"));
  hash_.update(pre, sizeof pre);
  if (std::memcmp(pre, kMagic, 8) != 0) return fail(Errc::corrupt, "not a vmckpt export stream (no VMCKSTRM preamble)");
  std::uint32_t version = get32(pre + 8);
  if (version != kStreamVersion)
    return fail(Errc::corrupt, cat("stream format version ", version, " is not the one this vmckpt reads (", kStreamVersion, ")"));
  if (get32(pre + 12) != 0) return fail(Errc::corrupt, "stream preamble has flags this vmckpt does not know");
  return {};
}

Result<Record> StreamReader::next() {
  Record rec;
  rec.at = bytes_;
  std::uint8_t h[kRecordHeaderBytes];
  VMCKPT_TRY(read(h, sizeof h, "next record's header (a record or the end trailer is missing)"));
  hash_.update(h, sizeof h);
  std::uint32_t type = get32(h);
  std::uint64_t len = get64(h + 8);
  auto where = [&] { return cat("record at byte ", rec.at); };
  if (type < 1 || type > 6 || get32(h + 4) != 0)
    return fail(Errc::corrupt, cat(where(), ": unknown record type ", type, " (damaged stream)"));
  rec.type = static_cast<RecordType>(type);
  std::string_view name = recordTypeName(rec.type);
  std::uint64_t limit = jsonRecord(rec.type)          ? kMaxJsonBytes
                        : rec.type == RecordType::data ? kMaxDataBytes + 8
                        : rec.type == RecordType::zero ? 16
                                                       : Sha256::kDigestBytes;
  bool exact = rec.type == RecordType::zero || rec.type == RecordType::end;
  if (len > limit || (exact && len != limit) || (rec.type == RecordType::data && len < 9))
    return fail(Errc::corrupt, cat(where(), ": ", name, " record of ", len, " bytes is outside its limits (damaged stream)"));
  buf_.resize(static_cast<size_t>(len));
  VMCKPT_TRY(read(buf_.data(), len, cat(name, " record")));
  if (rec.type == RecordType::end) {
    Sha256::Digest d = hash_.digest();
    if (!std::equal(d.begin(), d.end(), buf_.begin()))
      return fail(Errc::corrupt, cat("stream damaged: the SHA-256 of its ", rec.at + kRecordHeaderBytes,
                                     " bytes does not match its trailer"));
    return rec;
  }
  hash_.update(buf_.data(), buf_.size());
  if (jsonRecord(rec.type)) {
    rec.json = Json::parse(buf_.begin(), buf_.end(), nullptr, false);
    if (rec.json.is_discarded() || !rec.json.is_object())
      return fail(Errc::corrupt, cat(where(), ": ", name, " record is not a JSON object (damaged stream)"));
  } else if (rec.type == RecordType::data) {
    rec.offset = get64(buf_.data());
    rec.data = std::span<const std::uint8_t>(buf_).subspan(8);
  } else {
    rec.offset = get64(buf_.data());
    rec.length = get64(buf_.data() + 8);
  }
  return rec;
}

}  // namespace vmckpt::vmm::transfer
