// Builds the QEMU command line for a VM from its spec. Pure: no I/O.
#pragma once

#include <string>
#include <vector>

#include "vmm/store_root.hpp"
#include "vmm/vm_spec.hpp"

namespace vmckpt::vmm {

struct QemuLaunch {
  std::string binary;           // resolved qemu-system-x86_64
  Accel accel = Accel::tcg;     // effective: kvm or tcg, never automatic
  bool daemonize = true;
  bool incoming = false;  // -S -incoming defer: QEMU waits, stopped, for device state (restore)
  std::string machine;    // exact machine type; empty: the spec's
};

// Guest RAM is a shared file in the VM's live directory (the snapshot fast path maps
// and clones it), or QEMU's anonymous RAM when spec.ram is anon; QEMU is daemonized with
// pid file, QMP socket and serial log in the run directory. Passthrough devices sit in
// slots of their own, and are left out (slots kept) for a restore (launch.incoming).
std::vector<std::string> buildQemuCommand(const VmSpec& spec, const VmPaths& paths, const QemuLaunch& launch);

}  // namespace vmckpt::vmm
