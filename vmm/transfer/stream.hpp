// The export/import stream: a self-describing, checksummed sequence of records that
// carries one snapshot (whole, or only what changed against a parent the importer has).
//
//   preamble   "VMCKSTRM" u32 version u32 flags(0)                       (16 bytes)
//   record     u32 type u32 reserved(0) u64 payload-length  payload
//   header     JSON: stream format, the snapshot's manifest, parent id
//   file       JSON: name, size, base ("empty" | "parent")  -- then its ranges:
//   data       u64 offset + bytes                            (at most kMaxDataBytes)
//   zero       u64 offset + u64 length                       (range becomes zeros/hole)
//   file-end   JSON: name, sha256 of the whole resulting file; or (format 1.1) sha256 ""
//              with "verified": "size" (below)
//   end        32-byte SHA-256 of every stream byte before this payload
//
// All integers little-endian. A file's bytes that no range mentions are zeros (base
// "empty") or the parent's (base "parent"). The reader enforces the size limits and the
// trailer, so a damaged or truncated stream fails with where and why; what the records
// mean (names, offsets within the file) is checked by the importer.
//
// Format 1.1 (header "format": {"major": 1, "minor": 1}): an increment reads only the
// ranges where a file and its parent's do not share extents (extents.hpp), so it cannot
// hash a whole file. A file whose manifest has no sha256 (larger than
// store::kChecksumLimit: RAM, disks; the store checks those by size too) may then end with
// "verified": "size" and an empty sha256, only with base "parent"; the importer checks its
// size, and the trailer still covers every byte that travelled. What such a file cannot
// catch is a parent on the importing side that differs from the exporter's under the same
// id. Small files (device state, kernel, initrd) always carry their SHA-256. The importer
// reads 1.0 and 1.1 and refuses a newer minor.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <vector>

#include "common/error.hpp"
#include "common/sha256.hpp"

namespace vmckpt::vmm::transfer {

using Json = nlohmann::json;

inline constexpr std::uint32_t kStreamVersion = 1;  // the preamble's: the format's major
inline constexpr int kFormatMajor = 1;                // the header's "format"
inline constexpr int kFormatMinor = 1;                // 1.1: file-end "verified": "size"
inline constexpr std::uint64_t kMaxJsonBytes = 4ull << 20;  // header (a manifest with its spec)
inline constexpr std::uint64_t kMaxDataBytes = 1ull << 20;  // one data record's bytes

enum class RecordType : std::uint32_t { header = 1, file = 2, data = 3, zero = 4, fileEnd = 5, end = 6 };
std::string_view recordTypeName(RecordType t);

class StreamWriter {
 public:
  explicit StreamWriter(int fd) : fd_(fd) {}
  Status begin();
  Status json(RecordType type, const Json& j);
  Status data(std::uint64_t offset, std::span<const std::uint8_t> bytes);
  Status zero(std::uint64_t offset, std::uint64_t length);
  Status end();
  std::uint64_t bytes() const { return bytes_; }

 private:
  Status record(RecordType type, std::span<const std::uint8_t> a, std::span<const std::uint8_t> b = {});
  Status write(std::span<const std::uint8_t> bytes);  // hashed
  Status writeRaw(std::span<const std::uint8_t> bytes);
  int fd_;
  Sha256 hash_;
  std::uint64_t bytes_ = 0;
};

struct Record {
  RecordType type = RecordType::end;
  std::uint64_t at = 0;  // stream offset of the record's header, for error messages
  Json json;                          // header, file, file-end
  std::uint64_t offset = 0;           // data, zero
  std::uint64_t length = 0;           // zero
  std::span<const std::uint8_t> data; // data: valid until the next call of next()
};

class StreamReader {
 public:
  explicit StreamReader(int fd) : fd_(fd) {}
  // Reads and checks the preamble.
  Status begin();
  // The next record. An `end` record is returned only when the trailer matches.
  Result<Record> next();
  std::uint64_t bytes() const { return bytes_; }

 private:
  // Exactly n bytes, or an error naming what was being read when the stream ended.
  Status read(std::uint8_t* into, std::uint64_t n, std::string_view what);
  int fd_;
  Sha256 hash_;
  std::uint64_t bytes_ = 0;
  std::vector<std::uint8_t> buf_;
};

}  // namespace vmckpt::vmm::transfer
