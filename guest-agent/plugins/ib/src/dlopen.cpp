// Programs that load libibverbs themselves (NCCL, UCX, MPI transports) call
// dlopen("libibverbs.so.1") and dlsym their functions: they get this library instead,
// whose exports are the wrappers, and whose dependencies (libibverbs itself) answer the
// rest. Direct verbs (mlx5dv_*) bypass libibverbs and are refused: libmlx5's dlopen
// fails with a message, and so do its functions if linked directly.
#include <dlfcn.h>

#include <cerrno>
#include <cstring>

#include "objects.hpp"

#define VMCKPT_IB_EXPORT extern "C" __attribute__((visibility("default")))

using namespace vmckpt::ib;

namespace {

using DlopenFn = void* (*)(const char*, int);

DlopenFn realDlopen() {
  static DlopenFn fn = reinterpret_cast<DlopenFn>(dlsym(RTLD_NEXT, "dlopen"));
  return fn;
}

const char* fileName(const char* path) {
  const char* slash = std::strrchr(path, '/');
  return slash != nullptr ? slash + 1 : path;
}

bool startsWith(const char* s, const char* prefix) { return std::strncmp(s, prefix, std::strlen(prefix)) == 0; }

// This library's own path, from the address of one of its functions.
const char* selfPath() {
  static const char* path = [] {
    Dl_info info{};
    if (dladdr(reinterpret_cast<void*>(&selfPath), &info) == 0 || info.dli_fname == nullptr) return "";
    return info.dli_fname;
  }();
  return path;
}

}  // namespace

VMCKPT_IB_EXPORT void* dlopen(const char* file, int mode) {
  DlopenFn real = realDlopen();
  if (real == nullptr) return nullptr;
  if (file != nullptr) {
    const char* name = fileName(file);
    if (startsWith(name, "libibverbs.so") && *selfPath() != '\0') return real(selfPath(), mode);
    if (startsWith(name, "libmlx5.so") || startsWith(name, "libmlx4.so")) {
      logLine("dlopen(%s) refused: direct verbs (mlx5dv/mlx4dv) bypass libibverbs and cannot be checkpointed", file);
      return nullptr;
    }
  }
  return real(file, mode);
}

// The common entry points of mlx5 direct verbs, for programs linked with -lmlx5: each
// refuses, so such a program fails at its first call instead of corrupting a shadow.
VMCKPT_IB_EXPORT bool mlx5dv_is_supported(void*) {
  logLine("mlx5dv_is_supported: direct verbs are not supported under the vmckpt interposer");
  return false;
}
VMCKPT_IB_EXPORT void* mlx5dv_open_device(void*, void*) {
  logLine("mlx5dv_open_device refused: direct verbs bypass libibverbs and cannot be checkpointed");
  errno = EOPNOTSUPP;
  return nullptr;
}
VMCKPT_IB_EXPORT int mlx5dv_init_obj(void*, uint64_t) {
  logLine("mlx5dv_init_obj refused: direct verbs bypass libibverbs and cannot be checkpointed");
  return EOPNOTSUPP;
}
VMCKPT_IB_EXPORT int mlx5dv_query_device(void*, void*) {
  logLine("mlx5dv_query_device refused: direct verbs bypass libibverbs and cannot be checkpointed");
  return EOPNOTSUPP;
}
VMCKPT_IB_EXPORT void* mlx5dv_create_qp(void*, void*, void*) {
  logLine("mlx5dv_create_qp refused: direct verbs bypass libibverbs and cannot be checkpointed");
  errno = EOPNOTSUPP;
  return nullptr;
}
VMCKPT_IB_EXPORT void* mlx5dv_create_cq(void*, void*, void*) {
  logLine("mlx5dv_create_cq refused: direct verbs bypass libibverbs and cannot be checkpointed");
  errno = EOPNOTSUPP;
  return nullptr;
}
