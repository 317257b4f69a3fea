// The disks of a migrating VM travel the way libvirt moves them: the receiver's QEMU
// exports empty images of the same size over NBD, and the source's QEMU mirrors each disk
// into its export (blockdev-mirror, write-blocking once in sync) while the guest runs.
// The source ends the mirrors with the guest paused before QEMU's switch-over (a READY
// mirror that is cancelled leaves a complete, consistent copy and the source untouched).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

#include "common/deadline.hpp"
#include "common/error.hpp"
#include "qmp/qmp_client.hpp"

namespace vmckpt::vmm {

// Receiver, QEMU waiting with -incoming defer: an NBD server on a socket vmckpt opens on
// `host` port 0 (handed over with getfd), exporting disk0..disk<n-1> writable under their
// node names. Returns the port.
Result<std::uint16_t> exportDisksForMigration(qmp::Client& c, const std::string& host, std::size_t diskCount);
// Receiver, after the stream completed (the source ended its mirrors before it): the
// server and its exports go, before the guest runs.
Status stopDiskExports(qmp::Client& c);

// Source: one mirror job per disk into the receiver's exports.
class DiskMirrors {
 public:
  // Bytes copied and to copy, summed over the jobs.
  using Progress = std::function<void(std::uint64_t copied, std::uint64_t total)>;

  // blockdev-add of an NBD client node per disk and a blockdev-mirror into it. What was
  // built before a failure stays recorded for abandon().
  Status start(qmp::Client& c, std::size_t diskCount, const std::string& host, std::uint16_t port);
  // Until every job is READY: the copy caught up and each guest write now reaches both.
  // Ends early with the error `interrupt` returns (Ctrl-C).
  Status waitReady(qmp::Client& c, Deadline deadline, const std::function<Status()>& interrupt, const Progress& progress);
  // Precondition: the guest is paused. Cancels each READY job (no pivot: the copy is
  // complete and the source keeps its disks), waits until they are gone, deletes the nodes.
  Status finish(qmp::Client& c, Deadline deadline);
  // After a failure: force-cancels the jobs, waits for them, deletes the nodes; logs what
  // fails. Does nothing when nothing is left.
  void abandon(qmp::Client& c);
  bool empty() const { return jobs_ == 0 && nodes_ == 0; }
  // Recovery after a killed `vmckpt migrate`: whichever of the jobs and nodes of a VM with
  // `diskCount` disks are still there go (force-cancelled; what is gone already is fine).
  static void removeLeftovers(qmp::Client& c, std::size_t diskCount);

 private:
  Status removeAll(qmp::Client& c, bool force, Deadline deadline);
  std::size_t nodes_ = 0, jobs_ = 0;  // disk0..nodes_-1 have an NBD node, ..jobs_-1 a job
};

}  // namespace vmckpt::vmm
