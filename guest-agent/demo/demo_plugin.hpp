// The demo plugin of vmckpt-plugin-demo, as a class: state in memory (a counter and a
// 4 MiB patterned buffer), PRESUSPEND pauses the counter, PRECHECKPOINT records a checksum
// of the state, RESUME/RESTART verify it ("plugin-demo: state ok|BAD") and go on. Every
// output line is one write(2) to stdout. Also driven in-process by tests/conformance.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "vmckpt/plugin.hpp"

namespace vmckpt::demo {

void say(const std::string& text);

class DemoPlugin : public vmckpt::Plugin {
 public:
  static constexpr size_t kWords = (4u << 20) / sizeof(uint64_t);

  DemoPlugin(bool failPresuspend, int hangSeconds);

  vmckpt::EventResult onPresuspend() override;
  vmckpt::EventResult onPrecheckpoint() override;
  vmckpt::EventResult onResume() override;
  vmckpt::EventResult onRestart(std::string_view deviceMapJson) override;

  // Counts one second unless paused; returns the new value, or 0 when paused.
  uint64_t tick();

  // Everything the plugin keeps in memory: what a VM snapshot captures of it. For tests
  // that stand in for a VM restore (tests/conformance).
  struct Memory {
    uint64_t counter = 0;
    std::vector<uint64_t> buffer;
    bool paused = false;
    std::optional<uint64_t> saved;
  };
  Memory memory();
  void setMemory(const Memory& m);
  std::optional<uint64_t> savedChecksum() const { return saved_; }

 private:
  uint64_t checksum() const;
  bool patternIntact() const;
  vmckpt::EventResult verifyAndGo();

  bool failPresuspend_;
  int hangSeconds_;
  std::vector<uint64_t> buffer_;
  std::mutex stateMutex_;
  std::atomic<uint64_t> counter_{0};
  bool paused_ = false;            // guarded by stateMutex_
  std::optional<uint64_t> saved_;  // touched only on the hook thread
};

}  // namespace vmckpt::demo
