// Checkpoint and restore of CUDA processes by pid, all or nothing: what the CUDA helper
// (vmckpt-cuda-ckpt) does for the agent.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "common/error.hpp"
#include "cuda_driver.hpp"
#include "gpu_uuid.hpp"

namespace vmckpt::cuda {

struct ProcessTimes {
  pid_t pid = 0;
  double lockMs = 0, checkpointMs = 0;  // checkpoint
  double restoreMs = 0, unlockMs = 0;   // restore
};

// Locks every process (each within lockTimeoutMs), then checkpoints each and checks that
// the driver says CHECKPOINTED and that it holds no /dev/nvidia* file any more (else the
// GPU could not be unplugged: an NVML handle, MPS, a second driver client). Any failure
// restores and unlocks every process it touched, and the error names the pid and step.
Result<std::vector<ProcessTimes>> checkpointAll(const Driver& d, const std::vector<pid_t>& pids,
                                                unsigned lockTimeoutMs, const std::string& procRoot = "/proc");

// Brings each process back to RUNNING from wherever it is (CHECKPOINTED: restore with
// `pairs`, then unlock; LOCKED: unlock), going on past failures, which it lists.
struct RestoreOutcome {
  std::vector<ProcessTimes> done;
  std::vector<std::string> errors;  // one line each, naming the pid
};
RestoreOutcome restoreAll(const Driver& d, const std::vector<pid_t>& pids,
                          const std::vector<CUcheckpointGpuPair>& pairs);

// The GPU pairs for a restore: none for Kind::same, every checkpointed GPU onto the named
// one for Kind::uuid (only when there was one; several need one target each), and an
// error for Kind::none.
Result<std::vector<CUcheckpointGpuPair>> gpuPairs(const std::vector<GpuUuid>& checkpointedOn, const GpuTarget& t);

}  // namespace vmckpt::cuda
