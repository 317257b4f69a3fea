#include "common/sha256.hpp"

#include <fcntl.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <vector>

#include "common/strings.hpp"
#include "common/unique_fd.hpp"

namespace vmckpt {

void Sha256::FreeCtx::operator()(evp_md_ctx_st* c) const { EVP_MD_CTX_free(c); }

Sha256::Sha256() : ctx_(EVP_MD_CTX_new()) {
  // Only allocation can fail here; a process without memory for 200 bytes cannot go on.
  if (!ctx_ || EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr) != 1) std::abort();
}

void Sha256::update(const void* data, size_t len) {
  if (finished_ || len == 0) return;
  if (EVP_DigestUpdate(ctx_.get(), data, len) != 1) std::abort();
}

Sha256::Digest Sha256::digest() {
  if (finished_) return digest_;
  unsigned int n = 0;
  if (EVP_DigestFinal_ex(ctx_.get(), digest_.data(), &n) != 1 || n != kDigestBytes) std::abort();
  finished_ = true;
  return digest_;
}

std::string Sha256::hexDigest() {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * kDigestBytes);
  for (std::uint8_t byte : digest()) {
    out.push_back(kHex[byte >> 4]);
    out.push_back(kHex[byte & 0xf]);
  }
  return out;
}

Result<std::string> sha256Fd(int fd, const std::string& nameForErrors) {
  std::vector<char> chunk(1 << 20);
  Sha256 h;
  for (off_t at = 0;;) {
    ssize_t n = ::pread(fd, chunk.data(), chunk.size(), at);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return failErrno(cat("read ", nameForErrors), errno);
    if (n == 0) break;
    h.update(chunk.data(), static_cast<size_t>(n));
    at += n;
  }
  return h.hexDigest();
}

Result<std::string> sha256File(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) {
    int err = errno;
    if (err == ENOENT) return fail(Errc::notFound, cat(path, ": no such file"), err);
    return failErrno(cat("open ", path), err);
  }
  return sha256Fd(fd.get(), path);
}

}  // namespace vmckpt
