// libvmckpt-cuda.so: preloaded into CUDA processes that use managed (unified) memory,
// which the driver's checkpoint refuses (CUDA_ERROR_NOT_SUPPORTED). It tracks managed
// allocations and registers with the agent as plugin "uvm"; at PRECHECKPOINT, per
// VMCKPT_CUDA_UVM:
//   park (default)    closes the gate in front of the driver (uvm_gate.hpp) and moves
//                     every managed range into ordinary memory far from the driver's
//                     address ranges (uvm_park.hpp); the agent then checkpoints the
//                     process by pid. At RESUME/RESTART, after the agent's restore, the
//                     ranges are made managed again and must come back at their old
//                     addresses, or the thaw fails loudly and the program stays stopped;
//   refuse            the quiesce fails, saying how much managed memory there is, and
//                     the program goes on untouched;
//   hmm               managed memory is plain process memory from the start, for GPUs
//                     with pageable memory access (CU_DEVICE_ATTRIBUTE_PAGEABLE_MEMORY_
//                     ACCESS); nothing then needs parking. Not verified on such a GPU.
//
// Caught: cuMemAllocManaged and cuMemFree as exported symbols and as cuGetProcAddress
// returns them; every other entry point cuGetProcAddress returns is handed out gated.
// The CUDA runtime (static or shared) finds the driver that way, after a dlsym of
// cuGetProcAddress on libcuda's handle: dlsym is wrapped for that lookup. A program that
// calls the driver's exported functions directly cannot be gated: if it allocates managed
// memory, parking refuses and says so.
// VMCKPT_CUDA_GATE_TIMEOUT_MS (default 5000): how long parking waits for calls inside
// the driver to return. VMCKPT_CUDA_DEBUG=1 logs on stderr.
#include <dlfcn.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <string_view>

#include "uvm_gate.hpp"
#include "uvm_park.hpp"
#include "uvm_ranges.hpp"
#include "vmckpt/plugin.h"

namespace {

using vmckpt::cuda::Gate;

// The driver API's types, as cuda.h has them; cuda.h itself is not included because it
// renames the very symbols defined here (cuMemFree -> cuMemFree_v2 and so on).
using CUresult = int;
using CUdeviceptr = unsigned long long;
using cuuint64_t = unsigned long long;
constexpr CUresult kSuccess = 0;
constexpr CUresult kInvalidValue = 1;
constexpr CUresult kOutOfMemory = 2;

using AllocManagedFn = CUresult (*)(CUdeviceptr*, size_t, unsigned);
using FreeFn = CUresult (*)(CUdeviceptr);
using GetProcV1Fn = CUresult (*)(const char*, void**, int, cuuint64_t);
using GetProcV2Fn = CUresult (*)(const char*, void**, int, cuuint64_t, void*);
using CtxGetCurrentFn = CUresult (*)(void**);
using DlsymFn = void* (*)(void*, const char*);

vmckpt::cuda::UvmRanges g_hmmRanges;
vmckpt::cuda::ManagedMemory g_managed;
std::atomic<GetProcV1Fn> g_getProcV1{nullptr};
std::atomic<GetProcV2Fn> g_getProcV2{nullptr};
std::atomic<bool> g_directManaged{false};  // managed memory from a caller we cannot gate

void say(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void say(const char* fmt, ...) {
  static const bool on = [] {
    const char* v = std::getenv("VMCKPT_CUDA_DEBUG");
    return v && *v && std::strcmp(v, "0") != 0;
  }();
  if (!on) return;
  char line[512];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  std::fprintf(stderr, "vmckpt-cuda: %s\n", line);
}

DlsymFn realDlsym() {
  static DlsymFn f = [] {
    auto r = reinterpret_cast<DlsymFn>(dlvsym(RTLD_NEXT, "dlsym", "GLIBC_2.34"));
    if (!r) r = reinterpret_cast<DlsymFn>(dlvsym(RTLD_NEXT, "dlsym", "GLIBC_2.2.5"));
    return r;
  }();
  return f;
}

// A driver entry point from libcuda itself (loaded already by whoever called us).
void* driverSymbol(const char* name) {
  void* h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
  if (!h) return nullptr;
  void* f = realDlsym()(h, name);
  dlclose(h);
  return f;
}

const vmckpt::cuda::ParkDriver& parkDriver() {
  static const vmckpt::cuda::ParkDriver d = [] {
    vmckpt::cuda::ParkDriver p;
    p.allocManaged = reinterpret_cast<decltype(p.allocManaged)>(driverSymbol("cuMemAllocManaged"));
    p.memFree = reinterpret_cast<decltype(p.memFree)>(driverSymbol("cuMemFree_v2"));
    p.ctxSynchronize = reinterpret_cast<decltype(p.ctxSynchronize)>(driverSymbol("cuCtxSynchronize"));
    p.ctxSetCurrent = reinterpret_cast<decltype(p.ctxSetCurrent)>(driverSymbol("cuCtxSetCurrent"));
    return p;
  }();
  return d;
}

std::string_view uvmMode() {
  static const std::string_view mode = [] {
    const char* v = std::getenv("VMCKPT_CUDA_UVM");
    std::string_view m = v ? v : "park";
    return m == "refuse" || m == "hmm" ? m : std::string_view("park");
  }();
  return mode;
}

bool hmmMode() { return uvmMode() == "hmm"; }

long envMs(const char* name, long dflt) {
  const char* v = std::getenv(name);
  long n = v ? std::strtol(v, nullptr, 10) : 0;
  return n > 0 ? n : dflt;
}

// --- the agent's events ----------------------------------------------------------------
vmckpt_result fail(char* reason, size_t len, const std::string& why) {
  std::snprintf(reason, len, "%s", why.c_str());
  std::fprintf(stderr, "vmckpt-cuda: %s\n", why.c_str());
  return VMCKPT_FAILED;
}

vmckpt_result park(char* reason, size_t len) {
  if (g_managed.count() == 0) return VMCKPT_NOT_MINE;
  if (uvmMode() != "park")
    return fail(reason, len, std::to_string(g_managed.count()) + " managed allocations (" +
                                 std::to_string(g_managed.bytes() >> 20) +
                                 " MiB) and VMCKPT_CUDA_UVM=" + std::string(uvmMode()) + ": not parked");
  if (g_directManaged.load())
    return fail(reason, len, "managed memory was allocated through the driver's exported functions, which "
                             "libvmckpt-cuda.so cannot gate: only programs reaching the driver through "
                             "cuGetProcAddress (the CUDA runtime) can be checkpointed with managed memory");
  if (vmckpt::cuda::someEntryUngated())
    return fail(reason, len, "more driver entry points than libvmckpt-cuda.so can gate");
  long limit = envMs("VMCKPT_CUDA_GATE_TIMEOUT_MS", 5000);
  Gate& gate = Gate::instance();
  if (!gate.close(std::chrono::milliseconds(limit)))
    return fail(reason, len, "CUDA calls still inside the driver after " + std::to_string(limit) + " ms");
  std::string why = g_managed.park(parkDriver());
  if (!why.empty()) {
    gate.open();
    return fail(reason, len, "parking managed memory: " + why);
  }
  say("parked %zu managed ranges (%zu bytes)", g_managed.count(), g_managed.bytes());
  return VMCKPT_DONE;
}

vmckpt_result unpark(char* reason, size_t len) {
  Gate& gate = Gate::instance();
  if (g_managed.parked()) {
    std::string why = g_managed.unpark(parkDriver());
    if (!why.empty())  // the gate stays closed: the program must not go on with wrong memory
      return fail(reason, len, "restoring managed memory: " + why);
    say("managed memory back (%zu ranges)", g_managed.count());
  }
  if (!gate.closed()) return VMCKPT_NOT_MINE;
  gate.open();
  return VMCKPT_DONE;
}

vmckpt_result hook(void*, vmckpt_event ev, const char*, char* reason, size_t len) {
  switch (ev) {
    case VMCKPT_PRECHECKPOINT: return park(reason, len);
    case VMCKPT_RESUME:
    case VMCKPT_RESTART: return unpark(reason, len);
    default: return VMCKPT_NOT_MINE;
  }
}

void registerWithAgent() {
  static std::once_flag once;
  std::call_once(once, [] {
    const char* path = std::getenv("VMCKPT_AGENT_SOCKET");
    if (!path) path = VMCKPT_AGENT_SOCKET_DEFAULT;
    static const vmckpt_plugin_descriptor desc = {VMCKPT_PLUGIN_API_VERSION, "uvm", hook, nullptr};
    if (int rc = vmckpt_register(&desc); rc < 0)
      std::fprintf(stderr, "vmckpt-cuda: no agent at %s (error %d): managed memory cannot be checkpointed\n", path,
                   -rc);
  });
}

// --- the wrapped calls ---------------------------------------------------------------
struct Entered {
  Entered() { Gate::instance().enter(); }
  ~Entered() { Gate::instance().leave(); }
  Entered(const Entered&) = delete;
  Entered& operator=(const Entered&) = delete;
};

CUresult allocManaged(AllocManagedFn real, CUdeviceptr* dptr, size_t bytes, unsigned flags) {
  Entered in;
  if (hmmMode()) {
    if (!dptr || bytes == 0) return kInvalidValue;
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return kOutOfMemory;
    g_hmmRanges.add(reinterpret_cast<std::uintptr_t>(p), bytes);
    *dptr = reinterpret_cast<CUdeviceptr>(p);
    return kSuccess;
  }
  if (!real) return kInvalidValue;
  CUresult r = real(dptr, bytes, flags);
  if (r != kSuccess) return r;
  void* ctx = nullptr;
  if (auto get = reinterpret_cast<CtxGetCurrentFn>(driverSymbol("cuCtxGetCurrent"))) (void)get(&ctx);
  g_managed.added({static_cast<std::uintptr_t>(*dptr), bytes, flags, ctx});
  say("managed allocation %#llx, %zu bytes", *dptr, bytes);
  registerWithAgent();
  return kSuccess;
}

CUresult memFree(FreeFn real, CUdeviceptr p) {
  Entered in;
  if (auto n = g_hmmRanges.take(static_cast<std::uintptr_t>(p))) {
    munmap(reinterpret_cast<void*>(p), *n);
    return kSuccess;
  }
  auto base = g_managed.removed(static_cast<std::uintptr_t>(p));
  if (base && *base == 0) return kSuccess;  // other ranges still live in its allocation
  return real ? real(base ? static_cast<CUdeviceptr>(*base) : p) : kInvalidValue;
}

std::atomic<AllocManagedFn> g_allocReal{nullptr};
std::atomic<FreeFn> g_freeReal{nullptr};

CUresult allocManagedGated(CUdeviceptr* dptr, size_t bytes, unsigned flags) {
  return allocManaged(g_allocReal.load(), dptr, bytes, flags);
}
CUresult memFreeGated(CUdeviceptr p) { return memFree(g_freeReal.load(), p); }

CUresult ourGetProcV2(const char* symbol, void** pfn, int cudaVersion, cuuint64_t flags, void* status);
CUresult ourGetProcV1(const char* symbol, void** pfn, int cudaVersion, cuuint64_t flags);

// What cuGetProcAddress found for `symbol`: ours where we wrap it, else gated.
void substitute(const char* symbol, void** pfn, int cudaVersion) {
  if (!symbol || !pfn || !*pfn) return;
  if (std::strcmp(symbol, "cuMemAllocManaged") == 0) {
    g_allocReal.store(reinterpret_cast<AllocManagedFn>(*pfn));
    *pfn = reinterpret_cast<void*>(&allocManagedGated);
  } else if (std::strcmp(symbol, "cuMemFree") == 0 && cudaVersion >= 3020) {  // cuMemFree_v2 from 3.2 on
    g_freeReal.store(reinterpret_cast<FreeFn>(*pfn));
    *pfn = reinterpret_cast<void*>(&memFreeGated);
  } else if (std::strcmp(symbol, "cuGetProcAddress") == 0) {
    // Asked for through itself: the caller gets ours again (the v2 signature from 12.0).
    if (cudaVersion >= 12000) {
      g_getProcV2.store(reinterpret_cast<GetProcV2Fn>(*pfn));
      *pfn = reinterpret_cast<void*>(&ourGetProcV2);
    } else {
      g_getProcV1.store(reinterpret_cast<GetProcV1Fn>(*pfn));
      *pfn = reinterpret_cast<void*>(&ourGetProcV1);
    }
  } else {
    *pfn = vmckpt::cuda::gatedEntry(symbol, *pfn);
  }
}

CUresult ourGetProcV2(const char* symbol, void** pfn, int cudaVersion, cuuint64_t flags, void* status) {
  GetProcV2Fn real = g_getProcV2.load();
  if (!real) real = reinterpret_cast<GetProcV2Fn>(driverSymbol("cuGetProcAddress_v2"));
  if (!real) return kInvalidValue;
  CUresult r = real(symbol, pfn, cudaVersion, flags, status);
  if (r == kSuccess) substitute(symbol, pfn, cudaVersion);
  return r;
}

CUresult ourGetProcV1(const char* symbol, void** pfn, int cudaVersion, cuuint64_t flags) {
  GetProcV1Fn real = g_getProcV1.load();
  if (!real) real = reinterpret_cast<GetProcV1Fn>(driverSymbol("cuGetProcAddress"));
  if (!real) return kInvalidValue;
  CUresult r = real(symbol, pfn, cudaVersion, flags);
  if (r == kSuccess) substitute(symbol, pfn, cudaVersion);
  return r;
}

}  // namespace

extern "C" {

// The exported driver functions, for programs linked with -lcuda: not gated elsewhere.
__attribute__((visibility("default"))) CUresult cuMemAllocManaged(CUdeviceptr* dptr, size_t bytes, unsigned flags) {
  if (!hmmMode()) g_directManaged.store(true);
  return allocManaged(reinterpret_cast<AllocManagedFn>(driverSymbol("cuMemAllocManaged")), dptr, bytes, flags);
}

__attribute__((visibility("default"))) CUresult cuMemFree_v2(CUdeviceptr p) {
  return memFree(reinterpret_cast<FreeFn>(driverSymbol("cuMemFree_v2")), p);
}

__attribute__((visibility("default"))) CUresult cuGetProcAddress_v2(const char* symbol, void** pfn, int cudaVersion,
                                                                    cuuint64_t flags, void* status) {
  return ourGetProcV2(symbol, pfn, cudaVersion, flags, status);
}

__attribute__((visibility("default"))) CUresult cuGetProcAddress(const char* symbol, void** pfn, int cudaVersion,
                                                                 cuuint64_t flags) {
  return ourGetProcV1(symbol, pfn, cudaVersion, flags);
}

// The runtime looks cuGetProcAddress up on libcuda's own handle, which our exported one
// would not shadow: that lookup gets ours. Every other name goes to the real dlsym.
__attribute__((visibility("default"))) void* dlsym(void* handle, const char* name) {
  DlsymFn real = realDlsym();
  void* f = real ? real(handle, name) : nullptr;
  if (!f || handle == RTLD_DEFAULT || handle == RTLD_NEXT) return f;
  if (std::strcmp(name, "cuGetProcAddress_v2") == 0) {
    g_getProcV2.store(reinterpret_cast<GetProcV2Fn>(f));
    say("dlsym %s: wrapped", name);
    return reinterpret_cast<void*>(&ourGetProcV2);
  }
  if (std::strcmp(name, "cuGetProcAddress") == 0) {
    g_getProcV1.store(reinterpret_cast<GetProcV1Fn>(f));
    say("dlsym %s: wrapped", name);
    return reinterpret_cast<void*>(&ourGetProcV1);
  }
  return f;
}

}  // extern "C"
