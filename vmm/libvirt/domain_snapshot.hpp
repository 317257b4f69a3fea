// Snapshots of libvirt-managed domains, kept in the vmckpt store under
// <home>/libvirt/snapshots/<domain>/ (the same catalog and manifest as vmckpt's own VMs).
// A snapshot's data/ holds the domain's XML (domain.xml), what vmckpt needs to put it back
// (libvirt.json: the disks' paths), the device state and RAM, and the disks.
//
// Capture, through libvirt's QMP passthrough (libvirt keeps the monitor):
//   fast path  memory file-backed and shared (<memoryBacking><source type='file'/>
//              <access mode='shared'/>): x-ignore-shared device-state migrate, RAM file
//              and disks cloned while paused (a copy where the store cannot reflink them);
//   live path  any other memory: QEMU's background-snapshot streams all of RAM while the
//              guest runs; the pause covers the disks and the device state.
// Restore (the revert libvirt 9.0 lacks for external snapshots): the domain, shut off,
// gets its disks back and is started paused with `-incoming defer`; vmckpt clones the RAM
// into the new QEMU's RAM file (fast path), feeds it the state, and resumes it through
// libvirt. The persistent definition afterwards is the snapshot's.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "common/error.hpp"
#include "vmm/lifecycle.hpp"
#include "vmm/libvirt/connection.hpp"
#include "vmm/store/catalog.hpp"

namespace vmckpt::vmm::libvirt {

std::string domainSnapshotsDir(const std::string& home, const std::string& domain);

struct DomainSnapshotOptions {
  std::string tag;
  AgentPolicy agent = AgentPolicy::automatic;
  std::chrono::milliseconds quiesceTimeout{10000};
};

// The domain must be running or paused. Fails with one line and the guest running as it
// was (thawed, no migration in flight, no partial snapshot visible).
Result<SnapshotResult> snapshotDomain(const Connection& conn, const std::string& home, const std::string& domain,
                                      const DomainSnapshotOptions& opts);

Result<std::vector<store::SnapshotEntry>> domainSnapshots(const std::string& home, const std::string& domain);
// By id, id prefix or tag; "" or "latest": the newest.
Result<store::SnapshotEntry> findDomainSnapshot(const std::string& home, const std::string& domain,
                                                const std::string& ref);

struct DomainRestoreOptions {
  bool paused = false;  // leave the restored domain paused
  bool force = false;   // destroy the domain first when it runs
};

struct DomainRestoreResult {
  std::string domain, snapshotId;
  bool defined = false;  // the domain did not exist and was defined from the snapshot
  bool paused = false;
  double totalMs = 0;
  double loadMs = 0;  // from migrate-incoming to the state loaded
  std::vector<std::string> xmlChanges;  // the device map's rewrite of the snapshot's XML
  std::string agentNote;
};

// The domain must be shut off (or --force). On failure the domain is left shut off with
// the snapshot's definition, and the error says what failed.
Result<DomainRestoreResult> restoreDomain(const Connection& conn, const std::string& home, const std::string& domain,
                                          const std::string& ref, const DomainRestoreOptions& opts);

}  // namespace vmckpt::vmm::libvirt
