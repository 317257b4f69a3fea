#include "vmm/writeback.hpp"

#include <gtest/gtest.h>

namespace vmckpt::vmm {
namespace {

constexpr std::uint64_t kGiB = 1ull << 30;

TEST(Writeback, DefaultsWriteGuestRamBack) {
  WritebackState defaults{2 * kGiB, 4 * kGiB, 3000};
  HostCheck c = writebackCheck(defaults, 1 * kGiB);
  EXPECT_FALSE(c.ok);  // the 30 s expiry alone writes guest RAM back
  EXPECT_FALSE(c.required);
  EXPECT_NE(c.detail.find("RUNTIME_COST.md"), std::string::npos) << c.detail;
  EXPECT_NE(c.detail.find("expiry 30 s"), std::string::npos) << c.detail;
}

TEST(Writeback, TunedHostPassesUntilGuestsOutgrowTheThreshold) {
  WritebackState tuned{12 * kGiB, 24 * kGiB, kTunedExpireCentisecs};
  EXPECT_TRUE(writebackCheck(tuned, 8 * kGiB).ok);
  HostCheck big = writebackCheck(tuned, 16 * kGiB);
  EXPECT_FALSE(big.ok);
  EXPECT_NE(big.detail.find("exceeds the threshold"), std::string::npos) << big.detail;
}

TEST(Writeback, ReadsThisHost) {
  auto w = readWriteback();
  ASSERT_TRUE(w) << w.error().message();
  EXPECT_GT(w->dirtyThresholdBytes, 0u);
  EXPECT_GE(w->dirtyThresholdBytes, w->backgroundThresholdBytes);
  EXPECT_GT(w->expireCentisecs, 0);
}

}  // namespace
}  // namespace vmckpt::vmm
