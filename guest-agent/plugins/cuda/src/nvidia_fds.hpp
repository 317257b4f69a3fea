// Which processes hold NVIDIA device files (/dev/nvidia*, /dev/nvidia-uvm, ...), read from
// /proc. The agent asks before a quiesce (who must be checkpointed) and the CUDA helper
// after a checkpoint (nothing may still hold one, or the GPU cannot be unplugged).
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace vmckpt::cuda {

struct NvidiaHolder {
  pid_t pid = 0;
  std::string comm;                // /proc/PID/comm, for messages
  std::vector<std::string> files;  // the device files it holds, each once, sorted
};

// Every process under procRoot (normally "/proc") with an fd on a file under /dev/nvidia,
// in pid order, except `exclude`. Processes that vanish or deny access while being read
// are skipped: a process we cannot read we could not checkpoint either, and the caller's
// later checks (the driver's) name it.
std::vector<NvidiaHolder> findNvidiaHolders(const std::string& procRoot = "/proc", pid_t exclude = 0);

// The device files one process holds (empty when it holds none or is gone).
std::vector<std::string> nvidiaFilesOf(pid_t pid, const std::string& procRoot = "/proc");

// "1234 (python3: /dev/nvidia0, /dev/nvidiactl)"
std::string describeHolder(const NvidiaHolder& h);

}  // namespace vmckpt::cuda
