// A point in time by which a wait must end; every blocking call takes one.
#pragma once

#include <chrono>

namespace vmckpt {

class Deadline {
 public:
  using Clock = std::chrono::steady_clock;

  static Deadline in(std::chrono::milliseconds d) { return Deadline(Clock::now() + d); }
  static Deadline at(Clock::time_point t) { return Deadline(t); }

  bool expired() const { return Clock::now() >= when_; }
  // Milliseconds left, clamped to [0, INT_MAX] for poll(2).
  int pollTimeoutMs() const;
  std::chrono::milliseconds remaining() const;
  Clock::time_point when() const { return when_; }

 private:
  explicit Deadline(Clock::time_point t) : when_(t) {}
  Clock::time_point when_;
};

inline int Deadline::pollTimeoutMs() const {
  auto ms = remaining().count();
  if (ms <= 0) return 0;
  if (ms > 0x7fffffff) return 0x7fffffff;
  return static_cast<int>(ms);
}

inline std::chrono::milliseconds Deadline::remaining() const {
  auto left = std::chrono::ceil<std::chrono::milliseconds>(when_ - Clock::now());
  return left.count() < 0 ? std::chrono::milliseconds(0) : left;
}

}  // namespace vmckpt
