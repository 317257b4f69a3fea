// The interposer's pure parts: virtual id tables and the post gate. (The wrappers and
// the data path run against a real device only: tests/integration/ib_guest_test.cpp.)
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "gate.hpp"
#include "ids.hpp"

using namespace vmckpt::ib;
using namespace std::chrono_literals;

TEST(IbIdTable, IsTheIdentityUntilARebuildMapsSomething) {
  IdTable<uint32_t> t;
  EXPECT_TRUE(t.empty());
  EXPECT_EQ(t.toReal(17), 17u);
  EXPECT_EQ(t.toVirtual(17), 17u);
  t.set(17, 40);  // QP 17 came back as 40
  EXPECT_FALSE(t.empty());
  EXPECT_EQ(t.toReal(17), 40u);
  EXPECT_EQ(t.toVirtual(40), 17u);
  EXPECT_EQ(t.toReal(18), 18u) << "unmapped ids stay themselves";
  t.set(17, 41);  // a second rebuild: the old real id is forgotten
  EXPECT_EQ(t.toReal(17), 41u);
  EXPECT_EQ(t.toVirtual(41), 17u);
  EXPECT_EQ(t.toVirtual(40), 40u);
  t.set(17, 17);  // back to itself: no entry
  EXPECT_TRUE(t.empty());
  t.set(1, 2);
  t.clear();
  EXPECT_EQ(t.toReal(1), 1u);
}

TEST(IbIdTable, TranslatesGidsAndAddressVectors) {
  Translation t;
  ibv_gid before{}, after{};
  before.raw[15] = 1;
  after.raw[15] = 9;
  t.gid.set(before, after);
  t.lid.set(3, 7);
  ibv_ah_attr av{};
  av.dlid = 3;
  av.is_global = 1;
  av.grh.dgid = before;
  t.avToReal(av);
  EXPECT_EQ(av.dlid, 7);
  EXPECT_EQ(av.grh.dgid.raw[15], 9);
  ibv_gid back = t.gid.toVirtual(after);
  EXPECT_EQ(back.raw[15], 1);
}

TEST(IbGate, CloseWaitsForPostsInsideAndHoldsNewOnes) {
  Gate g;
  g.enter();  // a post in progress
  std::atomic<bool> closed{false};
  std::thread closer([&] {
    EXPECT_TRUE(g.close(5s));
    closed = true;
  });
  std::this_thread::sleep_for(50ms);
  EXPECT_FALSE(closed) << "close() returned while a post was inside";
  g.leave();
  closer.join();
  EXPECT_TRUE(closed);

  std::atomic<bool> posted{false};
  std::thread poster([&] {
    GatePass pass(g);
    posted = true;
  });
  std::this_thread::sleep_for(50ms);
  EXPECT_FALSE(posted) << "a post went through a closed gate";
  g.open();
  poster.join();
  EXPECT_TRUE(posted);
}

TEST(IbGate, CloseGivesUpOnAPostThatNeverLeaves) {
  Gate g;
  g.enter();
  EXPECT_FALSE(g.close(20ms));
  EXPECT_TRUE(g.closed());
  g.leave();
  g.open();
  EXPECT_FALSE(g.closed());
}
