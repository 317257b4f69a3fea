// SHA-256 (FIPS 180-4), fed incrementally, for checksumming snapshot files.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/error.hpp"

namespace vmckpt {

class Sha256 {
 public:
  static constexpr size_t kDigestBytes = 32;
  using Digest = std::array<std::uint8_t, kDigestBytes>;

  Sha256();

  // Feeds more message bytes; may be called any number of times before digest().
  void update(const void* data, size_t len);
  void update(std::string_view s) { update(s.data(), s.size()); }

  // Pads and returns the hash. The object is finished afterwards: further update() or
  // digest() calls give the same value and feed nothing.
  Digest digest();
  std::string hexDigest();  // 64 lowercase hex characters

 private:
  void compress(const std::uint8_t* block);

  std::array<std::uint32_t, 8> state_;
  std::array<std::uint8_t, 64> buffer_{};
  size_t buffered_ = 0;
  std::uint64_t totalBytes_ = 0;
  bool finished_ = false;
  Digest digest_{};
};

// Hex SHA-256 of a whole file, read in 1 MiB chunks.
Result<std::string> sha256File(const std::string& path);

}  // namespace vmckpt
