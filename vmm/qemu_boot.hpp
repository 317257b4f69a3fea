// Launching a VM's QEMU and connecting to it, shared by start (cold boot) and restore
// (-incoming defer). The result kills QEMU again when dropped unless release()d, so a
// failure anywhere after launch leaves no QEMU behind.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <utility>

#include "common/deadline.hpp"
#include "common/error.hpp"
#include "qmp/qmp_client.hpp"
#include "vmm/accel.hpp"
#include "vmm/store_root.hpp"
#include "vmm/vm_record.hpp"
#include "vmm/vm_spec.hpp"

namespace vmckpt::vmm {

struct BootRequest {
  std::string home;      // store home (KVM probe cache)
  bool incoming = false; // -incoming defer: wait for device state (restore)
  std::string machine;   // exact machine type to use (restore); empty: the spec's
};

class BootedQemu {
 public:
  // The moved-from object no longer owns the process (it must not kill it).
  BootedQemu(BootedQemu&& o) noexcept
      : pid_(std::exchange(o.pid_, -1)),
        qmp_(std::move(o.qmp_)),
        accel_(std::move(o.accel_)),
        machine_(std::move(o.machine_)),
        paths_(std::move(o.paths_)),
        released_(o.released_) {}
  BootedQemu& operator=(BootedQemu&&) = delete;
  ~BootedQemu();

  pid_t pid() const { return pid_; }
  qmp::Client& qmp() { return *qmp_; }
  const AccelChoice& accel() const { return accel_; }
  const std::string& machine() const { return machine_; }  // resolved, e.g. pc-q35-7.2
  std::string qemuVersion() const;
  // Keep QEMU running after this object is gone, and free its QMP socket (QEMU serves
  // one client at a time).
  void release() {
    released_ = true;
    qmp_.reset();
  }

 private:
  friend Result<BootedQemu> bootQemu(const VmSpec&, const VmPaths&, const BootRequest&);
  BootedQemu(pid_t pid, qmp::Client c, AccelChoice a, std::string machine, const VmPaths& p)
      : pid_(pid), qmp_(std::move(c)), accel_(std::move(a)), machine_(std::move(machine)), paths_(p) {}
  pid_t pid_;
  std::optional<qmp::Client> qmp_;
  AccelChoice accel_;
  std::string machine_;
  VmPaths paths_;
  bool released_ = false;
};

// Precondition: no live QEMU for this VM (a stale pid file is cleaned up here).
Result<BootedQemu> bootQemu(const VmSpec& spec, const VmPaths& paths, const BootRequest& req);

Result<qmp::Client> connectQmp(const VmPaths& p, Deadline deadline);

// Records a successful boot in lifecycle.json's fields (start time, accel, machine).
void noteBoot(VmRecord& rec, const BootedQemu& booted);

// `cont` after an outgoing migration (QEMU in postmigrate, or getting there): retried
// while QEMU says "Migration is not finalized yet", up to the deadline. Returns at the
// reply, so it also suits a guest that may already run again.
Status contAfterMigration(qmp::Client& c, Deadline deadline);
// An outgoing migration still in flight is cancelled, and waited for until it has ended
// (completed, failed or cancelled): only then does `cont` leave the guest running, since
// a migration that completes later stops it again. Returns what it found in flight.
Result<bool> settleMigration(qmp::Client& c, Deadline deadline);
bool migrationNotFinalized(const Error& e);

// The concrete machine type behind an alias ("q35" -> "pc-q35-7.2").
Result<std::string> resolveMachine(qmp::Client& c, const std::string& requested);

}  // namespace vmckpt::vmm
