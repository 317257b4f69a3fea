#include "bench/report.hpp"

#include <gtest/gtest.h>

#include "bench/methods.hpp"

using namespace vmckpt::bench;

namespace {

MethodResult method(const std::string& key, double pause, double restore) {
  MethodResult m{key, key + " label"};
  m.pauseMs = {pause, pause * 2, pause / 2};
  m.totalMs = {10, 20, 30};
  m.restoreMs = {restore, restore, restore};
  m.writtenBytes = {1 << 20};
  m.secondSnapshotBytes = {64 << 20};
  m.restoresVerified = 3;
  return m;
}

Json result(std::vector<MethodResult> ms) {
  Json size = {{"memory_mib", 4096}, {"written_mib", 2048}, {"methods", Json::array()}};
  for (auto& m : ms) size["methods"].push_back(m.toJson());
  return {{"host", {{"date", "d"}, {"cores", 2}}}, {"config", {{"runs", 3}}}, {"sizes", Json::array({size})}};
}

}  // namespace

TEST(BenchStats, MedianMinMaxOfUnsortedRuns) {
  Json s = stats({5, 1, 3, 2});
  EXPECT_DOUBLE_EQ(s["median"].get<double>(), 2.5);
  EXPECT_DOUBLE_EQ(s["min"].get<double>(), 1);
  EXPECT_DOUBLE_EQ(s["max"].get<double>(), 5);
  EXPECT_TRUE(stats({}).is_null());
}

TEST(BenchReport, RatiosAreBaselineOverVmckptMedians) {
  Json r = result({method(kVmckptMethod, 5, 50), method(kBaselineMethod, 1000, 3000)});
  Json q = ratiosAt(r["sizes"][0]);
  EXPECT_DOUBLE_EQ(q["pause"].get<double>(), 200);
  EXPECT_DOUBLE_EQ(q["restore"].get<double>(), 60);
  std::string md = markdownReport(r);
  EXPECT_NE(md.find("pause 200x, restore 60x"), std::string::npos) << md;
  EXPECT_NE(md.find("| 4 GiB (2048 MiB) | vmckpt-btrfs label | 5.0 (2.5–10.0) |"), std::string::npos) << md;
}

TEST(BenchReport, AFailedMethodStaysInTheTableWithItsReason) {
  auto failed = method(kBaselineMethod, 1000, 3000);
  failed.ok = false;
  failed.error = "migration to file: No space left on device";
  Json r = result({method(kVmckptMethod, 5, 50), failed});
  EXPECT_TRUE(ratiosAt(r["sizes"][0])["pause"].is_null());
  std::string md = markdownReport(r);
  EXPECT_NE(md.find("**failed**: migration to file: No space left on device"), std::string::npos) << md;
  EXPECT_NE(md.find("pause n/a, restore n/a"), std::string::npos) << md;
}

TEST(BenchReport, LiveSnapshotsStandAgainstTheFastPathWithoutABaseline) {
  Json r = result({method(kVmckptMethod, 20, 60), method("vmckpt-live", 12, 900)});
  std::string md = markdownReport(r);
  EXPECT_NE(md.find("- 4096 MiB guest: pause 12.0 ms against 20.0 ms, snapshot total 20 ms against 20 ms, restore 900 ms "
                    "against 60 ms"),
            std::string::npos)
      << md;
  EXPECT_EQ(md.find("Ratios"), std::string::npos) << "no QEMU baseline in this run: " << md;
}
