// The agent's CUDA step: before the filesystem freeze of a quiesce, every process that
// holds NVIDIA device files is locked and checkpointed by the driver (its GPU memory
// moves into its own memory, its device files close), so the host can unplug the GPU;
// thaw and restored bring them back first thing. The driver calls run in the CUDA helper
// (vmckpt-cuda-ckpt, dynamically linked: this static agent cannot dlopen libcuda).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <expected>
#include <string>
#include <vector>

#include "common/deadline.hpp"
#include "wire.hpp"

namespace vmckpt::agent {

struct CudaConfig {
  bool enabled = true;
  std::string helper;  // path of vmckpt-cuda-ckpt; empty: next to this agent's binary
  std::string procRoot = "/proc";
  std::chrono::milliseconds lockTimeout{10000};  // at most; the quiesce deadline may cut it
};

class CudaStep {
 public:
  explicit CudaStep(CudaConfig config);

  // Checkpoints every holder of NVIDIA device files. The plugins[] entry to report
  // ({"name":"cuda",...}; result not_mine when there was none), or why it failed, in
  // which case nothing stays checkpointed.
  std::expected<wire::Json, std::string> checkpoint(Deadline d);
  // Whether processes are checkpointed (by this agent) and wait for restore().
  bool holding() const { return !pids_.empty(); }
  // Restores and unlocks what checkpoint() took; deviceGpu is the device map's "gpu"
  // value (empty: the same GPUs). Failures leave the failed ones checkpointed.
  std::expected<wire::Json, std::string> restore(const std::string& deviceGpu, Deadline d);

 private:
  std::expected<wire::Json, std::string> runHelper(std::vector<std::string> args, Deadline d) const;

  CudaConfig config_;
  std::vector<pid_t> pids_;        // checkpointed, in checkpoint order
  std::vector<std::string> gpus_;  // the GPUs the helper saw at checkpoint time
};

}  // namespace vmckpt::agent
