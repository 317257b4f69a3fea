// The gate in front of every post: open, posts run with no lock (one atomic add and one
// load); closed by a checkpoint's drain, posts wait until it opens again, and close()
// returns only once no post is inside.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

namespace vmckpt::ib {

class Gate {
 public:
  void enter() {
    for (;;) {
      inside_.fetch_add(1);
      if (!closed_.load()) return;
      inside_.fetch_sub(1);
      std::unique_lock lock(mutex_);
      opened_.wait(lock, [this] { return !closed_.load(); });
    }
  }
  void leave() { inside_.fetch_sub(1); }

  // Closes the gate and waits (at most `limit`) until no post is inside. False on
  // timeout; the gate stays closed either way.
  bool close(std::chrono::milliseconds limit) {
    closed_.store(true);
    auto until = std::chrono::steady_clock::now() + limit;
    while (inside_.load() != 0) {
      if (std::chrono::steady_clock::now() > until) return false;
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
    return true;
  }
  void open() {
    {
      std::lock_guard lock(mutex_);
      closed_.store(false);
    }
    opened_.notify_all();
  }
  bool closed() const { return closed_.load(); }

 private:
  std::atomic<int> inside_{0};
  std::atomic<bool> closed_{false};
  std::mutex mutex_;
  std::condition_variable opened_;
};

// The gate in front of posts (closed from PRESUSPEND until the guest runs again).
Gate& gate();
// The gate in front of everything else that touches a real object (polls, notification
// requests, queries): closed only while a rebuild swaps the real objects.
Gate& rebuildGate();

class GatePass {
 public:
  explicit GatePass(Gate& g) : gate_(g) { gate_.enter(); }
  ~GatePass() { gate_.leave(); }
  GatePass(const GatePass&) = delete;
  GatePass& operator=(const GatePass&) = delete;

 private:
  Gate& gate_;
};

// The rebuild gate closed for a swap of the real objects (release, rebuild, connect),
// reopened when it ends; `ok` false when a poll did not leave within the limit.
struct RebuildGateClosed {
  RebuildGateClosed() : ok(rebuildGate().close(std::chrono::milliseconds(4000))) {}
  ~RebuildGateClosed() { rebuildGate().open(); }
  RebuildGateClosed(const RebuildGateClosed&) = delete;
  RebuildGateClosed& operator=(const RebuildGateClosed&) = delete;
  bool ok;
};

}  // namespace vmckpt::ib
