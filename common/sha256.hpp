// SHA-256 (FIPS 180-4), fed incrementally, for checksumming snapshot files. OpenSSL's
// libcrypto does the rounds (SHA-NI where the CPU has it: ~15x the portable C speed).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "common/error.hpp"

struct evp_md_ctx_st;

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
  struct FreeCtx {
    void operator()(evp_md_ctx_st* c) const;
  };
  std::unique_ptr<evp_md_ctx_st, FreeCtx> ctx_;
  bool finished_ = false;
  Digest digest_{};
};

// Hex SHA-256 of a whole file, read in 1 MiB chunks.
Result<std::string> sha256File(const std::string& path);

// Hex SHA-256 of everything an open file holds, read with pread from offset 0 (the file
// offset is left alone), so a caller can check exactly the bytes it then hands on.
Result<std::string> sha256Fd(int fd, const std::string& nameForErrors);

}  // namespace vmckpt
