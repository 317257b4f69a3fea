#include "gpu_uuid.hpp"

namespace vmckpt::cuda {

namespace {
// Byte groups of the printed form: 4-2-2-2-6 bytes.
constexpr int kGroups[] = {4, 2, 2, 2, 6};

int hexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}
}  // namespace

std::optional<GpuUuid> parseGpuUuid(std::string_view s) {
  if (!s.starts_with("GPU-")) return std::nullopt;
  s.remove_prefix(4);
  GpuUuid u{};
  size_t byte = 0;
  size_t pos = 0;
  for (size_t g = 0; g < std::size(kGroups); ++g) {
    if (g > 0) {
      if (pos >= s.size() || s[pos] != '-') return std::nullopt;
      ++pos;
    }
    for (int i = 0; i < kGroups[g]; ++i) {
      if (pos + 2 > s.size()) return std::nullopt;
      int hi = hexValue(s[pos]), lo = hexValue(s[pos + 1]);
      if (hi < 0 || lo < 0) return std::nullopt;
      u[byte++] = static_cast<std::uint8_t>(hi * 16 + lo);
      pos += 2;
    }
  }
  if (pos != s.size()) return std::nullopt;
  return u;
}

std::string formatGpuUuid(const GpuUuid& u) {
  static const char* kHex = "0123456789abcdef";
  std::string s = "GPU-";
  size_t byte = 0;
  for (size_t g = 0; g < std::size(kGroups); ++g) {
    if (g > 0) s += '-';
    for (int i = 0; i < kGroups[g]; ++i, ++byte) {
      s += kHex[u[byte] >> 4];
      s += kHex[u[byte] & 15];
    }
  }
  return s;
}

Result<GpuTarget> parseGpuTarget(std::string_view v) {
  GpuTarget t;
  if (v.empty() || v == "same") return t;
  if (v == "none") {
    t.kind = GpuTarget::Kind::none;
    return t;
  }
  auto u = parseGpuUuid(v);
  if (!u)
    return fail(Errc::invalidArgument, "device map gpu=" + std::string(v) +
                                           ": want same, none or a GPU UUID as nvidia-smi -L prints it "
                                           "(GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)");
  t.kind = GpuTarget::Kind::uuid;
  t.uuid = *u;
  return t;
}

}  // namespace vmckpt::cuda
