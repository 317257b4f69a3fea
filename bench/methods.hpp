// The snapshot methods the bench compares, each run on a guest of one memory size that
// wrote a pattern over part of its RAM. Every method reports the same measurements so
// that they sit side by side in one table; a method that fails is reported failed with
// its reason, never dropped.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "bench/bench_support.hpp"

namespace vmckpt::bench {

struct SizeRun {
  std::string guestDir;       // kernel + initrd of the test guest
  std::uint64_t memoryBytes;  // guest RAM
  std::uint64_t writtenMib;   // RAM the guest fills with its pattern before the first snapshot
  std::uint64_t dirtyMib = 64;  // rewritten between snapshots
  int runs = 5;
};

struct MethodResult {
  std::string method;  // stable key, e.g. "vmckpt-btrfs"
  std::string label;   // for tables and plots
  bool ok = true;
  std::string error;   // why it failed (ok == false)
  std::vector<double> pauseMs;       // QMP STOP -> RESUME (QEMU's event timestamps)
  std::vector<double> totalMs;       // whole snapshot, until its data is durable on disk
  std::vector<double> restoreMs;     // from nothing running to the guest running again
  std::vector<double> writtenBytes;  // bytes the snapshot wrote to the store's block device
  std::vector<double> secondSnapshotBytes;  // disk a snapshot costs after `dirtyMib` dirtied
  int restoresVerified = 0;          // restores after which the guest's pattern checked out
  Json extra = Json::object();       // method-specific facts (first snapshot, stream size, ...)

  Json toJson() const;
};

enum class VmckptStore { btrfs, reflinkXfs, copy, btrfsLive };

// vmckpt's own snapshot and restore, its store on a loop filesystem made here.
// btrfs: Btrfs, subvolume snapshot; reflinkXfs: XFS, FICLONE; copy: XFS, physical copy;
// btrfsLive: `snapshot --live` (background-snapshot) of a guest with anonymous RAM, Btrfs.
// reflinkXfs and copy share one guest (copy follows reflink) when both are asked for.
std::vector<MethodResult> runVmckpt(const SizeRun& r, const std::vector<VmckptStore>& stores);

enum class QemuMethod { migrateToFile, backgroundSnapshot, snapshotSave };

// QEMU's own methods on a guest with QEMU's default anonymous RAM (what a user who does
// not use vmckpt runs), its files on a Btrfs loop filesystem made here:
// migrateToFile: stop, migrate to a file, cont (virsh save's pause); restore: fresh QEMU
//   -incoming from the file (virsh restore).
// backgroundSnapshot: migrate with the background-snapshot capability (userfaultfd
//   write protection; the guest runs while RAM is written); restore as above.
// snapshotSave: QMP snapshot-save into the qcow2 disk; restore: fresh QEMU, snapshot-load.
std::vector<MethodResult> runQemuMethods(const SizeRun& r, const std::vector<QemuMethod>& methods);

}  // namespace vmckpt::bench
