// A QEMU process's guest RAM after a background snapshot that did not complete, seen and
// repaired from outside. QEMU 7.2 lifts the snapshot's userfaultfd write protection only
// when the snapshot completes: after a failed or cancelled one, the first thread that
// writes to guest RAM (a vCPU, or the main loop emulating a device) waits in userfaultfd
// for good while query-status still says "running".
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "common/error.hpp"

namespace vmckpt::vmm {

// Threads of `pid` that sleep in userfaultfd (their wchan) in each of three looks 200 ms
// apart, as "thread NAME (TID)".
std::vector<std::string> threadsStuckInUserfault(pid_t pid);

// Does what QEMU would have done: borrows its userfaultfd (pidfd_getfd, which needs
// ptrace rights over QEMU), removes the write protection of every range registered for
// it (VmFlags "uw" in smaps), which wakes the waiting threads, and unregisters the range,
// so that a later background snapshot can register it again. Returns how many ranges it
// freed (0: none was protected).
Result<int> releaseWriteProtection(pid_t pid);

}  // namespace vmckpt::vmm
