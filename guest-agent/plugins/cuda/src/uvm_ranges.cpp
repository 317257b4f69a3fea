#include "uvm_ranges.hpp"

namespace vmckpt::cuda {

void UvmRanges::add(std::uintptr_t start, std::size_t bytes) {
  std::lock_guard l(mu_);
  ranges_[start] = bytes;
  bytes_ += bytes;
}

std::optional<std::size_t> UvmRanges::take(std::uintptr_t start) {
  std::lock_guard l(mu_);
  auto it = ranges_.find(start);
  if (it == ranges_.end()) return std::nullopt;
  std::size_t n = it->second;
  bytes_ -= n;
  ranges_.erase(it);
  return n;
}

std::size_t UvmRanges::count() const {
  std::lock_guard l(mu_);
  return ranges_.size();
}

std::size_t UvmRanges::bytes() const {
  std::lock_guard l(mu_);
  return bytes_;
}

}  // namespace vmckpt::cuda
