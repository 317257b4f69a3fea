// What every part of vmckpt-bench shares: fatal-error helpers, median/min/max, the
// guest's serial console, and a meter of bytes written to a block device.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/error.hpp"
#include "common/strings.hpp"
#include "vmm/store_root.hpp"

namespace vmckpt::bench {

using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;

// A benchmark step that cannot go on. Methods catch it and report the method as failed;
// the runner never drops a failed method from the results.
struct BenchError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

[[noreturn]] void raise(const std::string& msg);

template <class T>
T check(Result<T> r, const std::string& what) {
  if (!r) raise(cat(what, ": ", r.error().message()));
  return std::move(*r);
}
void check(Status s, const std::string& what);

double msSince(Clock::time_point t0);

// SIGINT and SIGTERM end a run cleanly: the signal only sets a flag, the next wait on a
// guest raises, and the destructors stop the guests and detach the loop devices (a
// killed bench would leave both behind). main() installs the handlers once.
void installStopHandlers();
int stopSignal();  // the signal that asked to stop, or 0
void raiseIfStopped();

// {"median", "min", "max", "runs"}; null when v is empty.
Json stats(std::vector<double> v);

// The guest's serial console (run/serial.log for output, run/console.sock for input).
class Console {
 public:
  explicit Console(vmm::VmPaths p) : p_(std::move(p)) {}
  std::string text() const;
  std::string textFrom(size_t from) const;  // the log from byte offset `from` on
  size_t size() const;
  // Waits for `text` after byte offset `from`; returns the offset just past it.
  size_t waitFor(const std::string& text, size_t from, std::chrono::seconds timeout) const;
  // Like waitFor, but also fails as soon as `failure` appears after `from`. Both fail at
  // once when the guest's workload exited (the test guest's init says so) or on a stop
  // signal.
  size_t waitForEither(const std::string& text, const std::string& failure, size_t from,
                       std::chrono::seconds timeout) const;
  void send(const std::string& line) const;
  // Sends "verify" to vmckpt-memtest and waits for "verify ok" (raises on a mismatch).
  void verifyMemory(std::chrono::seconds timeout) const;
  // Sends "dirty MIB" and waits until the guest has rewritten them.
  void dirty(std::uint64_t mib, std::chrono::seconds timeout) const;

 private:
  vmm::VmPaths p_;
};

// Sectors written to a block device (/sys/block/NAME/stat), as bytes.
class DiskMeter {
 public:
  explicit DiskMeter(std::string device);  // "/dev/loop3"
  std::uint64_t bytesWritten() const;
  const std::string& device() const { return device_; }

 private:
  std::string device_;
  std::string statPath_;
};

// Flushes the filesystem that holds `path` (syncfs), so that a DiskMeter reading after
// it counts everything an operation wrote.
void syncFs(const std::string& path);

// Allocated bytes of a file (st_blocks), the disk it costs.
std::uint64_t allocatedBytes(const std::string& path);

}  // namespace vmckpt::bench
