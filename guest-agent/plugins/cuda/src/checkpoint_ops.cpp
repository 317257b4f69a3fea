#include "checkpoint_ops.hpp"

#include <chrono>
#include <cstring>

#include "nvidia_fds.hpp"

namespace vmckpt::cuda {

namespace {

double msSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

std::string pidStep(pid_t pid, std::string_view step) {
  return "pid " + std::to_string(pid) + ": " + std::string(step);
}

// One process back to RUNNING; empty string on success.
std::string bringBack(const Driver& d, pid_t pid, const std::vector<CUcheckpointGpuPair>& pairs, ProcessTimes& t) {
  CUprocessState s = CU_PROCESS_STATE_RUNNING;
  if (CUresult r = d.state(pid, &s); r != CUDA_SUCCESS) return pidStep(pid, "cuCheckpointProcessGetState: ") + d.errorName(r);
  if (s == CU_PROCESS_STATE_RUNNING) return {};
  if (s == CU_PROCESS_STATE_FAILED) return pidStep(pid, "the driver reports the process FAILED; it cannot be restored");
  if (s == CU_PROCESS_STATE_CHECKPOINTED) {
    auto t0 = std::chrono::steady_clock::now();
    if (CUresult r = d.restore(pid, pairs); r != CUDA_SUCCESS)
      return pidStep(pid, "cuCheckpointProcessRestore: ") + d.errorName(r);
    t.restoreMs = msSince(t0);
  }
  auto t0 = std::chrono::steady_clock::now();
  if (CUresult r = d.unlock(pid); r != CUDA_SUCCESS) return pidStep(pid, "cuCheckpointProcessUnlock: ") + d.errorName(r);
  t.unlockMs = msSince(t0);
  return {};
}

}  // namespace

Result<std::vector<ProcessTimes>> checkpointAll(const Driver& d, const std::vector<pid_t>& pids,
                                                unsigned lockTimeoutMs, const std::string& procRoot) {
  std::vector<ProcessTimes> times;
  std::vector<pid_t> touched;
  auto undo = [&](std::string why) -> Result<std::vector<ProcessTimes>> {
    std::vector<ProcessTimes> ignored(touched.size());
    for (size_t i = 0; i < touched.size(); ++i) {
      std::string e = bringBack(d, touched[i], {}, ignored[i]);
      if (!e.empty()) why += "; undoing it: " + e;
    }
    return fail(Errc::processFailed, why);
  };
  for (pid_t pid : pids) {
    ProcessTimes t;
    t.pid = pid;
    auto t0 = std::chrono::steady_clock::now();
    CUresult r = d.lock(pid, lockTimeoutMs);
    if (r != CUDA_SUCCESS) {
      std::string why = pidStep(pid, "cuCheckpointProcessLock: ") + d.errorName(r);
      if (r == CUDA_ERROR_NOT_READY || r == CUDA_ERROR_TIMEOUT)
        why += " (its GPU work did not finish within " + std::to_string(lockTimeoutMs) + " ms)";
      else if (r == CUDA_ERROR_NOT_INITIALIZED || r == CUDA_ERROR_INVALID_VALUE || r == CUDA_ERROR_OPERATING_SYSTEM)
        why += " (holds NVIDIA device files but is no CUDA process the driver can checkpoint: "
               "nvidia-persistenced, an NVML or MPS client?)";
      return undo(why);
    }
    touched.push_back(pid);
    t.lockMs = msSince(t0);
    times.push_back(t);
  }
  for (auto& t : times) {
    auto t0 = std::chrono::steady_clock::now();
    if (CUresult r = d.checkpoint(t.pid); r != CUDA_SUCCESS) {
      std::string why = pidStep(t.pid, "cuCheckpointProcessCheckpoint: ") + d.errorName(r);
      if (r == CUDA_ERROR_NOT_SUPPORTED)
        why += " (unsupported by the driver's checkpoint: CUDA IPC, MIG, MPS or managed memory "
               "without libvmckpt-cuda.so preloaded?)";
      return undo(why);
    }
    t.checkpointMs = msSince(t0);
    CUprocessState s = CU_PROCESS_STATE_RUNNING;
    if (CUresult r = d.state(t.pid, &s); r != CUDA_SUCCESS || s != CU_PROCESS_STATE_CHECKPOINTED)
      return undo(pidStep(t.pid, "after the checkpoint the driver says ") +
                  (r != CUDA_SUCCESS ? d.errorName(r) : std::string(stateName(s))) + ", not checkpointed");
    if (auto files = nvidiaFilesOf(t.pid, procRoot); !files.empty()) {
      NvidiaHolder h{t.pid, {}, files};
      return undo(pidStep(t.pid, "still holds NVIDIA device files after the checkpoint: ") + describeHolder(h) +
                  " (an NVML handle or a second driver client; the GPU could not be unplugged)");
    }
  }
  return times;
}

RestoreOutcome restoreAll(const Driver& d, const std::vector<pid_t>& pids, const std::vector<CUcheckpointGpuPair>& pairs) {
  RestoreOutcome out;
  for (pid_t pid : pids) {
    ProcessTimes t;
    t.pid = pid;
    std::string e = bringBack(d, pid, pairs, t);
    if (e.empty()) out.done.push_back(t);
    else out.errors.push_back(std::move(e));
  }
  return out;
}

Result<std::vector<CUcheckpointGpuPair>> gpuPairs(const std::vector<GpuUuid>& checkpointedOn, const GpuTarget& t) {
  switch (t.kind) {
    case GpuTarget::Kind::same: return std::vector<CUcheckpointGpuPair>{};
    case GpuTarget::Kind::none:
      return fail(Errc::unsupported, "the device map says gpu=none: the CUDA processes stay checkpointed "
                                     "(locked) until they are restored on a GPU");
    case GpuTarget::Kind::uuid: break;
  }
  if (checkpointedOn.size() != 1)
    return fail(Errc::unsupported, "gpu=" + formatGpuUuid(t.uuid) + " names one GPU, but the processes were "
                                   "checkpointed on a machine with " + std::to_string(checkpointedOn.size()) +
                                   " GPUs; remapping several is not supported");
  CUcheckpointGpuPair p;
  std::memset(&p, 0, sizeof p);
  std::memcpy(p.oldUuid.bytes, checkpointedOn[0].data(), 16);
  std::memcpy(p.newUuid.bytes, t.uuid.data(), 16);
  return std::vector<CUcheckpointGpuPair>{p};
}

}  // namespace vmckpt::cuda
