// A VM's QEMU process: launched daemonized, found again through its pid file, ended by pid.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "common/deadline.hpp"
#include "common/error.hpp"
#include "vmm/store_root.hpp"

namespace vmckpt::vmm {

// The QEMU binary: $VMCKPT_QEMU, else qemu-system-x86_64 from PATH.
Result<std::string> findQemu();

enum class PidState { none, alive, stale };

struct PidCheck {
  PidState state = PidState::none;
  pid_t pid = 0;
};

// Reads run/qemu.pid and checks that the process is alive and is the QEMU of this VM
// (its command line names this pid file), so a recycled pid is never mistaken for it.
PidCheck checkPidFile(const VmPaths& paths);

// Starts QEMU with -daemonize and waits until it is ready (the launcher exits once QEMU
// has initialized). On failure returns QEMU's own last error line from run/qemu.log.
Result<pid_t> launchQemu(const std::vector<std::string>& argv, const VmPaths& paths, Deadline deadline);

// Waits until pid exits. Returns false at the deadline.
bool waitForExit(pid_t pid, Deadline deadline);

// SIGKILL and wait for the process to go.
Status killQemu(pid_t pid, Deadline deadline);

// Kills the QEMU of the VM directory `dir` if its pid file names one alive (identity
// checked as above): for staging directories a killed vmckpt left with QEMU running.
void killOrphanQemu(const std::string& dir);

// Removes runtime files left by a QEMU that is gone (pid file, sockets); keeps the logs.
void cleanRunFiles(const VmPaths& paths);

// Last non-empty line of a log file (for one-line error messages).
std::string lastLogLine(const std::string& path);

// QEMU's own error from its log: the last line QEMU reported as an error ("<program>:
// <message>", program name dropped), not the hints it prints after it; else the last line.
std::string qemuErrorLine(const std::string& path);

}  // namespace vmckpt::vmm
