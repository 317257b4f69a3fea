#include "vmm/fault_injection.hpp"

#include <gtest/gtest.h>

#include <cstdlib>

namespace vmckpt::vmm {
namespace {

TEST(FaultInjection, ParsesPointAndAction) {
  auto none = parseFaultSpec("");
  ASSERT_TRUE(none);
  EXPECT_FALSE(none->has_value());
  auto f = parseFaultSpec("after-stop:kill-qemu");
  ASSERT_TRUE(f && f->has_value());
  EXPECT_EQ((*f)->point, "after-stop");
  EXPECT_EQ((*f)->action, FaultAction::killQemu);
  EXPECT_EQ((*parseFaultSpec(" mid-devstate:kill "))->action, FaultAction::kill);
  EXPECT_EQ((*parseFaultSpec("before-publish:error"))->action, FaultAction::error);
}

TEST(FaultInjection, TyposAreErrorsNotSilence) {
  for (const char* bad : {"after-stop", "after-stp:error", "after-stop:explode", ":error", "after-stop:"}) {
    auto r = parseFaultSpec(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().code(), Errc::invalidArgument) << bad;
  }
}

TEST(FaultInjection, PointsAreNoOpsWithoutTheVariable) {
  // The suite runs without VMCKPT_FAULT; a point that is not named does nothing.
  if (std::getenv("VMCKPT_FAULT")) GTEST_SKIP() << "VMCKPT_FAULT is set in this environment";
  EXPECT_TRUE(faultPoint("after-stop", 0));
}

}  // namespace
}  // namespace vmckpt::vmm
