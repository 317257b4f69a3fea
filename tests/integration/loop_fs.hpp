// A throwaway Btrfs or XFS filesystem on a loop device for tests that need a real
// reflink-capable filesystem; unmounted, detached and deleted whatever the test did.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "common/error.hpp"

namespace vmckpt::test {

class LoopFs {
 public:
  // Why this host cannot make a `fsType` loop filesystem ("btrfs" or "xfs"): not root,
  // no loop devices, mkfs tool missing, kernel without the filesystem. nullopt when it can.
  // Only for genuinely absent capability: a host that can must run the test.
  static std::optional<std::string> unavailable(const std::string& fsType);

  // A sparse image of `sizeBytes` in a new temporary directory, formatted (btrfs:
  // mkfs.btrfs; xfs: mkfs.xfs with reflink), attached with losetup and mounted.
  // Whatever was set up is torn down again when a later step fails.
  static Result<std::unique_ptr<LoopFs>> create(const std::string& fsType, std::uint64_t sizeBytes);

  LoopFs(const LoopFs&) = delete;
  LoopFs& operator=(const LoopFs&) = delete;
  ~LoopFs();

  const std::string& mountPoint() const { return mountPoint_; }
  const std::string& device() const { return device_; }
  const std::string& fsType() const { return fsType_; }

 private:
  LoopFs() = default;
  Status setUp(std::uint64_t sizeBytes);
  void unmount();

  std::string fsType_;
  std::string dir_;         // temp dir holding the image and the mount point
  std::string image_;       // empty until created
  std::string mountPoint_;  // empty until created
  std::string device_;      // /dev/loopN, empty until attached
  bool mounted_ = false;
};

}  // namespace vmckpt::test
