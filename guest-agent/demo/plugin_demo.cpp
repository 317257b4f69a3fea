// vmckpt-plugin-demo: a test workload that uses libvmckpt like a device plugin would.
// It holds state in memory (a counter and a 4 MiB patterned buffer), registers the
// plugin "demo" with vmckpt-agent, and on each event prints "plugin-demo: event NAME".
// PRESUSPEND pauses the counter, PRECHECKPOINT records a checksum of the state, and
// RESUME/RESTART verify the state ("plugin-demo: state ok" or "... state BAD") and let
// the counter go on. It prints "counter N" once a second while not paused.
//
//   vmckpt-plugin-demo [--name NAME] [--fail-presuspend] [--hang-presuspend[=SECONDS]]
//
// --fail-presuspend answers PRESUSPEND failed; --hang-presuspend sleeps in PRESUSPEND
// (default 3600 s) before answering. Every output line is one write(2).
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "vmckpt/plugin.hpp"

namespace {

std::mutex outputMutex;

void say(const std::string& text) {
  std::string line = text + "\n";
  std::lock_guard lock(outputMutex);
  size_t off = 0;
  while (off < line.size()) {
    ssize_t n = ::write(STDOUT_FILENO, line.data() + off, line.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    off += static_cast<size_t>(n);
  }
}

uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

std::string hex(uint64_t v) {
  char b[17];
  std::snprintf(b, sizeof b, "%016llx", static_cast<unsigned long long>(v));
  return b;
}

class DemoPlugin : public vmckpt::Plugin {
 public:
  static constexpr size_t kWords = (4u << 20) / sizeof(uint64_t);
  static constexpr uint64_t kSeed = 0x766d636b70742d64ULL;  // "vmckpt-d"

  DemoPlugin(bool failPresuspend, int hangSeconds)
      : failPresuspend_(failPresuspend), hangSeconds_(hangSeconds), buffer_(kWords) {
    for (size_t i = 0; i < kWords; ++i) buffer_[i] = mix64(kSeed ^ i);
  }

  vmckpt::EventResult onPresuspend() override {
    say("plugin-demo: event PRESUSPEND");
    if (failPresuspend_) return vmckpt::EventResult::failed("asked to fail (--fail-presuspend)");
    if (hangSeconds_ > 0) std::this_thread::sleep_for(std::chrono::seconds(hangSeconds_));
    std::lock_guard lock(stateMutex_);  // no tick after this returns
    paused_ = true;
    return vmckpt::EventResult::done();
  }

  vmckpt::EventResult onPrecheckpoint() override {
    say("plugin-demo: event PRECHECKPOINT");
    saved_ = checksum();
    say("plugin-demo: checksum " + hex(*saved_));
    return vmckpt::EventResult::done();
  }

  vmckpt::EventResult onResume() override {
    say("plugin-demo: event RESUME");
    return verifyAndGo();
  }

  vmckpt::EventResult onRestart(std::string_view deviceMapJson) override {
    say("plugin-demo: event RESTART");
    std::string map(deviceMapJson.substr(0, 200));
    say("plugin-demo: device_map " + map);
    return verifyAndGo();
  }

  // Counts one second unless paused; returns the new value, or 0 when paused.
  uint64_t tick() {
    std::lock_guard lock(stateMutex_);
    return paused_ ? 0 : ++counter_;
  }

 private:
  uint64_t checksum() const {
    uint64_t h = 0xcbf29ce484222325ULL ^ counter_.load();
    for (uint64_t w : buffer_) h = mix64(h ^ w);
    return h;
  }

  bool patternIntact() const {
    for (size_t i = 0; i < kWords; ++i)
      if (buffer_[i] != mix64(kSeed ^ i)) return false;
    return true;
  }

  vmckpt::EventResult verifyAndGo() {
    bool ok = patternIntact() && (!saved_ || *saved_ == checksum());
    say(ok ? "plugin-demo: state ok" : "plugin-demo: state BAD");
    saved_.reset();
    std::lock_guard lock(stateMutex_);
    paused_ = false;
    return ok ? vmckpt::EventResult::done() : vmckpt::EventResult::failed("state checksum mismatch");
  }

  bool failPresuspend_;
  int hangSeconds_;
  std::vector<uint64_t> buffer_;
  std::mutex stateMutex_;
  std::atomic<uint64_t> counter_{0};
  bool paused_ = false;  // guarded by stateMutex_
  std::optional<uint64_t> saved_;  // touched only on the hook thread
};

}  // namespace

int main(int argc, char** argv) {
  std::string name = "demo";
  bool fail = false;
  int hang = 0;
  if (const char* e = std::getenv("VMCKPT_DEMO_FAIL_PRESUSPEND"); e && *e == '1') fail = true;
  if (const char* e = std::getenv("VMCKPT_DEMO_HANG_PRESUSPEND"); e && *e) hang = std::atoi(e);
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "--fail-presuspend") {
      fail = true;
    } else if (a == "--hang-presuspend") {
      hang = 3600;
    } else if (a.starts_with("--hang-presuspend=")) {
      hang = std::atoi(argv[i] + std::strlen("--hang-presuspend="));
      if (hang <= 0) hang = 3600;
    } else if (a == "--name" && i + 1 < argc) {
      name = argv[++i];
    } else {
      std::fprintf(stderr,
                   "usage: vmckpt-plugin-demo [--name NAME] [--fail-presuspend] [--hang-presuspend[=SECONDS]]\n");
      return 2;
    }
  }

  DemoPlugin plugin(fail, hang);
  bool registered = false;
  std::string lastError;
  timespec next{};
  ::clock_gettime(CLOCK_MONOTONIC, &next);
  for (;;) {
    if (!registered) {
      int rc = vmckpt::registerPlugin(plugin, name);
      if (rc == 0) {
        registered = true;
        say("plugin-demo: registered as " + name + " (pid " + std::to_string(::getpid()) + ")");
      } else if (std::string err = std::strerror(-rc); err != lastError) {
        say("plugin-demo: register failed: " + err + " (retrying every second)");
        lastError = err;
      }
    }
    next.tv_sec += 1;
    while (::clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, nullptr) == EINTR) {
    }
    timespec now{};
    ::clock_gettime(CLOCK_MONOTONIC, &now);
    if (now.tv_sec > next.tv_sec + 1) next = now;  // fell behind (e.g. a restore): no burst
    if (uint64_t n = plugin.tick(); n != 0) say("counter " + std::to_string(n));
  }
}
