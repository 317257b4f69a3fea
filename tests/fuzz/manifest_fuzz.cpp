// libFuzzer target: the snapshot manifest parser (vmm/store/manifest, with the VM spec
// inside it). A manifest is read from disk, where it may be damaged or planted, and
// restore acts on it, so it must refuse cleanly. An accepted manifest must survive a
// write/read round trip unchanged, and name only plain files.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "vmm/store/manifest.hpp"

using namespace vmckpt::vmm;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  auto j = Json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;
  auto m = store::Manifest::fromJson(j);
  if (!m) return 0;
  for (const auto& f : m->files)
    if (f.name.empty() || f.name.find('/') != std::string::npos || f.name == "." || f.name == "..") __builtin_trap();
  auto again = store::Manifest::fromJson(m->toJson());
  if (!again) __builtin_trap();
  if (again->toJson() != m->toJson()) __builtin_trap();
  return 0;
}
