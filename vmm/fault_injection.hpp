// Fault injection for crash testing, compiled in: VMCKPT_FAULT=<point>:<action> makes
// the snapshot, restore or migrate that reaches <point> fail there. A testing aid, documented in
// the README; without the variable every point is a no-op.
//   points:  before-quiesce, after-quiesce, after-stop, mid-devstate, after-capture,
//            before-publish, mid-restore, mid-stream (snapshot --live, while RAM is written),
//            mirrors-ready (migrate of a VM with disks: mirrors in sync, before the quiesce),
//            before-unplug, mid-unplug (each passthrough device removed), after-unplug,
//            replug (the snapshot's device_add after cont fails; its rollback plugs them)
//   actions: error (the operation fails as if that step had), kill (this vmckpt process
//            is SIGKILLed), kill-qemu (QEMU is SIGKILLed, the operation goes on and meets it)
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <string_view>

#include "common/error.hpp"

namespace vmckpt::vmm {

enum class FaultAction { error, kill, killQemu };

struct FaultSpec {
  std::string point;
  FaultAction action = FaultAction::error;
};

// Parses "<point>:<action>"; an empty text is no fault. Unknown points or actions are
// Errc::invalidArgument, so that a typo in a test does not pass silently.
Result<std::optional<FaultSpec>> parseFaultSpec(std::string_view text);

// The injection point `point`: no-op unless VMCKPT_FAULT names it (read once per process;
// invalid text fails every point). `qemuPid` is the process 'kill-qemu' ends (0: none).
Status faultPoint(std::string_view point, pid_t qemuPid);

}  // namespace vmckpt::vmm
