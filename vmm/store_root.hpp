// Where vmckpt keeps its state ($VMCKPT_HOME) and the layout of one VM's directory.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "common/error.hpp"
#include "common/unique_fd.hpp"

namespace vmckpt::vmm {

// The files of one VM. Everything of a VM lives below `dir` (0700).
struct VmPaths {
  std::string dir;        // <home>/vms/<name>
  std::string spec;       // spec.json
  std::string lifecycle;  // lifecycle.json: when started/stopped, effective accel
  std::string live;       // live/ : everything a snapshot captures, in one directory
  std::string mem;        // live/mem : guest RAM, memory-backend-file,share=on
  std::string kernel;     // live/kernel : copied at create time (snapshots share its extents)
  std::string initrd;     // live/initrd
  std::string devstate;   // live/devstate : QEMU device state, present only while a restore loads it
  std::string snapshots;  // snapshots/ : one directory per published snapshot
  std::string run;        // run/ : runtime files of the QEMU process
  std::string pidFile;    // run/qemu.pid
  std::string qmpSocket;  // run/qmp.sock (0600)
  std::string agentSocket;// run/agent.sock (0600)
  std::string console;    // run/console.sock (0600): the serial console, for input
  std::string serialLog;  // run/serial.log (guest console output, kept by QEMU's logfile=)
  std::string qemuLog;    // run/qemu.log (QEMU's own stderr)
  std::string lock;       // lock (flock)
  std::string journal;    // journal.json : the operation in progress (see journal.hpp)

  explicit VmPaths(std::string vmDir);
};

class StoreRoot {
 public:
  // $VMCKPT_HOME, else /var/lib/vmckpt for root, else $XDG_DATA_HOME/vmckpt
  // (~/.local/share/vmckpt).
  static std::string defaultHome();
  // Creates the home (0700) when missing.
  static Result<StoreRoot> open(const std::string& home);

  const std::string& home() const { return home_; }
  std::string vmsDir() const { return home_ + "/vms"; }
  VmPaths vm(const std::string& name) const { return VmPaths(vmsDir() + "/" + name); }
  bool vmExists(const std::string& name) const;
  // Names of all VMs, sorted.
  Result<std::vector<std::string>> vmNames() const;

 private:
  explicit StoreRoot(std::string home) : home_(std::move(home)) {}
  std::string home_;
};

// An exclusive flock on a VM's lock file, held while an operation changes the VM.
class VmLock {
 public:
  static Result<VmLock> acquire(const VmPaths& paths, const std::string& name);
  // The same on any lock file; `what` names the holder in the error ("domain job1").
  static Result<VmLock> acquireAt(const std::string& lockFile, const std::string& what);
  // Without waiting: nullopt while another vmckpt holds it.
  static Result<std::optional<VmLock>> tryAcquire(const VmPaths& paths);

 private:
  explicit VmLock(UniqueFd fd) : fd_(std::move(fd)) {}
  UniqueFd fd_;
};

}  // namespace vmckpt::vmm
