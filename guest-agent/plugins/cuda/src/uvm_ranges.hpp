// The managed allocations libvmckpt-cuda.so backs with plain process memory (HMM mode):
// where each is, so that a free of one of them unmaps it instead of reaching the driver.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>

namespace vmckpt::cuda {

class UvmRanges {
 public:
  void add(std::uintptr_t start, std::size_t bytes);
  // The size of the range starting exactly at `start`, removed; nullopt if none starts there.
  std::optional<std::size_t> take(std::uintptr_t start);
  std::size_t count() const;
  std::size_t bytes() const;

 private:
  mutable std::mutex mu_;
  std::map<std::uintptr_t, std::size_t> ranges_;
  std::size_t bytes_ = 0;
};

}  // namespace vmckpt::cuda
