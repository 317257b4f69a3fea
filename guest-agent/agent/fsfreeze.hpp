// vmckpt-agent's builtin plugin "fsfreeze": FIFREEZE on every mounted writable
// filesystem backed by a block device (last step of quiesce), FITHAW on them (first step
// of thaw and restored, and on rollback). Freezing runs on a worker thread so the agent
// keeps serving while a filesystem flushes; it can take as long as the disk needs.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <expected>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "common/unique_fd.hpp"

namespace vmckpt::agent {

struct MountEntry {
  std::string source, target, fstype;
  std::vector<std::string> options;
  bool readWrite() const;
};

// Parses /proc/self/mounts text (octal escapes such as \040 decoded).
std::vector<MountEntry> parseMounts(std::string_view text);

// Candidates by their mounts line alone: source under /dev/ and mounted rw. Excludes
// rootfs/initramfs, tmpfs, proc, sysfs, devpts and the like.
bool isFreezeCandidate(const MountEntry& m);

struct FreezeTarget {
  std::string mountPoint;
  std::string source;
};

// Reads the mounts file and keeps candidates whose source is a block device, one mount
// point per filesystem (bind mounts share st_dev), in mount order.
std::expected<std::vector<FreezeTarget>, std::string> freezeTargets(const std::string& mountsPath);

// Freezes targets on its own thread, deepest (last mounted) first. A filesystem that
// cannot be frozen (EOPNOTSUPP) or is frozen already (EBUSY) is skipped. On the first
// other failure, or when cancelled, the thread thaws what it froze before it finishes.
class FreezeJob {
 public:
  struct Outcome {
    std::vector<std::string> frozen;   // mount points frozen and left frozen
    std::vector<std::string> skipped;  // "mnt (why)"
    std::string error;                 // "FIFREEZE /mnt: ..." when it failed
    bool cancelled = false;
  };

  static std::expected<std::unique_ptr<FreezeJob>, std::string> start(std::vector<FreezeTarget> targets);
  ~FreezeJob();  // waits for the thread (cancel first to make it thaw)
  FreezeJob(const FreezeJob&) = delete;
  FreezeJob& operator=(const FreezeJob&) = delete;

  int doneFd() const { return done_.get(); }  // readable once finished
  bool finished() const { return finished_.load(); }
  void cancel() { cancel_.store(true); }
  // Joins the finished thread and returns its outcome.
  Outcome take();
  // Mount point the thread works on now (for deadline messages).
  std::string current() const;

 private:
  FreezeJob() = default;
  void run(std::vector<FreezeTarget> targets);

  UniqueFd done_;
  std::thread thread_;
  std::atomic<bool> cancel_{false}, finished_{false};
  void setCurrent(std::string mountPoint);
  mutable std::mutex currentMutex_;
  std::string current_;
  Outcome outcome_;
};

struct ThawOutcome {
  std::vector<std::string> thawed;  // were frozen, are thawed now
  std::vector<std::string> errors;  // "FITHAW /mnt: ..."
};

// FITHAW on every target; one that was not frozen (EINVAL) is left alone.
ThawOutcome thawTargets(const std::vector<FreezeTarget>& targets);

}  // namespace vmckpt::agent
