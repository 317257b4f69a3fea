// The public operations on VMs (one list). Each states its precondition; a call in the
// wrong state fails with Errc::wrongState and changes nothing.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "common/error.hpp"
#include "vmm/disk_image.hpp"
#include "vmm/store_root.hpp"
#include "vmm/vm_spec.hpp"

namespace vmckpt::vmm {

enum class VmState { created, running, paused, stopped };
std::string_view vmStateName(VmState s);

struct VmStatus {
  std::string name;
  VmState state = VmState::created;
  std::string qemuStatus;  // QEMU's run state ("running", "paused", "postmigrate", ...) when alive
  pid_t pid = 0;
  std::string accel;        // effective accel of the current/last run: "kvm" or "tcg"
  std::string accelReason;  // why that accel
  std::string startedAt;    // ISO 8601 UTC of the last start
  std::string stoppedAt;
  std::string note;  // one line worth telling the user (e.g. QEMU exited on its own)
  VmSpec spec;
  std::string dir;
  Json toJson() const;
};

struct CreateRequest {
  VmSpec spec;                // name, sizes, boot params; disks filled in from `disks`
  std::string kernel;         // path; empty for disk boot
  std::string initrd;         // path; optional
  std::vector<DiskArg> disks;
};

// A pause or resume and the QMP event that confirmed it.
struct Transition {
  VmStatus status;
  std::string event;     // "STOP" / "RESUME"
  double elapsedMs = 0;  // from sending the command to the event
};

struct StopOptions {
  bool force = false;  // QMP quit (SIGKILL if QEMU does not answer) instead of guest power-down
  std::chrono::seconds timeout{30};  // how long the guest may take to power down
};

class VmManager {
 public:
  explicit VmManager(StoreRoot root) : root_(std::move(root)) {}
  const StoreRoot& root() const { return root_; }

  // Creates a VM: copies kernel/initrd and disks into its directory. Nothing is visible
  // under the name until everything is in place. Precondition: the name is unused.
  Result<VmStatus> create(const CreateRequest& req);

  // Boots QEMU (daemonized). Precondition: created or stopped.
  Result<VmStatus> start(const std::string& name);

  // Stops the vCPUs (QMP stop, waits for STOP). Precondition: running.
  Result<Transition> pause(const std::string& name);

  // Continues the vCPUs (QMP cont, waits for RESUME). Precondition: paused.
  Result<Transition> resume(const std::string& name);

  // Ends the VM: guest power-down (ACPI) and wait, or with force QMP quit / SIGKILL.
  // Precondition: running or paused.
  Result<VmStatus> stop(const std::string& name, const StopOptions& opts);

  // Any state.
  Result<VmStatus> status(const std::string& name);
  Result<std::vector<VmStatus>> list();

  // Deletes the VM and all its files. Precondition: created or stopped.
  Status remove(const std::string& name);

 private:
  // What an operation that changes a VM holds while it runs.
  struct Held {
    VmSpec spec;
    VmPaths paths;
    VmLock lock;
  };
  Result<VmSpec> loadSpec(const std::string& name) const;
  Result<Held> lockVm(const std::string& name);
  Result<VmStatus> statusLocked(const std::string& name, const VmSpec& spec);
  Result<Transition> transition(const std::string& name, bool toPaused);

  StoreRoot root_;
};

}  // namespace vmckpt::vmm
