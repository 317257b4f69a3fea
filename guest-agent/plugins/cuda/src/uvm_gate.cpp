#include "uvm_gate.hpp"

#include <array>
#include <cstdint>
#include <cstring>
#include <map>
#include <thread>
#include <utility>

namespace vmckpt::cuda {

Gate& Gate::instance() {
  static Gate g;
  return g;
}

void Gate::enter() {
  for (;;) {
    // Dekker with close(): announce, then look; close() sets closed_, then counts.
    inside_.fetch_add(1, std::memory_order_seq_cst);
    if (!closed_.load(std::memory_order_seq_cst)) return;
    inside_.fetch_sub(1, std::memory_order_seq_cst);
    std::unique_lock l(mu_);
    opened_.wait(l, [&] { return !closed_.load(); });
  }
}

bool Gate::close(std::chrono::milliseconds limit) {
  closed_.store(1, std::memory_order_seq_cst);
  auto until = std::chrono::steady_clock::now() + limit;
  while (inside_.load(std::memory_order_seq_cst) != 0) {
    if (std::chrono::steady_clock::now() >= until) {
      open();
      return false;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  return true;
}

void Gate::open() {
  {
    std::lock_guard l(mu_);
    closed_.store(0);
  }
  opened_.notify_all();
}

namespace {

// A driver entry point returns CUresult and takes integers and pointers (in registers,
// then on the stack). The stand-in takes sixteen: the callee reads the ones it has, the
// rest are the caller's stack, read and ignored (x86-64 and AArch64 calling conventions).
using U = std::uint64_t;
using Entry16 = int (*)(U, U, U, U, U, U, U, U, U, U, U, U, U, U, U, U);
constexpr std::size_t kSlots = 2048;

std::array<std::atomic<void*>, kSlots> g_real{};

template <std::size_t I>
int gatedCall(U a, U b, U c, U d, U e, U f, U g, U h, U i, U j, U k, U l, U m, U n, U o, U p) {
  Gate& gate = Gate::instance();
  gate.enter();
  int r = reinterpret_cast<Entry16>(g_real[I].load(std::memory_order_relaxed))(a, b, c, d, e, f, g, h, i, j, k, l, m,
                                                                               n, o, p);
  gate.leave();
  return r;
}

template <std::size_t... I>
std::array<void*, sizeof...(I)> makeStandIns(std::index_sequence<I...>) {
  return {reinterpret_cast<void*>(&gatedCall<I>)...};
}

const std::array<void*, kSlots>& standIns() {
  static const auto t = makeStandIns(std::make_index_sequence<kSlots>{});
  return t;
}

std::mutex g_slotsMu;
std::map<void*, std::size_t> g_slotOf;  // real -> slot
bool g_overflow = false;                // an entry point was handed out ungated

}  // namespace

void* gatedEntry(const char* name, void* real) {
  if (!real) return real;
  // Float arguments travel in vector registers the stand-in does not forward.
  if (name && std::strstr(name, "MipmapLevel")) return real;
  std::lock_guard l(g_slotsMu);
  if (auto it = g_slotOf.find(real); it != g_slotOf.end()) return standIns()[it->second];
  std::size_t slot = g_slotOf.size();
  if (slot >= kSlots) {
    g_overflow = true;
    return real;
  }
  g_real[slot].store(real);
  g_slotOf.emplace(real, slot);
  return standIns()[slot];
}

int gatedEntries() {
  std::lock_guard l(g_slotsMu);
  return static_cast<int>(g_slotOf.size());
}

bool someEntryUngated() {
  std::lock_guard l(g_slotsMu);
  return g_overflow;
}

}  // namespace vmckpt::cuda
