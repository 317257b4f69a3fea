#include "cuda_driver.hpp"

#include <dlfcn.h>

#include <cstring>

namespace vmckpt::cuda {

namespace {
template <typename F>
bool resolve(void* h, const char* name, F*& out) {
  out = reinterpret_cast<F*>(::dlsym(h, name));
  return out != nullptr;
}
}  // namespace

Result<Driver> Driver::load(const std::string& library) {
  Driver d;
  d.handle_ = ::dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!d.handle_) {
    const char* why = ::dlerror();
    return fail(Errc::unsupported, "no CUDA driver: cannot load " + library + " (" + (why ? why : "?") + ")");
  }
  CUresult (*driverGetVersion)(int*) = nullptr;
  CUresult (*init)(unsigned) = nullptr;
  if (!resolve(d.handle_, "cuDriverGetVersion", driverGetVersion) || !resolve(d.handle_, "cuInit", init) ||
      !resolve(d.handle_, "cuGetErrorName", d.getErrorName_) ||
      !resolve(d.handle_, "cuDeviceGetCount", d.deviceGetCount_) ||
      !resolve(d.handle_, "cuDeviceGet", d.deviceGet_) || !resolve(d.handle_, "cuDeviceGetUuid_v2", d.deviceGetUuid_))
    return fail(Errc::unsupported, library + " lacks the basic driver calls: not a CUDA driver");
  if (driverGetVersion(&d.version_) != CUDA_SUCCESS) d.version_ = 0;
  if (!resolve(d.handle_, "cuCheckpointProcessLock", d.lock_) ||
      !resolve(d.handle_, "cuCheckpointProcessCheckpoint", d.checkpoint_) ||
      !resolve(d.handle_, "cuCheckpointProcessRestore", d.restore_) ||
      !resolve(d.handle_, "cuCheckpointProcessUnlock", d.unlock_) ||
      !resolve(d.handle_, "cuCheckpointProcessGetState", d.getState_) || d.version_ < kMinDriverVersion)
    return fail(Errc::unsupported, "the CUDA driver (version " + std::to_string(d.version_ / 1000) + "." +
                                       std::to_string(d.version_ % 1000 / 10) +
                                       ") is too old for the checkpoint API: it needs 12.8 (r570) or newer");
  // Restore needs an initialized driver in the calling process (or persistence mode).
  if (CUresult r = init(0); r != CUDA_SUCCESS)
    return fail(Errc::unsupported, "cuInit failed: " + d.errorName(r) + " (no usable GPU?)");
  return d;
}

std::string Driver::errorName(CUresult r) const {
  const char* s = nullptr;
  if (getErrorName_ && getErrorName_(r, &s) == CUDA_SUCCESS && s) return s;
  return "CUresult " + std::to_string(static_cast<int>(r));
}

CUresult Driver::lock(pid_t pid, unsigned timeoutMs) const {
  CUcheckpointLockArgs a;
  std::memset(&a, 0, sizeof a);
  a.timeoutMs = timeoutMs;
  return lock_(pid, &a);
}

CUresult Driver::checkpoint(pid_t pid) const {
  CUcheckpointCheckpointArgs a;
  std::memset(&a, 0, sizeof a);
  return checkpoint_(pid, &a);
}

CUresult Driver::restore(pid_t pid, const std::vector<CUcheckpointGpuPair>& pairs) const {
  CUcheckpointRestoreArgs a;
  std::memset(&a, 0, sizeof a);
  if (!pairs.empty()) {
    a.gpuPairs = const_cast<CUcheckpointGpuPair*>(pairs.data());
    a.gpuPairsCount = static_cast<unsigned>(pairs.size());
  }
  return restore_(pid, &a);
}

CUresult Driver::unlock(pid_t pid) const {
  CUcheckpointUnlockArgs a;
  std::memset(&a, 0, sizeof a);
  return unlock_(pid, &a);
}

CUresult Driver::state(pid_t pid, CUprocessState* s) const { return getState_(pid, s); }

Result<std::vector<GpuUuid>> Driver::gpus() const {
  int n = 0;
  if (CUresult r = deviceGetCount_(&n); r != CUDA_SUCCESS)
    return fail(Errc::unsupported, "cuDeviceGetCount: " + errorName(r));
  std::vector<GpuUuid> out;
  for (int i = 0; i < n; ++i) {
    CUdevice dev = 0;
    CUuuid u;
    if (CUresult r = deviceGet_(&dev, i); r != CUDA_SUCCESS)
      return fail(Errc::unsupported, "cuDeviceGet(" + std::to_string(i) + "): " + errorName(r));
    if (CUresult r = deviceGetUuid_(&u, dev); r != CUDA_SUCCESS)
      return fail(Errc::unsupported, "cuDeviceGetUuid(" + std::to_string(i) + "): " + errorName(r));
    GpuUuid g{};
    std::memcpy(g.data(), u.bytes, g.size());
    out.push_back(g);
  }
  return out;
}

std::string_view stateName(CUprocessState s) {
  switch (s) {
    case CU_PROCESS_STATE_RUNNING: return "running";
    case CU_PROCESS_STATE_LOCKED: return "locked";
    case CU_PROCESS_STATE_CHECKPOINTED: return "checkpointed";
    case CU_PROCESS_STATE_FAILED: return "failed";
  }
  return "unknown";
}

}  // namespace vmckpt::cuda
