// lifecycle.json: what happened to a VM across vmckpt invocations (starts, stops, which
// snapshot its live state descends from). Written atomically; unknown keys tolerated.
#pragma once

#include <string>

#include "common/error.hpp"
#include "vmm/store_root.hpp"

namespace vmckpt::vmm {

struct VmRecord {
  std::string startedAt, stoppedAt, stopKind;
  std::string accel, accelReason;
  std::string machine;  // resolved machine type of the running QEMU (e.g. pc-q35-7.2)
  std::string head;     // snapshot the live state descends from (parent of the next one)
  bool pendingRestored = false;  // restored --paused: the agent gets `restored` at the next resume
};

VmRecord loadRecord(const VmPaths& p);
Status saveRecord(const VmPaths& p, const VmRecord& r);
std::string nowIso();

}  // namespace vmckpt::vmm
