#include "uvm_park.hpp"

#include <signal.h>
#include <sys/mman.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>

namespace vmckpt::cuda {

namespace {

// What the SIGSEGV handler needs, readable from a signal handler: the ranges that move.
constexpr std::size_t kMaxGuarded = 4096;
struct Guarded {
  std::uintptr_t lo, hi;
};
Guarded g_guarded[kMaxGuarded];
std::atomic<std::size_t> g_guardedCount{0};
std::atomic<int> g_moving{0};
struct sigaction g_oldSegv;

bool inGuarded(std::uintptr_t a) {
  std::size_t n = g_guardedCount.load();
  for (std::size_t i = 0; i < n; ++i)
    if (a >= g_guarded[i].lo && a < g_guarded[i].hi) return true;
  return false;
}

void onSegv(int sig, siginfo_t* si, void* uc) {
  if (g_moving.load() && inGuarded(reinterpret_cast<std::uintptr_t>(si->si_addr))) {
    // A CPU access to a range being moved: wait until it is in place, then retry.
    timespec t{0, 100000};
    while (g_moving.load()) nanosleep(&t, nullptr);
    return;
  }
  if (g_oldSegv.sa_flags & SA_SIGINFO) {
    if (g_oldSegv.sa_sigaction) return g_oldSegv.sa_sigaction(sig, si, uc);
  } else if (g_oldSegv.sa_handler != SIG_DFL && g_oldSegv.sa_handler != SIG_IGN) {
    return g_oldSegv.sa_handler(sig);
  }
  signal(SIGSEGV, SIG_DFL);  // the fault repeats and ends the process as it would have
}

// From park until the ranges are managed again, a CPU access to one waits in the
// SIGSEGV handler (the range is write-protected while copied, then not mapped at all).
void guardRanges(const std::vector<ManagedMemory::Range>& ranges) {
  std::size_t n = std::min(ranges.size(), kMaxGuarded);
  for (std::size_t i = 0; i < n; ++i) g_guarded[i] = {ranges[i].ptr, ranges[i].ptr + ranges[i].bytes};
  g_guardedCount.store(n);
  g_moving.store(1);
  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = onSegv;
  sa.sa_flags = SA_SIGINFO | SA_RESTART;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGSEGV, &sa, &g_oldSegv);
}

void unguardRanges() {
  g_moving.store(0);
  sigaction(SIGSEGV, &g_oldSegv, nullptr);
  g_guardedCount.store(0);
}

// Where parked copies go: far from the CUDA driver's address ranges (near the top of the
// user address space, below the libraries). A copy the kernel placed at its own choice
// lands in the holes the freed managed ranges leave, and the driver, finding them taken
// after its restore, hands out other addresses.
void* mapAside(std::size_t bytes) {
  static std::uintptr_t cursor = 0x500000000000ull;  // 80 TiB
  constexpr std::uintptr_t kStep = 1ull << 30;
  std::size_t rounded = (bytes + (2u << 20) - 1) & ~static_cast<std::size_t>((2u << 20) - 1);
  for (int attempt = 0; attempt < 64; ++attempt) {
    void* p = mmap(reinterpret_cast<void*>(cursor), bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (p != MAP_FAILED) {
      cursor += rounded + (2u << 20);
      return p;
    }
    cursor += kStep;
  }
  return mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
}

std::string hex(std::uintptr_t p) {
  char b[32];
  std::snprintf(b, sizeof b, "0x%llx", static_cast<unsigned long long>(p));
  return b;
}

std::string sysError(const char* what, const ManagedMemory::Range& r) {
  return std::string(what) + " of managed range " + hex(r.ptr) + " (" + std::to_string(r.bytes) +
         " bytes): " + std::strerror(errno);
}

}  // namespace

void ManagedMemory::added(const Range& r) {
  std::lock_guard l(mu_);
  ranges_.push_back(r);
  if (!ranges_.back().base) ranges_.back().base = r.ptr;
}

std::optional<std::uintptr_t> ManagedMemory::removed(std::uintptr_t ptr) {
  std::lock_guard l(mu_);
  auto it = std::find_if(ranges_.begin(), ranges_.end(), [&](const Range& r) { return r.ptr == ptr; });
  if (it == ranges_.end()) return std::nullopt;
  std::uintptr_t base = it->base;
  ranges_.erase(it);
  bool shared = std::any_of(ranges_.begin(), ranges_.end(), [&](const Range& r) { return r.base == base; });
  return shared ? 0 : base;
}

std::size_t ManagedMemory::count() const {
  std::lock_guard l(mu_);
  return ranges_.size();
}

std::size_t ManagedMemory::bytes() const {
  std::lock_guard l(mu_);
  std::size_t n = 0;
  for (const auto& r : ranges_) n += r.bytes;
  return n;
}

bool ManagedMemory::parked() const {
  std::lock_guard l(mu_);
  return parked_;
}

std::string ManagedMemory::park(const ParkDriver& d) {
  std::lock_guard l(mu_);
  if (parked_ || ranges_.empty()) return {};
  if (ranges_.size() > kMaxGuarded) return "more than " + std::to_string(kMaxGuarded) + " managed allocations";
  if (d.ctxSetCurrent(ranges_[0].ctx) != 0) return "cuCtxSetCurrent failed on the parking thread";
  if (int r = d.ctxSynchronize(); r != 0) return "cuCtxSynchronize: CUresult " + std::to_string(r);
  guardRanges(ranges_);
  // Last first: the allocator hands freed addresses out again last-freed first.
  for (std::size_t k = ranges_.size(); k-- > 0;) {
    Range& r = ranges_[k];
    void* p = reinterpret_cast<void*>(r.ptr);
    std::string why;
    // Writers wait from here on; readers go on until the range is freed. The copy stays
    // elsewhere: the old addresses must be free when the driver restores its own
    // mappings, or it puts them, and the managed allocations made again, elsewhere.
    if (mprotect(p, r.bytes, PROT_READ) != 0) why = sysError("write-protecting", r);
    void* copy = why.empty() ? mapAside(r.bytes) : MAP_FAILED;
    if (why.empty() && copy == MAP_FAILED) why = sysError("mapping a copy", r);
    if (why.empty()) {
      std::memcpy(copy, p, r.bytes);
      r.aside = copy;
      // The driver allocation goes once the last range in it is copied.
      bool last = std::none_of(ranges_.begin(), ranges_.end(),
                               [&](const Range& o) { return o.base == r.base && !o.aside; });
      if (int e = last ? d.memFree(r.base) : 0; e != 0)
        why = "cuMemFree of managed range " + hex(r.base) + ": CUresult " + std::to_string(e);
      if (!why.empty()) {
        munmap(copy, r.bytes);
        r.aside = nullptr;
      }
    }
    if (!why.empty()) {
      (void)mprotect(p, r.bytes, PROT_READ | PROT_WRITE);
      std::string undo = unparkFirst(d, ranges_.size());  // those after k
      if (undo.empty()) unguardRanges();
      return why + (undo.empty() ? "" : "; undoing: " + undo);
    }
  }
  parked_ = true;
  return {};
}

std::string ManagedMemory::unpark(const ParkDriver& d) {
  std::lock_guard l(mu_);
  if (!parked_) return {};
  if (d.ctxSetCurrent(ranges_[0].ctx) != 0) return "cuCtxSetCurrent failed on the restoring thread";
  std::string why = unparkFirst(d, ranges_.size());
  if (!why.empty()) return why;  // CPU accesses keep waiting: wrong memory is worse
  unguardRanges();
  parked_ = false;
  return {};
}

// The parked ranges among [0, n) become managed again: runs of ranges adjacent in the
// address space (the driver's allocator gives a freed run back whole, not piece by
// piece) are allocated as one, in the order of their first allocation; each must come
// back at its old start, and the contents are copied in. Should the allocator hand out
// another pending run's start, of the same size and flags, that run takes it.
std::string ManagedMemory::unparkFirst(const ParkDriver& d, std::size_t n) {
  struct Run {
    std::vector<std::size_t> members;  // indexes into ranges_, by address
    std::uintptr_t start = 0;
    std::size_t bytes = 0;
    unsigned flags = 0;
    bool done = false;
  };
  std::vector<std::size_t> byAddress;
  for (std::size_t i = 0; i < n; ++i)
    if (ranges_[i].aside) byAddress.push_back(i);
  std::sort(byAddress.begin(), byAddress.end(), [&](auto a, auto b) { return ranges_[a].ptr < ranges_[b].ptr; });
  std::vector<Run> runs;
  for (std::size_t i : byAddress) {
    const Range& r = ranges_[i];
    if (!runs.empty() && runs.back().start + runs.back().bytes == r.ptr && runs.back().flags == r.flags) {
      runs.back().members.push_back(i);
      runs.back().bytes += r.bytes;
    } else {
      runs.push_back({{i}, r.ptr, r.bytes, r.flags, false});
    }
  }
  std::sort(runs.begin(), runs.end(), [](const Run& a, const Run& b) {
    return *std::min_element(a.members.begin(), a.members.end()) < *std::min_element(b.members.begin(), b.members.end());
  });
  auto settle = [&](Run& run) {
    for (std::size_t i : run.members) {
      Range& r = ranges_[i];
      std::memcpy(reinterpret_cast<void*>(r.ptr), r.aside, r.bytes);
      munmap(r.aside, r.bytes);
      r.aside = nullptr;
      r.base = run.start;
    }
    run.done = true;
  };
  for (auto& run : runs) {
    while (!run.done) {
      unsigned long long got = 0;
      if (int e = d.allocManaged(&got, run.bytes, run.flags); e != 0)
        return "re-creating managed memory at " + hex(run.start) + " (" + std::to_string(run.bytes) +
               " bytes): CUresult " + std::to_string(e);
      auto owner = std::find_if(runs.begin(), runs.end(), [&](const Run& o) {
        return !o.done && o.start == got && o.bytes == run.bytes && o.flags == run.flags;
      });
      if (owner != runs.end()) {
        settle(*owner);
        continue;
      }
      (void)d.memFree(got);
      return "managed memory of " + std::to_string(run.bytes) + " bytes came back at " + hex(got) +
             ", not at " + hex(run.start) + ": the program's pointers would be wrong";
    }
  }
  return {};
}

}  // namespace vmckpt::cuda
