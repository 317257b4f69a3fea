// The benchmark's smoke mode (one small guest, one run of every method, a short
// runtime-cost check), so that the bench cannot rot between real runs.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "common/child_process.hpp"
#include "common/fs.hpp"
#include "common/temp_dir.hpp"

using namespace vmckpt;
using namespace std::chrono_literals;

TEST(BenchSmoke, EveryMethodRunsAndEveryRestoreIsVerified) {
  TempDir out("vmckpt-bench-smoke");
  // SIGTERM at the limit (the bench stops its guests and detaches its loop devices on it,
  // and its progress lines come back in r->err), SIGKILL 20 s later; runCommand's own
  // deadline (SIGKILL, output lost) only behind both. About 140 s on a quiet 2-core host.
  auto r = runCommand({"timeout", "--kill-after=20", "250", VMCKPT_BENCH_BIN, "--smoke", "--out-dir", out.path(),
                       "--stem", "smoke"},
                      Deadline::in(285s));
  ASSERT_TRUE(r) << r.error().message();
  ASSERT_TRUE(r->status.success()) << r->status.describe() << (r->status.exited() && r->status.code == 124 ? " (timed out)" : "")
                                   << "\n" << r->err;

  auto text = fs::readFile(out.path() + "/smoke.json", 16 << 20);
  ASSERT_TRUE(text) << text.error().message();
  auto res = nlohmann::json::parse(*text);
  ASSERT_EQ(res["sizes"].size(), 1u);
  std::vector<std::string> seen;
  for (const auto& m : res["sizes"][0]["methods"]) {
    std::string key = m["method"];
    seen.push_back(key);
    EXPECT_TRUE(m["ok"].get<bool>()) << key << ": " << m.value("error", "");
    EXPECT_EQ(m["restores_verified"], 1) << key;
    ASSERT_TRUE(m["pause_ms"].is_object()) << key;
    EXPECT_GT(m["pause_ms"]["median"].get<double>(), 0) << key;
    EXPECT_GT(m["restore_ms"]["median"].get<double>(), 0) << key;
    EXPECT_GT(m["written_bytes"]["median"].get<double>(), 0) << key;
  }
  EXPECT_EQ(seen, (std::vector<std::string>{"vmckpt-btrfs", "vmckpt-reflink-xfs", "vmckpt-copy", "qemu-migrate-to-file",
                                            "qemu-background-snapshot", "qemu-snapshot-save"}));
  EXPECT_TRUE(res["runtime_cost"].value("ok", false)) << res["runtime_cost"].dump();
  for (const char* k : {"cores", "qemu", "kernel", "filesystem", "date", "accel"})
    EXPECT_TRUE(res["host"].contains(k)) << k;

  auto md = fs::readFile(out.path() + "/smoke.md", 1 << 20);
  ASSERT_TRUE(md);
  EXPECT_NE(md->find("| Guest RAM (written) | Method |"), std::string::npos);
  auto png = fs::readFile(out.path() + "/smoke.png", 16 << 20);
  ASSERT_TRUE(png);
  EXPECT_EQ(png->substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
}
