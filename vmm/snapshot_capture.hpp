// The two ways VmManager::snapshot captures a guest, behind one interface (internal to
// vmm/): the fast path (snapshot.cpp: RAM is a file in the store, only device state is
// migrated) and the live path (snapshot_live.cpp: QEMU's background-snapshot streams all
// of RAM while the guest runs). The journal, the agent's quiesce and thaw, sealing and
// publishing the snapshot are the caller's and the same for both.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "common/error.hpp"
#include "qmp/qmp_client.hpp"
#include "vmm/store/backend.hpp"
#include "vmm/store/manifest.hpp"
#include "vmm/store_root.hpp"
#include "vmm/vm_spec.hpp"

namespace vmckpt::vmm {

inline constexpr std::chrono::seconds kSnapshotEventTimeout{5};
// QEMU's default max-bandwidth (128 MiB/s) would throttle every migration stream.
inline constexpr std::uint64_t kSnapshotMaxBandwidth = 100ull << 30;

// What a snapshot in progress gives its capture. References into the caller's frame.
struct CaptureRun {
  qmp::Client& qmp;
  const VmPaths& paths;
  const VmSpec& spec;
  const std::string& vm;
  const std::string& tmp;  // the snapshot being built; the capture goes to tmp/data
  const store::Backend& backend;
  store::Manifest& manifest;  // wasRunning is read; ram, timings are filled in
  pid_t qemuPid;
  std::function<bool()> qemuGone;
  // A group snapshot: the caller stopped the guest (QMP stop) and resumes it after every
  // member is captured. The capture then neither stops nor resumes it, and never calls
  // whenRunning (the fast path only).
  bool callerPauses = false;
};

class CapturePath {
 public:
  virtual ~CapturePath() = default;
  // Before the agent's quiesce: QEMU's migration settings and the stream's file, and every
  // refusal that does not need the guest stopped.
  virtual Status prepare() = 0;
  // From the pause to a finished capture: tmp/data holds the live directory's files and
  // tmp/<streamFile()> the migration stream. `whenRunning` is called once, as soon as the
  // guest runs again (the caller thaws it there). Every failure leaves the guest running
  // (or paused, if it was) with no migration in flight.
  virtual Status capture(const std::function<void()>& whenRunning) = 0;
  // While the guest still runs: write back what can be written before the pause (capture
  // does it itself when not called first). A group flushes every member before it stops any.
  virtual Status preflush() { return {}; }
  // The stream's name in tmp/ and, once captured, in tmp/data.
  virtual const char* streamFile() const = 0;
};

std::unique_ptr<CapturePath> makeFastCapture(CaptureRun& run);
std::unique_ptr<CapturePath> makeLiveCapture(CaptureRun& run);

// A guest that a failed snapshot left stopped runs again: a migration in flight is
// cancelled and waited for first (one that completed later would stop it again). Tries a
// fresh QMP connection when the run's own fails. Logs what it could not do.
void resumeAfterFailedCapture(CaptureRun& run);

// `cont` after a migration until QEMU's RESUME event, retried while QEMU says the
// migration is not finalized yet; the event's timestamp ends the pause.
Result<qmp::Event> resumeAfterMigration(qmp::Client& c);

// Opens tmp/<name> for QEMU to write a migration stream into (O_EXCL) and hands it to
// QEMU as `fdName` (QMP getfd). Returns our descriptor of it.
Result<UniqueFd> openStreamFile(CaptureRun& run, const std::string& name, const char* fdName);

double elapsedMs(std::chrono::steady_clock::time_point since);

// The regular files of a snapshot's data/ directory with their sizes, and the sha256 of
// those up to store::kChecksumLimit, sorted by name (the manifest's file list).
Result<std::vector<store::ManifestFile>> describeFiles(const std::string& dir);

}  // namespace vmckpt::vmm
