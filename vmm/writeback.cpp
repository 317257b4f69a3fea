#include "vmm/writeback.hpp"

#include <unistd.h>

#include "common/fs.hpp"
#include "common/strings.hpp"

namespace vmckpt::vmm {

Result<WritebackState> readWriteback() {
  auto vmstat = fs::readFile("/proc/vmstat", 1 << 20);
  if (!vmstat) return fail(vmstat.error());
  auto expire = fs::readFile("/proc/sys/vm/dirty_expire_centisecs", 64);
  if (!expire) return fail(expire.error());
  const std::uint64_t page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
  WritebackState w;
  bool bg = false, dirty = false;
  for (const auto& line : split(*vmstat, '\n')) {
    auto sp = line.find(' ');
    if (sp == std::string::npos) continue;
    std::string_view key(line.data(), sp);
    std::uint64_t v = std::strtoull(line.c_str() + sp + 1, nullptr, 10);
    if (key == "nr_dirty_background_threshold") w.backgroundThresholdBytes = v * page, bg = true;
    else if (key == "nr_dirty_threshold") w.dirtyThresholdBytes = v * page, dirty = true;
  }
  if (!bg || !dirty) return fail(Errc::unsupported, "/proc/vmstat has no dirty thresholds");
  w.expireCentisecs = std::strtol(std::string(trim(*expire)).c_str(), nullptr, 10);
  return w;
}

HostCheck writebackCheck(const WritebackState& w, std::uint64_t guestRamBytes) {
  bool thresholds = w.backgroundThresholdBytes >= guestRamBytes;
  bool expiry = w.expireCentisecs >= kTunedExpireCentisecs;
  std::string detail = cat("background writeback above ", formatSize(w.backgroundThresholdBytes), ", throttling above ",
                           formatSize(w.dirtyThresholdBytes), ", expiry ", w.expireCentisecs / 100, " s; guests in this store: ",
                           formatSize(guestRamBytes), " of RAM");
  if (!thresholds || !expiry)
    detail += cat(". The host writes guest RAM back ", !expiry ? "every 30 s or so" : "once it exceeds the threshold",
                  ", which slows guests that write memory fast; see bench/RUNTIME_COST.md for the settings");
  return {"writeback", thresholds && expiry, false, std::move(detail)};
}

}  // namespace vmckpt::vmm
