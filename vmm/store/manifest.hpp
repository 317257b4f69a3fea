// A snapshot's manifest: what it holds and how it was taken. Versioned JSON, written
// last (temp name, fsync, rename): a snapshot directory without one is not a snapshot.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/error.hpp"
#include "vmm/store/store_mode.hpp"
#include "vmm/vm_spec.hpp"

namespace vmckpt::vmm::store {

// Files up to this size get a sha256 in the manifest (device state, kernel, initrd);
// larger ones (RAM, disks) are checked by size.
inline constexpr std::uint64_t kChecksumLimit = 64ull << 20;
inline constexpr std::uint64_t kMaxManifestBytes = 4ull << 20;

// Where a snapshot keeps guest RAM. file: the RAM file `mem` among its files, mapped by
// the restored QEMU (the fast path); the migration stream (`devstate`) holds only device
// state. stream: no RAM file; the stream (`state`, written by QEMU's background-snapshot
// from `snapshot --live`) holds all of RAM and the device state, and a restore reads it
// in full into anonymous RAM.
enum class SnapshotRam { file, stream };
std::string_view snapshotRamName(SnapshotRam r);
Result<SnapshotRam> parseSnapshotRam(std::string_view s);

// The migration stream's file name inside data/, by where RAM is.
inline constexpr const char* kDevstateFile = "devstate";
inline constexpr const char* kStateStreamFile = "state";
inline const char* streamFileName(SnapshotRam r) { return r == SnapshotRam::stream ? kStateStreamFile : kDevstateFile; }

struct ManifestFile {
  std::string name;  // plain file name inside the snapshot's data/ directory
  std::uint64_t size = 0;
  std::string sha256;  // empty when larger than kChecksumLimit
};

struct Timings {
  double quiesceMs = 0;   // the guest agent's quiesce, before the pause
  double flushMs = 0;     // pre-flush of the RAM file while the guest still ran
  double pauseMs = 0;     // QMP STOP to RESUME (QEMU's own event timestamps)
  double devstateMs = 0;  // migrate of device state (x-ignore-shared)
  double captureMs = 0;   // the copy-on-write capture
  double streamMs = 0;    // ram stream: migrate to the stream's end (the guest ran meanwhile)
  double unplugMs = 0;    // passthrough devices unplugged, before the pause
  double replugMs = 0;    // and plugged back, after it
  double totalMs = 0;     // whole snapshot command
};

// The job a snapshot was taken with (snapshot --group): every member VM's manifest names
// the same group snapshot.
struct SnapshotGroup {
  std::string name;              // the job
  std::string id;                // the group snapshot
  std::vector<std::string> vms;  // its members, in the order they were named
};

struct Manifest {
  static constexpr int kFormatMajor = 1;
  // 1.1: ram; 1.2: group; 1.3: passthrough (each written only when present, else 1.1).
  static constexpr int kFormatMinor = 3;

  std::string id;
  std::string vm;
  std::string tag;
  std::string parent;   // empty for none
  std::string created;  // ISO 8601 UTC
  StoreMode mode = StoreMode::copy;
  std::string vmckptVersion;
  std::string qemuVersion;
  std::string machine;  // resolved machine type, e.g. pc-q35-7.2
  bool wasRunning = true;
  VmSpec spec;
  std::vector<ManifestFile> files;
  Timings timings;
  SnapshotRam ram = SnapshotRam::file;
  std::uint64_t devstateBytes = 0;   // size of the migration stream (with ram stream: all of RAM too)
  std::uint64_t exclusiveBytes = 0;  // bytes not shared with the parent when taken
  bool quiesced = false;             // the guest agent quiesced its plugins before the capture
  Json agentPlugins = Json::array(); // which plugins took part and what they answered
  std::optional<SnapshotGroup> group;
  // The passthrough devices (ids) unplugged for the capture: not in its device state,
  // plugged again by a restore once the guest runs.
  std::vector<std::string> unplugged;

  Json toJson() const;
  // Tolerates unknown keys; refuses newer formats and names that are not plain file names.
  static Result<Manifest> fromJson(const Json& j);
  const ManifestFile* file(const std::string& name) const;
  // A plugin closed its devices before this capture (a group snapshot with release:
  // its quiesce answer published {"released": true}): the guest can only come back
  // with its group, whose rounds rebuild and reconnect it.
  bool devicesReleased() const;
};

Result<Manifest> readManifest(const std::string& path);
Status writeManifest(const std::string& path, const Manifest& m);

}  // namespace vmckpt::vmm::store
