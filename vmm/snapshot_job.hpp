// One VM's snapshot in stages (internal to vmm/): VmManager::snapshot runs them in a row,
// VmManager::snapshotGroup runs each stage across all the VMs of a job before the next
// (quiesce all, pause all, capture all, resume all, publish all), so that no guest runs
// while another is being captured.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "common/error.hpp"
#include "common/signal_block.hpp"
#include "host-plugins/vfio/hotplug.hpp"
#include "vmm/guest_quiesce.hpp"
#include "vmm/journal.hpp"
#include "vmm/lifecycle.hpp"
#include "vmm/snapshot_capture.hpp"
#include "vmm/vm_record.hpp"

namespace vmckpt::vmm {

class VmSnapshot {
 public:
  // Every refusal, the journal, the staging directory, the agent connection and QEMU's
  // migration settings: nothing the guest notices yet. `grouped`: the caller pauses and
  // resumes the guest (pause(), resume()) and holds the signals back itself.
  static Result<std::unique_ptr<VmSnapshot>> begin(VmManager& mgr, const std::string& name, const SnapshotOptions& opts,
                                                   bool grouped, std::chrono::steady_clock::time_point t0);
  // What was not published is undone: a guest paused by pause() resumes, its unplugged
  // devices are plugged back, a quiesced one thaws, the staging directory goes, the
  // journal is cleared.
  ~VmSnapshot();
  VmSnapshot(const VmSnapshot&) = delete;
  VmSnapshot& operator=(const VmSnapshot&) = delete;

  // The agent's plugins park device state in guest RAM, filesystems freeze last.
  // Grouped: only the first stage (the plugins drain); release() is the second.
  Status quiesce();
  // Grouped, once every member is quiesced: the plugins close their devices (none stays
  // open during the capture), filesystems freeze.
  Status release();
  // Alone, after quiesce(): the passthrough devices are unplugged (none is in the capture);
  // capture() plugs them back as soon as the guest runs, before the thaw. On failure the
  // ones removed are back.
  Status unplug();
  // While the guest runs: what capture() would write back before its pause.
  Status preflush();
  // Grouped only: QMP stop (a guest the user had paused stays as it is).
  Status pause();
  // Alone: pre-flush, pause, device state, capture, resume, replug (unplug()'s devices),
  // thaw. Grouped: the same with the guest already stopped, which it stays.
  Status capture();
  // Grouped only: cont after the capture; the pause ends; the guest thaws.
  Status resume();
  // Grouped, after its agent was asked to release the devices: the agent's socket, for
  // the group's rounds (group_rounds.hpp), which take over the thaw; nullopt otherwise,
  // or when QEMU is gone. Once.
  std::optional<std::string> handOverThaw();
  // Grouped: a guest pause() stopped runs again, without a thaw (an unwind's first step).
  void resumeForUnwind();
  // Seal, manifest, one rename. Then withdraw() takes it back (a group whose other
  // member failed to publish).
  Result<SnapshotResult> publish(const std::optional<store::SnapshotGroup>& group = std::nullopt);
  void withdraw();

  const std::string& name() const { return name_; }
  long long stopUs() const { return stopUs_; }
  long long resumeUs() const { return resumeUs_; }

 private:
  VmSnapshot(VmManager& mgr, std::string name, const SnapshotOptions& opts, bool grouped)
      : mgr_(mgr), name_(std::move(name)), opts_(opts), grouped_(grouped) {}
  Error wrap(const Error& e) const;  // "snapshot NAME: ...", or that QEMU exited
  bool qemuGone() const;
  void thawNowRunning();
  // After cont: the devices unplug() removed, back in their slots (before the thaw).
  Status replugNowRunning();
  // A failed snapshot: whatever of the devices is missing is plugged back.
  void plugBackAfterFailure();
  vfio::HotplugOptions hotplugOptions() const;

  VmManager& mgr_;
  const std::string name_;
  const SnapshotOptions opts_;
  const bool grouped_;
  std::chrono::steady_clock::time_point t0_;
  std::optional<VmManager::Held> held_;  // the VM's lock: released last
  std::optional<SignalBlock> holdSignals_;
  store::Manifest m_;
  VmRecord rec_;
  std::optional<store::SnapshotEntry> parent_;
  std::unique_ptr<store::Backend> backend_;
  JournalEntry journal_;
  bool journalWritten_ = false;
  std::string tmp_, dest_;
  bool tmpMade_ = false, published_ = false;
  std::optional<QuiescedGuest> guest_;
  std::optional<qmp::Client> client_;
  pid_t qemuPid_ = 0;
  std::unique_ptr<CaptureRun> run_;
  std::unique_ptr<CapturePath> path_;
  bool thawPending_ = false;
  std::vector<vfio::PassthroughDevice> devices_;  // as plugged on this host
  bool replugPending_ = false;
  std::optional<Error> replugError_;
  std::string thawWarning_;
  bool pausedByUs_ = false;
  long long stopUs_ = 0, resumeUs_ = 0;
  std::string oldHead_;
};

}  // namespace vmckpt::vmm
