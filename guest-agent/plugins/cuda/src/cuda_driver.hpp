// The CUDA driver's checkpoint API (cuCheckpointProcess*, driver 12.8+ / r570+), loaded
// with dlopen so that nothing here needs libcuda at build or load time: a guest without a
// GPU, or with a driver too old for the API, gets a clear error instead of a loader one.
#pragma once

#include <cuda.h>

#include <string>
#include <vector>

#include "common/error.hpp"
#include "gpu_uuid.hpp"

namespace vmckpt::cuda {

// The first driver version (cuDriverGetVersion) with the checkpoint API.
inline constexpr int kMinDriverVersion = 12080;

class Driver {
 public:
  // dlopen `library` (normally "libcuda.so.1"), resolve the calls, check the version and
  // cuInit. Fails with Errc::unsupported and one line saying what is missing.
  static Result<Driver> load(const std::string& library = "libcuda.so.1");
  // libcuda is never unloaded (its threads may outlive a dlclose): copies share it.

  int version() const { return version_; }
  // "CUDA_ERROR_NOT_READY" (or "CUresult N").
  std::string errorName(CUresult r) const;

  CUresult lock(pid_t pid, unsigned timeoutMs) const;
  CUresult checkpoint(pid_t pid) const;
  CUresult restore(pid_t pid, const std::vector<CUcheckpointGpuPair>& pairs) const;
  CUresult unlock(pid_t pid) const;
  CUresult state(pid_t pid, CUprocessState* s) const;
  // The UUIDs of this machine's GPUs, in device order.
  Result<std::vector<GpuUuid>> gpus() const;

 private:
  Driver() = default;
  void* handle_ = nullptr;  // from dlopen; never closed
  int version_ = 0;
  CUresult (*getErrorName_)(CUresult, const char**) = nullptr;
  CUresult (*lock_)(int, CUcheckpointLockArgs*) = nullptr;
  CUresult (*checkpoint_)(int, CUcheckpointCheckpointArgs*) = nullptr;
  CUresult (*restore_)(int, CUcheckpointRestoreArgs*) = nullptr;
  CUresult (*unlock_)(int, CUcheckpointUnlockArgs*) = nullptr;
  CUresult (*getState_)(int, CUprocessState*) = nullptr;
  CUresult (*deviceGetCount_)(int*) = nullptr;
  CUresult (*deviceGet_)(CUdevice*, int) = nullptr;
  CUresult (*deviceGetUuid_)(CUuuid*, CUdevice) = nullptr;
};

std::string_view stateName(CUprocessState s);

}  // namespace vmckpt::cuda
