// Runtime cost between snapshots: a guest that writes its RAM continuously, on vmckpt's
// file-backed shared RAM against QEMU's default anonymous RAM, and the host disk write
// rate the file-backed RAM causes (dirty guest pages written back by the host kernel).
#pragma once

#include <cstdint>
#include <string>

#include "bench/bench_support.hpp"

namespace vmckpt::bench {

struct RuntimeCostOptions {
  std::string guestDir;                  // kernel + initrd of the test guest
  std::uint64_t memoryBytes = 2ull << 30;
  int seconds = 30;                      // length of one measurement
  int runs = 3;                          // measurements per RAM backing
  std::string fsType = "btrfs";          // store filesystem (a loop device made here)
};

// Raises BenchError when it cannot measure.
Json measureRuntimeCost(const RuntimeCostOptions& o);

}  // namespace vmckpt::bench
