// libvmckpt-cuda.so's parts that need no GPU: the gate and its stand-ins, and parking
// against a driver played by the test (allocations are anonymous mappings; the test's
// allocator gives addresses back in order, or elsewhere when told to).
#include <gtest/gtest.h>
#include <sys/mman.h>

#include <atomic>
#include <cstring>
#include <thread>

#include "uvm_gate.hpp"
#include "uvm_park.hpp"

using namespace vmckpt::cuda;
using namespace std::chrono_literals;

namespace {

int eleven(std::uint64_t a, std::uint64_t b, std::uint64_t c, std::uint64_t d, std::uint64_t e, std::uint64_t f,
           std::uint64_t g, std::uint64_t h, std::uint64_t i, std::uint64_t j, std::uint64_t k) {
  // Arguments past the sixth travel on the stack: all must arrive.
  return static_cast<int>(a + 2 * b + 3 * c + 4 * d + 5 * e + 6 * f + 7 * g + 8 * h + 9 * i + 10 * j + 11 * k);
}
using Eleven = decltype(&eleven);

}  // namespace

TEST(UvmGate, StandInsForwardEveryArgumentAndAreShared) {
  void* real = reinterpret_cast<void*>(&eleven);
  void* gated = gatedEntry("cuLaunchKernel", real);
  ASSERT_NE(gated, real);
  EXPECT_EQ(gatedEntry("cuLaunchKernel", real), gated);  // one stand-in per function
  auto f = reinterpret_cast<Eleven>(gated);
  EXPECT_EQ(f(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11), eleven(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11));
  EXPECT_EQ(gatedEntry("cuTexRefSetMipmapLevelBias", real), real);  // float argument: not gated
  EXPECT_FALSE(someEntryUngated());
}

TEST(UvmGate, CloseWaitsForCallsInsideAndHoldsNewOnes) {
  Gate& g = Gate::instance();
  g.enter();  // a call inside the driver
  std::atomic<bool> closed{false};
  std::thread closer([&] { closed = g.close(2s); });
  std::this_thread::sleep_for(50ms);
  EXPECT_FALSE(closed.load());
  g.leave();
  closer.join();
  ASSERT_TRUE(closed.load());
  std::atomic<bool> passed{false};
  std::thread caller([&] {
    g.enter();
    passed = true;
    g.leave();
  });
  std::this_thread::sleep_for(50ms);
  EXPECT_FALSE(passed.load());  // held at the gate
  g.open();
  caller.join();
  EXPECT_TRUE(passed.load());
  g.enter();  // a call that never returns in time: close gives up and reopens
  EXPECT_FALSE(g.close(20ms));
  EXPECT_FALSE(g.closed());
  g.leave();
}

namespace {

// A driver whose managed allocations are anonymous mappings at addresses it picks from a
// list (the old ones in order, or others when `shift` is set).
struct FakeDriver {
  static inline std::vector<std::uintptr_t> next;
  static inline int frees = 0;
  static int alloc(unsigned long long* p, std::size_t bytes, unsigned) {
    if (next.empty()) return 2;
    void* want = reinterpret_cast<void*>(next.front());
    next.erase(next.begin());
    void* got = mmap(want, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (got == MAP_FAILED) return 2;
    *p = reinterpret_cast<unsigned long long>(got);
    return 0;
  }
  static int free(unsigned long long p) {
    ++frees;
    return munmap(reinterpret_cast<void*>(p), 1 << 20) == 0 ? 0 : 1;
  }
  static int sync() { return 0; }
  static int setCurrent(void*) { return 0; }
  static ParkDriver driver() { return {&alloc, &free, &sync, &setCurrent}; }
};

// A 1 MiB hole in the address space with free space around it, for an allocation to land
// in that is adjacent to no other (adjacent ones are re-created as one run).
std::uintptr_t hole() {
  void* p = mmap(nullptr, 3 << 20, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  munmap(p, 3 << 20);
  return reinterpret_cast<std::uintptr_t>(p) + (1 << 20);
}

}  // namespace

TEST(UvmPark, RangesComeBackAtTheirAddressesWithTheirContents) {
  ManagedMemory m;
  std::vector<std::uintptr_t> at;
  for (int i = 0; i < 3; ++i) {
    unsigned long long p = 0;
    FakeDriver::next = {hole()};
    ASSERT_EQ(FakeDriver::alloc(&p, 1 << 20, 1), 0);
    std::memset(reinterpret_cast<void*>(p), 'a' + i, 1 << 20);
    m.added({p, 1 << 20, 1, nullptr, nullptr, 0});
    at.push_back(p);
  }
  FakeDriver::frees = 0;
  ASSERT_EQ(m.park(FakeDriver::driver()), "");
  EXPECT_TRUE(m.parked());
  EXPECT_EQ(FakeDriver::frees, 3);
  FakeDriver::next = at;  // the allocator gives them back in order
  ASSERT_EQ(m.unpark(FakeDriver::driver()), "");
  EXPECT_FALSE(m.parked());
  for (int i = 0; i < 3; ++i) {
    auto* b = reinterpret_cast<unsigned char*>(at[static_cast<size_t>(i)]);
    EXPECT_EQ(b[0], 'a' + i);
    EXPECT_EQ(b[(1 << 20) - 1], 'a' + i);
  }
  for (auto p : at) {
    auto base = m.removed(p);
    ASSERT_TRUE(base.has_value());
    EXPECT_EQ(*base, p);
    FakeDriver::free(p);
  }
  EXPECT_FALSE(m.removed(at[0]).has_value());
}

TEST(UvmPark, ARangeElsewhereFailsLoudly) {
  ManagedMemory m;
  unsigned long long p = 0;
  FakeDriver::next = {hole()};
  ASSERT_EQ(FakeDriver::alloc(&p, 1 << 20, 1), 0);
  m.added({p, 1 << 20, 1, nullptr, nullptr, 0});
  std::uintptr_t other = hole();
  ASSERT_EQ(m.park(FakeDriver::driver()), "");
  FakeDriver::next = {other};
  std::string why = m.unpark(FakeDriver::driver());
  EXPECT_NE(why.find("came back at"), std::string::npos) << why;
  EXPECT_NE(why.find("the program's pointers would be wrong"), std::string::npos) << why;
  EXPECT_TRUE(m.parked());  // still parked: nothing runs on wrong memory
  FakeDriver::next = {p};   // a later try that gets the address works
  EXPECT_EQ(m.unpark(FakeDriver::driver()), "");
  FakeDriver::free(p);
}
