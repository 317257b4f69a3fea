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

#include "demo_plugin.hpp"

using vmckpt::demo::DemoPlugin;
using vmckpt::demo::say;

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
