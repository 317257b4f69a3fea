// The public operations on VMs (one list). Each states its precondition; a call in the
// wrong state fails with Errc::wrongState and changes nothing.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "common/error.hpp"
#include "vmm/disk_image.hpp"
#include "vmm/store/catalog.hpp"
#include "vmm/store/store_mode.hpp"
#include "vmm/store_root.hpp"
#include "vmm/vm_spec.hpp"

namespace vmckpt::vmm {

class VmSnapshot;

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
  std::optional<store::StoreMode> storeMode;  // empty: the best the store's filesystem allows
};

// A pause or resume and the QMP event that confirmed it.
struct Transition {
  VmStatus status;
  std::string event;     // "STOP" / "RESUME"
  double elapsedMs = 0;  // from sending the command to the event
};

enum class AgentPolicy {
  required,   // no snapshot without the guest agent's quiesce
  automatic,  // use the agent if it answers within a short deadline; otherwise go on without
  off,        // do not talk to the agent
};
Result<AgentPolicy> parseAgentPolicy(std::string_view s);

struct SnapshotOptions {
  std::string tag;
  std::optional<store::StoreMode> mode;  // empty: btrfs when live/ is a subvolume, else reflink, else copy
  AgentPolicy agent = AgentPolicy::automatic;
  std::chrono::milliseconds quiesceTimeout{10000};
  // How long the guest gets to release each passthrough device (device_del to DEVICE_DELETED).
  std::chrono::milliseconds unplugTimeout{5000};
  // QEMU's background-snapshot (userfaultfd write-protect): RAM is written into the
  // snapshot while the guest runs; the pause covers only the device state. For VMs with
  // anonymous RAM (create --ram anon), where the fast path cannot capture RAM.
  bool live = false;
};

struct SnapshotResult {
  store::Manifest manifest;  // id, parent, timings, devstate and exclusive bytes, agent
  std::string dir;
  std::string agentNote;  // why the agent was not used, or what went wrong after the capture
};

// A snapshot of the VMs of one job (snapshotGroup): one snapshot per VM, all captured
// while every guest of the group was stopped.
struct GroupSnapshotResult {
  std::string group;  // the job's name (--group)
  std::string id;     // this group snapshot's id, in every member's manifest
  std::vector<SnapshotResult> members;  // in the order the VMs were named
  double pauseMs = 0;  // first STOP to last RESUME over the group (QEMU's timestamps, one host clock)
  double exchangeMs = 0;       // the agent rounds after the resume (group_rounds.hpp); 0 without agents
  size_t publishedBytes = 0;   // the members' published ids, merged, as sent in 'connect'
  double totalMs = 0;
};

struct RestoreOptions {
  std::string asName;  // restore into a new VM of this name, beside the original
  bool paused = false; // leave the restored guest paused
  DeviceMap deviceMap; // --map: merged over the snapshot spec's map, stored, sent to the agent
  bool inGroup = false; // restoreGroup's own call: a member whose devices were released may load
};

// Live migration (`vmckpt migrate` on the source, `vmckpt receive` on the destination).
struct MigrationProgress {
  std::string status;  // QEMU's: "setup", "active", "postcopy-active", ...
  std::uint64_t transferredBytes = 0, remainingBytes = 0, totalBytes = 0;
  std::uint64_t dirtyPagesRate = 0;  // pages/s
  std::uint64_t iterations = 0;      // dirty-sync count
  double mbps = 0;
  double elapsedMs = 0;
};

struct MigrateOptions {
  std::string to;  // HOST:PORT where `vmckpt receive` listens
  AgentPolicy agent = AgentPolicy::automatic;
  std::chrono::milliseconds quiesceTimeout{10000};
  std::chrono::milliseconds downtimeLimit{300};  // QEMU downtime-limit
  std::uint64_t bandwidthBytesPerSec = 0;        // 0: unlimited (QEMU's 128 MiB/s default is raised)
  bool postcopy = false;                         // switch to postcopy after the first pass
  bool cleanup = false;                          // delete the source VM after success
  std::chrono::seconds timeout{600};
  std::function<void(const MigrationProgress&)> progress;  // about twice a second while RAM travels
};

struct MigrateResult {
  VmStatus source;  // stopped after success
  std::string to;
  double totalMs = 0;
  double downtimeMs = 0;  // QEMU's measured downtime
  std::uint64_t transferredBytes = 0;
  bool postcopy = false;
  bool cleanedUp = false;
  std::string agentNote;
};

struct ReceiveOptions {
  std::string listen;  // ADDR:PORT
  DeviceMap deviceMap;
  std::chrono::seconds timeout{600};               // for the source to connect and finish
  std::function<void(const std::string&)> onListening;  // told the bound address once listening
};

struct ReceiveResult {
  VmStatus status;  // running on this host
  std::string from;
  double totalMs = 0;  // from the source's connection to the guest running here
  double agentMs = 0;
  std::string agentNote;
};

// Export/import of snapshots as a self-describing stream (vmm/transfer/stream.hpp).
struct ExportOptions {
  std::string parent;  // snapshot the importing store already has: only what changed travels
  std::function<void(std::uint64_t done, std::uint64_t total)> progress;
};

struct ExportResult {
  std::string vm, snapshot, parent;
  std::uint64_t streamBytes = 0;  // bytes written to the output
  std::uint64_t dataBytes = 0;    // logical size of the snapshot's files
  std::uint64_t bytesRead = 0;    // read from both snapshots' files (extents shared with the parent are not)
};

struct ImportOptions {
  std::string asName;  // import under this VM name instead of the stream's
  DeviceMap deviceMap; // stored in the VM spec for the next restore
  std::function<void(std::uint64_t done)> progress;
};

struct ImportResult {
  std::string vm, snapshot, parent;
  std::uint64_t streamBytes = 0;
  bool createdVm = false;  // the VM did not exist in this store: made (state created)
};

// What `recover` (or any command that found an interrupted operation) did.
struct RecoveryReport {
  std::string operation;             // "snapshot" or "restore"; empty when nothing was pending
  std::string snapshot;              // the snapshot it was making or restoring
  std::vector<std::string> actions;  // one line each, in order
  Json toJson() const;
};

// The members of one group snapshot restored together (restoreGroup).
struct GroupRestoreResult {
  std::string group;  // the group's name (--group at snapshot time)
  std::string id;     // the group snapshot's id
  struct Member {
    std::string vm, snapshot;
    double restoreMs = 0;  // loading it, paused
    double agentMs = 0;    // its agent's 'restored' (RESTART), 'connect' and 'thaw'
    std::string agentNote;  // empty when the agent took all three
  };
  std::vector<Member> members;  // in the order the VMs were named
  double resumeSpreadMs = 0;    // first member continuing to the last (host clock)
  double exchangeMs = 0;        // the three agent rounds (restart, connect, thaw), all members
  size_t publishedBytes = 0;    // the members' published ids, merged, as sent in 'connect'
  double totalMs = 0;
};

struct RestoreResult {
  VmStatus status;
  std::string snapshot;
  double restoreMs = 0;  // from the start of the command to the guest running (or ready, if paused)
  double agentMs = 0;    // the agent's `restored` (RESTART to plugins, fs thaw), after running
  std::string agentNote; // empty when the agent acknowledged `restored` (or was not asked)
  // Where restoreMs went: checks and writable clone, QEMU start (-incoming defer, QMP
  // connect), device state load, cont to RESUME, passthrough devices plugged.
  struct Phases {
    double cloneMs = 0, qemuStartMs = 0, devstateMs = 0, contMs = 0, replugMs = 0;
  } phases;
};

struct SnapshotUsage {
  std::uint64_t totalBytes = 0;      // on-disk bytes of its files
  std::uint64_t exclusiveBytes = 0;  // shared with no other snapshot of the VM: what deleting it frees
  std::uint64_t sharedBytes = 0;
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

  // Deletes the VM and all its files and snapshots. Precondition: created or stopped.
  Status remove(const std::string& name);

  // Captures the guest: agent quiesce, passthrough devices unplugged, pre-flush, pause,
  // device state, copy-on-write capture, resume, devices plugged back, agent thaw,
  // manifest, publish. Any failure resumes the guest, plugs its devices back, thaws it and
  // leaves no snapshot behind. Precondition: running or paused (a paused guest stays
  // paused); running when the VM has passthrough devices (the guest must release them).
  Result<SnapshotResult> snapshot(const std::string& name, const SnapshotOptions& opts);

  // The VMs of one job (single host): quiesce all, pause all, capture all, resume all,
  // then publish all. Any failure resumes and thaws every guest and leaves no member's
  // snapshot behind. The fast path only (RAM files in the store), each VM at most once.
  Result<GroupSnapshotResult> snapshotGroup(const std::vector<std::string>& names, const std::string& group,
                                            const SnapshotOptions& opts);

  // Brings a snapshot back: a writable clone of it, QEMU with -incoming defer on the
  // clone, device state, cont. In place precondition: the VM is created or stopped.
  // With asName: no VM of that name exists; the original is untouched.
  Result<RestoreResult> restore(const std::string& name, const std::string& snapshotRef, const RestoreOptions& opts);

  // The members of one group snapshot (`ref`: its group id, or the group's name for its
  // newest snapshot), restored together: each loaded paused, then all continued, then
  // each agent told 'restored'. Plugins that drained for the snapshot (ib) resume only
  // when every member runs, so no member talks to a peer that is still loading.
  // `names` must be exactly the group's members. Precondition: each is created or
  // stopped. A failure stops (force) the members this call restored and says which.
  Result<GroupRestoreResult> restoreGroup(const std::vector<std::string>& names, const std::string& ref,
                                          const RestoreOptions& opts);

  // Live migration to `vmckpt receive` on another store: agent quiesce, pre-copy (or
  // postcopy) over TCP, the source left stopped. Any failure before the receiver runs
  // the guest (or before the switch to postcopy) leaves the source running.
  // Precondition: running, and no disks (not migrated yet: see wire::kDisksUnsupported).
  Result<MigrateResult> migrate(const std::string& name, const MigrateOptions& opts);
  // Waits for one incoming migration into a new VM `name`, then runs it here. Precondition:
  // no VM of that name.
  Result<ReceiveResult> receive(const std::string& name, const ReceiveOptions& opts);

  // Writes a snapshot as a stream to `outFd` (only the changes against opts.parent).
  Result<ExportResult> exportSnapshot(const std::string& name, const std::string& ref, const ExportOptions& opts,
                                      int outFd);
  // Reads one stream from `inFd` into this store; nothing is visible unless it is whole
  // and every checksum matches.
  Result<ImportResult> importSnapshot(int inFd, const ImportOptions& opts);

  // Finishes or rolls back an operation a killed vmckpt left (see journal.hpp); every
  // command that locks a VM does this first. Reports what it did.
  Result<RecoveryReport> recover(const std::string& name);

  // Any state.
  Result<std::vector<store::SnapshotEntry>> snapshots(const std::string& name);
  Result<store::SnapshotEntry> findSnapshot(const std::string& name, const std::string& ref);
  Result<std::vector<SnapshotUsage>> snapshotUsage(const std::vector<store::SnapshotEntry>& all);
  // Children of the deleted snapshot take its parent. Any state.
  Status deleteSnapshot(const std::string& name, const std::string& ref);

 private:
  friend class VmSnapshot;  // snapshot_job.hpp: one VM's snapshot in stages
  // What an operation that changes a VM holds while it runs.
  struct Held {
    VmSpec spec;
    VmPaths paths;
    VmLock lock;
  };
  Result<VmSpec> loadSpec(const std::string& name) const;
  Result<Held> lockVm(const std::string& name);
  RecoveryReport recoverLocked(const Held& held);
  Result<VmStatus> statusLocked(const std::string& name, const VmSpec& spec);
  Result<Transition> transition(const std::string& name, bool toPaused, bool sendRestored = true);
  // Sends the agent the 'restored' a `restore --paused` left pending (then clears it):
  // nullopt when none was pending, else the agent's answer. With `published` (a group
  // restore), the 'restored' says CONNECT follows and what the plugins published is
  // added to *published ({"<plugin>": [objects]}).
  Result<std::optional<Status>> deliverPendingRestored(const Held& held, nlohmann::json* published = nullptr);

  StoreRoot root_;
  RecoveryReport lastRecovery_;  // of the latest lockVm
  bool reportRecovery_ = true;   // false while recover() runs: its caller prints the report
};

}  // namespace vmckpt::vmm
