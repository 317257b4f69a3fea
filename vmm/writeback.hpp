// The host's dirty-page writeback settings, as they bear on file-backed guest RAM: with the
// defaults the kernel writes guest RAM back every 30 s and above ~10% of memory, and each
// page written back faults again when the guest next writes it (bench/RUNTIME_COST.md).
#pragma once

#include <cstdint>

#include "common/error.hpp"
#include "vmm/host_report.hpp"

namespace vmckpt::vmm {

struct WritebackState {
  std::uint64_t backgroundThresholdBytes = 0;  // /proc/vmstat nr_dirty_background_threshold
  std::uint64_t dirtyThresholdBytes = 0;       // /proc/vmstat nr_dirty_threshold
  long expireCentisecs = 0;                    // vm.dirty_expire_centisecs
};

// An hour: what RUNTIME_COST.md's tuning sets; less means periodic writeback of guest RAM.
inline constexpr long kTunedExpireCentisecs = 360000;

Result<WritebackState> readWriteback();

// The doctor's line: ok when guest RAM of `guestRamBytes` can stay dirty between snapshots
// (background threshold above it, expiry of at least an hour). Never required.
HostCheck writebackCheck(const WritebackState& w, std::uint64_t guestRamBytes);

}  // namespace vmckpt::vmm
