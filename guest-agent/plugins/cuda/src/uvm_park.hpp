// Managed (unified) memory moved out of the driver's way for its checkpoint, which
// refuses it, and back after restore: each range's contents copied into ordinary memory
// elsewhere and the managed allocation freed; afterwards the allocations are made again
// in their original order, each must come back at its old address (the restart fails
// loudly if not), and the contents are copied in. Callers close the gate first
// (uvm_gate.hpp) so no GPU work runs meanwhile; CPU threads that touch a range while it
// is parked wait in a SIGSEGV handler until it is managed again.
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace vmckpt::cuda {

// The driver calls parking needs, resolved from libcuda (never gated).
struct ParkDriver {
  int (*allocManaged)(unsigned long long*, std::size_t, unsigned) = nullptr;
  int (*memFree)(unsigned long long) = nullptr;
  int (*ctxSynchronize)() = nullptr;
  int (*ctxSetCurrent)(void*) = nullptr;
};

class ManagedMemory {
 public:
  struct Range {
    std::uintptr_t ptr = 0;
    std::size_t bytes = 0;
    unsigned flags = 0;
    void* ctx = nullptr;    // the context current at allocation
    void* aside = nullptr;  // parked: where the contents are meanwhile
    // The driver allocation it lies in: itself, or after a restore one allocation for a
    // run of ranges that were adjacent (the allocator gives a run back whole).
    std::uintptr_t base = 0;
  };

  void added(const Range& r);
  // For a free of `ptr`: nullopt when no range starts there (the driver's business);
  // else the range is forgotten and the answer is the driver allocation to free now, or 0
  // when other ranges still live in it.
  std::optional<std::uintptr_t> removed(std::uintptr_t ptr);
  std::size_t count() const;
  std::size_t bytes() const;
  bool parked() const;

  // Every range into ordinary memory: "" on success, else why (and nothing parked).
  std::string park(const ParkDriver& d);
  // Every range back into managed memory: "" on success, else why.
  std::string unpark(const ParkDriver& d);

 private:
  std::string unparkFirst(const ParkDriver& d, std::size_t n);

  mutable std::mutex mu_;
  std::vector<Range> ranges_;  // in allocation order
  bool parked_ = false;
};

}  // namespace vmckpt::cuda
