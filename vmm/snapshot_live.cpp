// The live path of VmManager::snapshot (`snapshot --live`), for VMs with anonymous RAM:
// QEMU's background-snapshot (userfaultfd write protection) writes all of RAM and the
// device state into one stream while the guest runs. The guest pauses only while its
// disks are captured and QEMU saves its devices; RAM pages are copied out just before the
// guest first writes them.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include "common/fs.hpp"
#include "common/log.hpp"
#include "common/strings.hpp"
#include "common/unique_fd.hpp"
#include "vmm/fault_injection.hpp"
#include "vmm/qemu_boot.hpp"
#include "vmm/snapshot_capture.hpp"
#include "vmm/userfault.hpp"

namespace vmckpt::vmm {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

const char* kStateFdName = "vmckpt-state";
// From `migrate` to the guest running again QEMU write-protects all of RAM (and prefaults
// what was never touched): this long, plus a second per GiB.
constexpr auto kResumeTimeout = 10s;
// The watchdog: a stream to which QEMU writes nothing for this long has stalled; and no
// stream may take longer than kStreamTimeout plus 128 s per GiB (8 MiB/s).
constexpr auto kStallTimeout = 30s;
constexpr auto kStreamTimeout = 120s;
constexpr auto kWatchInterval = 250ms;

std::chrono::milliseconds perGiB(std::uint64_t bytes, std::chrono::milliseconds each) {
  return std::chrono::milliseconds(static_cast<long long>(static_cast<double>(bytes) / (1ull << 30) * each.count()));
}

bool migrationEnded(const std::string& status) {
  return status == "completed" || status == "failed" || status == "cancelled";
}

bool isMigrationEnd(const qmp::Event& e) {
  return e.name == "MIGRATION" && migrationEnded(qmp::stringField(e.data, "status"));
}

// QEMU's refusals of background-snapshot, as one line that says what is missing.
Error explainRefusal(const Error& e) {
  const std::string& msg = e.message();
  if (msg.find("not supported by host kernel") != std::string::npos)
    return Error(Errc::unsupported, cat("snapshot --live needs userfaultfd write protection, which this host's kernel "
                                        "lacks (QEMU: ", msg, ")"));
  if (msg.find("not compatible with guest memory configuration") != std::string::npos)
    return Error(Errc::unsupported, cat("snapshot --live: QEMU cannot write-protect this VM's memory (QEMU: ", msg,
                                        "); background-snapshot works on anonymous RAM, memfd and files on tmpfs"));
  return e.context("background-snapshot");
}

class LiveCapture final : public CapturePath {
 public:
  explicit LiveCapture(CaptureRun& run) : r_(run), background_(run.manifest.wasRunning) {}
  ~LiveCapture() override {
    // QEMU's migration settings as they were (a later migration must not become a
    // background snapshot), and no stream file left open in QEMU.
    if (r_.qemuGone()) return;
    if (fdGiven_) (void)r_.qmp.execute("closefd", {{"fdname", kStateFdName}}, Deadline::in(2s));
    if (background_ && capsSet_)
      (void)r_.qmp.execute("migrate-set-capabilities",
                           {{"capabilities", {{{"capability", "background-snapshot"}, {"state", false}}}}},
                           Deadline::in(2s));
  }
  const char* streamFile() const override { return store::kStateStreamFile; }

  Status prepare() override {
    r_.manifest.ram = store::SnapshotRam::stream;
    // A running guest gets background-snapshot: QEMU stops it, saves the devices and starts
    // it again by itself, then writes RAM. A paused guest gets a plain migration of all of
    // it and stays paused.
    auto caps = r_.qmp.execute("migrate-set-capabilities",
                               {{"capabilities",
                                 {{{"capability", "x-ignore-shared"}, {"state", false}},
                                  {{"capability", "events"}, {"state", true}},
                                  {{"capability", "background-snapshot"}, {"state", background_}}}}});
    if (!caps) return fail(explainRefusal(caps.error()));
    capsSet_ = true;
    if (auto r = r_.qmp.execute("migrate-set-parameters", {{"max-bandwidth", kSnapshotMaxBandwidth}}); !r)
      return fail(r.error());
    auto fd = openStreamFile(r_, store::kStateStreamFile, kStateFdName);
    if (!fd) return fail(fd.error());
    fdGiven_ = true;
    stream_ = std::move(*fd);
    return reserveSpace();
  }

  Status capture(const std::function<void()>& whenRunning) override {
    auto s = run(whenRunning);
    if (s || r_.qemuGone()) return s;
    // A failure of ours (a signal, a lost QMP reply) while QEMU still writes a sound
    // stream: the stream is let finish and then dropped, since a cancelled background
    // snapshot leaves the guest write-protected (userfault.hpp).
    if (migrateIssued_ && end_.empty() && !streamFailed_) {
      log::info("letting QEMU finish the state stream of the failed snapshot before dropping it");
      (void)watchStream(false);
    }
    // Nothing of the failed snapshot stays in flight: a stream still going is cancelled,
    // and the guest runs again (or stays paused, as it was).
    if (stopped_ || migrateIssued_) {
      if (r_.manifest.wasRunning) resumeAfterFailedCapture(r_);
      else if (auto settled = settleMigration(r_.qmp, Deadline::in(kSnapshotEventTimeout)); !settled)
        log::error("could not end the state stream of a failed snapshot: ", settled.error().message());
    }
    if (background_ && migrateIssued_ && end_ != "completed") {
      if (std::string note = freeGuest(); !note.empty())
        return fail(Error(s.error().code(), s.error().message() + note, s.error().sysErrno()));
    }
    return s;
  }

 private:
  // The stream holds all of RAM. Its space is reserved before the guest notices anything,
  // so that the writer cannot run out of it mid-stream (a failed background snapshot
  // leaves the guest write-protected: userfault.hpp).
  Status reserveSpace() {
    const std::uint64_t mem = r_.spec.memoryBytes;
    reserved_ = mem + mem / 256 + (64ull << 20);  // pages with their headers, device state
    const std::string path = cat(r_.tmp, "/", store::kStateStreamFile);
    if (::fallocate(stream_.get(), FALLOC_FL_KEEP_SIZE, 0, static_cast<off_t>(reserved_)) == 0) return {};
    int err = errno;
    if (err == ENOSPC) {
      struct statvfs sv{};
      unsigned long long freeBytes =
          ::statvfs(r_.tmp.c_str(), &sv) == 0 ? static_cast<unsigned long long>(sv.f_bavail) * sv.f_frsize : 0;
      return fail(Errc::io, cat("snapshot --live writes all of RAM into the store and needs up to ", formatSize(reserved_),
                                " there: No space left on device (", formatSize(freeBytes), " free)"), ENOSPC);
    }
    if (err != EOPNOTSUPP) return failErrno(cat("fallocate ", path), err);
    reserved_ = 0;  // this filesystem cannot reserve: the watchdog has to catch a failed writer
    return {};
  }

  // After a background snapshot that did not complete, the guest's RAM is still write-
  // protected by it: the protection is lifted from outside (userfault.hpp), and the
  // guest checked for threads still waiting. Returns what the error must add, if any.
  std::string freeGuest() {
    auto freed = releaseWriteProtection(r_.qemuPid);
    auto stuck = threadsStuckInUserfault(r_.qemuPid);
    if (stuck.empty())
      return freed && *freed > 0 ? "; QEMU left the guest's RAM write-protected, vmckpt lifted that and the guest runs on"
                                 : "";
    std::string note = cat("; the guest is stuck: QEMU's ", join(stuck, ", "),
                           " waits in userfaultfd since the background snapshot failed",
                           freed ? std::string() : cat(", and its write protection could not be lifted (",
                                                       freed.error().message(), ")"),
                           "; only ending QEMU frees it: vmckpt stop ", r_.vm, " --force");
    log::error("VM ", r_.vm, note.substr(1));
    return note;
  }

  Status run(const std::function<void()>& whenRunning) {
    store::Manifest& m = r_.manifest;
    qmp::Client& c = r_.qmp;
    // The disks written back while the guest runs: the capture in the pause has less to do.
    auto tFlush = Clock::now();
    if (auto s = r_.backend.settle(r_.paths.live); !s) return fail(s.error().context("pre-flush"));
    m.timings.flushMs = elapsedMs(tFlush);
    VMCKPT_TRY(faultPoint("after-quiesce", r_.qemuPid));
    (void)c.takeEvents();

    // --- the pause ---
    long long stopUs = 0;
    if (m.wasRunning) {
      auto ev = c.executeUntilEvent("stop", Json::object(), "STOP", Deadline::in(kSnapshotEventTimeout));
      stopped_ = true;  // also when the reply was lost
      if (!ev) return fail(ev.error().context("pause"));
      stopUs = ev->timestampUs;
    }
    VMCKPT_TRY(faultPoint("after-stop", r_.qemuPid));
    // Disks, kernel and initrd as they are now, while the guest is stopped: the device
    // state QEMU saves next belongs to them.
    auto tCap = Clock::now();
    if (auto s = r_.backend.capture(r_.paths.live, r_.tmp + "/data"); !s) return fail(s.error().context("capture"));
    m.timings.captureMs = elapsedMs(tCap);
    VMCKPT_TRY(faultPoint("after-capture", r_.qemuPid));

    auto tStream = Clock::now();
    migrateIssued_ = true;  // a lost reply may still have started it
    if (auto r = c.execute("migrate", {{"uri", cat("fd:", kStateFdName)}}); !r)
      return fail(explainRefusal(r.error()));
    fdGiven_ = false;  // QEMU took it out of its list
    if (m.wasRunning) {
      auto ev = waitForResume();
      if (!ev) return fail(ev.error().context("resume"));
      m.timings.pauseMs = static_cast<double>(ev->timestampUs - stopUs) / 1000.0;
      m.timings.devstateMs = elapsedMs(tStream);
    }
    // --- the guest runs again (or stays paused, as it was) while RAM is written ---
    whenRunning();
    if (auto s = faultPoint("mid-stream", r_.qemuPid); !s) {
      streamFailed_ = true;  // an injected fault here stands for a writer that failed
      return s;
    }
    VMCKPT_TRY(watchStream(true));
    m.timings.streamMs = elapsedMs(tStream);
    releaseReserve();
    stream_.reset();
    return {};
  }

  // QEMU 7.2's background snapshot saves the devices and then starts the guest itself
  // (vm_start from a bottom half), also a guest stopped before `migrate`, as here. A QEMU
  // that left it stopped gets a `cont` once the stream is under way.
  Result<qmp::Event> waitForResume() {
    qmp::Client& c = r_.qmp;
    auto timeout = kResumeTimeout + perGiB(r_.spec.memoryBytes, 1000ms);
    auto ev = c.waitEvent([](const qmp::Event& e) { return e.name == "RESUME" || isMigrationEnd(e); },
                          Deadline::in(timeout));
    if (ev && ev->name == "RESUME") return ev;
    if (ev) {
      end_ = qmp::stringField(ev->data, "status");
      if (end_ != "completed") return fail(streamFailure());
    } else if (ev.error().code() != Errc::timeout) {
      return fail(ev.error());
    }
    auto mig = c.execute("query-migrate");
    if (!mig) return fail(mig.error());
    std::string status = qmp::stringField(*mig, "status");
    if (status != "active" && status != "completed")
      return fail(streamFailed(Errc::timeout, cat("QEMU did not save the device state within ",
                                     std::chrono::duration_cast<std::chrono::seconds>(timeout).count(),
                                     " s (migration status ", status.empty() ? "unknown" : status, ")")));
    log::info("QEMU left the guest stopped after saving its devices; continuing it");
    return resumeAfterMigration(c);
  }

  // The watchdog over the stream: it ends completed, or the snapshot fails (stalled, too
  // slow, QEMU reporting a failure, or, when interruptible, a held-back Ctrl-C/TERM/HUP).
  Status watchStream(bool interruptible) {
    qmp::Client& c = r_.qmp;
    const auto limit = kStreamTimeout + perGiB(r_.spec.memoryBytes, 128000ms);
    const auto deadline = Deadline::in(limit);
    off_t lastOffset = -1;
    auto lastProgress = Clock::now();
    while (end_.empty()) {
      auto ev = c.waitEvent(isMigrationEnd, Deadline::in(kWatchInterval));
      if (ev) {
        end_ = qmp::stringField(ev->data, "status");
        break;
      }
      if (ev.error().code() != Errc::timeout) return fail(ev.error().context("watching the state stream"));
      // QEMU writes through a duplicate of our descriptor: the offset is how far it got.
      off_t at = ::lseek(stream_.get(), 0, SEEK_CUR);
      if (at != lastOffset) {
        lastOffset = at;
        lastProgress = Clock::now();
      } else if (Clock::now() - lastProgress > kStallTimeout) {
        return fail(streamFailed(Errc::timeout, cat("the state stream stalled: QEMU wrote nothing for ",
                                                    kStallTimeout.count(), " s (",
                                                    formatSize(static_cast<unsigned long long>(at)), " written)")));
      }
      if (deadline.expired())
        return fail(streamFailed(Errc::timeout, cat("the state stream took longer than ",
                                                    std::chrono::duration_cast<std::chrono::seconds>(limit).count(),
                                                    " s (", formatSize(static_cast<unsigned long long>(at)),
                                                    " written)")));
      sigset_t pending;
      if (interruptible && ::sigpending(&pending) == 0 &&
          (sigismember(&pending, SIGINT) == 1 || sigismember(&pending, SIGTERM) == 1 || sigismember(&pending, SIGHUP) == 1))
        return fail(Errc::io, "interrupted by a signal while RAM was written; the snapshot was cancelled", EINTR);
    }
    if (end_ != "completed") return fail(streamFailure());
    return {};
  }

  // A failure of the stream itself (not of ours): it is cancelled, not let finish.
  Error streamFailed(Errc code, std::string message) {
    streamFailed_ = true;
    return Error(code, std::move(message));
  }

  Error streamFailure() {
    std::string why;
    if (auto q = r_.qmp.execute("query-migrate"); q) why = qmp::stringField(*q, "error-desc");
    return streamFailed(Errc::processFailed, cat("the state stream ", end_, why.empty() ? std::string() : cat(": ", why)));
  }

  // What was reserved beyond the stream's end goes back to the filesystem: a truncate to
  // its own size frees blocks past the end on ext4, XFS and Btrfs (a hole punched there
  // does not on ext4).
  void releaseReserve() {
    struct stat st{};
    if (reserved_ == 0 || ::fstat(stream_.get(), &st) != 0) return;
    if (::ftruncate(stream_.get(), st.st_size) != 0)
      log::debug("could not release the space reserved for the state stream: ", std::strerror(errno));
  }

  CaptureRun& r_;
  const bool background_;  // background-snapshot (the guest was running), else a plain migration
  UniqueFd stream_;
  std::uint64_t reserved_ = 0;
  bool capsSet_ = false, fdGiven_ = false, stopped_ = false, migrateIssued_ = false;
  bool streamFailed_ = false;  // the stream itself failed or stalled (else a failure was ours)
  std::string end_;  // how the migration ended, once QEMU said so
};

}  // namespace

std::unique_ptr<CapturePath> makeLiveCapture(CaptureRun& run) { return std::make_unique<LiveCapture>(run); }

}  // namespace vmckpt::vmm
