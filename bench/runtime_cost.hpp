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
  // The region vmckpt-memtest rewrites over and over; 0: three quarters of memoryBytes.
  std::uint64_t workingSetBytes = 0;
  // Unmeasured `bandwidth` before each measurement, so that both backings start from a
  // guest that has been writing for a while (not from the end of the initial fill).
  int warmupSeconds = 5;
  // Put the loop device in direct-I/O mode, so that the store's writes reach the disk
  // as on a real block device instead of being cached a second time (and counted as
  // dirty a second time) in the page cache of the loop image's file.
  bool loopDirectIo = true;
  // Also measure file-backed RAM with host writeback tuned for guest RAM (see
  // bench/RUNTIME_COST.md): vm.dirty_background_bytes, vm.dirty_bytes and
  // vm.dirty_expire_centisecs are raised for those runs only and restored after each
  // (also when a step fails). They are host-wide settings: opt-in.
  bool tunedWriteback = false;
};

// Raises BenchError when it cannot measure.
Json measureRuntimeCost(const RuntimeCostOptions& o);

}  // namespace vmckpt::bench
