#include "demo_plugin.hpp"

#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <thread>

namespace vmckpt::demo {
namespace {

std::mutex outputMutex;
constexpr uint64_t kSeed = 0x766d636b70742d64ULL;  // "vmckpt-d"

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

}  // namespace

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

DemoPlugin::DemoPlugin(bool failPresuspend, int hangSeconds)
    : failPresuspend_(failPresuspend), hangSeconds_(hangSeconds), buffer_(kWords) {
  for (size_t i = 0; i < kWords; ++i) buffer_[i] = mix64(kSeed ^ i);
}

vmckpt::EventResult DemoPlugin::onPresuspend() {
  say("plugin-demo: event PRESUSPEND");
  if (failPresuspend_) return vmckpt::EventResult::failed("asked to fail (--fail-presuspend)");
  if (hangSeconds_ > 0) std::this_thread::sleep_for(std::chrono::seconds(hangSeconds_));
  std::lock_guard lock(stateMutex_);  // no tick after this returns
  paused_ = true;
  return vmckpt::EventResult::done();
}

vmckpt::EventResult DemoPlugin::onPrecheckpoint() {
  say("plugin-demo: event PRECHECKPOINT");
  saved_ = checksum();
  say("plugin-demo: checksum " + hex(*saved_));
  return vmckpt::EventResult::done();
}

vmckpt::EventResult DemoPlugin::onResume() {
  say("plugin-demo: event RESUME");
  return verifyAndGo();
}

vmckpt::EventResult DemoPlugin::onRestart(std::string_view deviceMapJson) {
  say("plugin-demo: event RESTART");
  std::string map(deviceMapJson.substr(0, 200));
  say("plugin-demo: device_map " + map);
  return verifyAndGo();
}

uint64_t DemoPlugin::tick() {
  std::lock_guard lock(stateMutex_);
  return paused_ ? 0 : ++counter_;
}

DemoPlugin::Memory DemoPlugin::memory() {
  std::lock_guard lock(stateMutex_);
  return {counter_.load(), buffer_, paused_, saved_};
}

void DemoPlugin::setMemory(const Memory& m) {
  std::lock_guard lock(stateMutex_);
  counter_ = m.counter;
  buffer_ = m.buffer;
  paused_ = m.paused;
  saved_ = m.saved;
}

uint64_t DemoPlugin::checksum() const {
  uint64_t h = 0xcbf29ce484222325ULL ^ counter_.load();
  for (uint64_t w : buffer_) h = mix64(h ^ w);
  return h;
}

bool DemoPlugin::patternIntact() const {
  for (size_t i = 0; i < kWords; ++i)
    if (buffer_[i] != mix64(kSeed ^ i)) return false;
  return true;
}

vmckpt::EventResult DemoPlugin::verifyAndGo() {
  bool ok = patternIntact() && (!saved_ || *saved_ == checksum());
  say(ok ? "plugin-demo: state ok" : "plugin-demo: state BAD");
  saved_.reset();
  std::lock_guard lock(stateMutex_);
  paused_ = false;
  return ok ? vmckpt::EventResult::done() : vmckpt::EventResult::failed("state checksum mismatch");
}

}  // namespace vmckpt::demo
