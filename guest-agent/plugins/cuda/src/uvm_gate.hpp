// The gate in front of the CUDA driver: every entry point the CUDA runtime (or a program)
// obtains through cuGetProcAddress is handed out gated. While libvmckpt-cuda.so moves
// managed memory out of the driver's way (and until it moves it back) the gate is closed:
// calls wait at it, and it closes only once no call is inside the driver.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>

namespace vmckpt::cuda {

class Gate {
 public:
  static Gate& instance();
  // Around every gated call: enter() waits while the gate is closed.
  void enter();
  void leave() { inside_.fetch_sub(1, std::memory_order_seq_cst); }
  // Closes, then waits until no call is inside; false (and open again) at the limit.
  bool close(std::chrono::milliseconds limit);
  void open();
  bool closed() const { return closed_.load(); }

 private:
  std::atomic<int> closed_{0};
  std::atomic<int> inside_{0};
  std::mutex mu_;
  std::condition_variable opened_;
};

// A gated stand-in for the driver function `real` (its name for the few that cannot be
// gated: float arguments by value), or `real` itself when none can be made.
void* gatedEntry(const char* name, void* real);
// How many distinct entry points are gated, and whether one had to be handed out ungated
// (more than the stand-ins there are): then nothing can be parked safely.
int gatedEntries();
bool someEntryUngated();

}  // namespace vmckpt::cuda
