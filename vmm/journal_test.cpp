#include "vmm/journal.hpp"

#include <gtest/gtest.h>

#include "common/fs.hpp"
#include "common/temp_dir.hpp"

namespace vmckpt::vmm {
namespace {

TEST(Journal, RoundTripAndClear) {
  TempDir dir("vmckpt-journal");
  ASSERT_FALSE(dir.path().empty());
  VmPaths p(dir.path());
  auto none = readJournal(p);
  ASSERT_TRUE(none);
  EXPECT_FALSE(none->has_value());

  JournalEntry e{.op = JournalOp::restore, .snapshotId = "20261122-010009-8287", .keepPaused = true,
                 .freshLive = ".live-restore-42", .oldLive = ".live-old-42", .pid = 42, .started = "2026-11-22T01:00:00Z"};
  ASSERT_TRUE(writeJournal(p, e));
  auto back = readJournal(p);
  ASSERT_TRUE(back) << back.error().message();
  ASSERT_TRUE(back->has_value());
  EXPECT_EQ((*back)->op, JournalOp::restore);
  EXPECT_EQ((*back)->snapshotId, e.snapshotId);
  EXPECT_TRUE((*back)->keepPaused);
  EXPECT_EQ((*back)->oldLive, ".live-old-42");
  EXPECT_EQ((*back)->pid, 42);
  ASSERT_TRUE(clearJournal(p));
  EXPECT_FALSE(readJournal(p)->has_value());

  JournalEntry m{.op = JournalOp::migrate, .guestWasRunning = true, .quiesced = true, .peer = "[fd00::1]:7000", .pid = 7};
  ASSERT_TRUE(writeJournal(p, m));
  back = readJournal(p);
  ASSERT_TRUE(back && back->has_value());
  EXPECT_EQ((*back)->op, JournalOp::migrate);
  EXPECT_EQ((*back)->peer, "[fd00::1]:7000");
  EXPECT_TRUE((*back)->quiesced);
}

TEST(Journal, DamagedOrPlantedJournalsAreRefused) {
  TempDir dir("vmckpt-journal");
  ASSERT_FALSE(dir.path().empty());
  VmPaths p(dir.path());
  for (const char* text : {
           "not json",
           R"({"format": 2, "op": "snapshot"})",
           R"({"format": 1, "op": "format-disk"})",
           R"({"format": 1, "op": "restore", "old_live": "../../etc"})",
           R"({"format": 1, "op": "restore", "fresh_live": "/tmp/x"})",
           R"({"format": 1, "op": "restore", "old_live": "live"})",
           R"({"format": 1, "op": "snapshot", "snapshot": "../x/y"})",
           R"({"format": 1, "op": "snapshot", "quiesced": "yes"})",
           R"({"format": 1, "op": "migrate", "peer": "host:1\u001b[2J"})",
           R"({"format": 1, "op": "migrate", "peer": "a b:1"})",
       }) {
    ASSERT_TRUE(fs::writeFileAtomic(p.journal, text));
    auto r = readJournal(p);
    ASSERT_FALSE(r) << text;
    EXPECT_EQ(r.error().code(), Errc::corrupt) << text;
  }
}

TEST(Journal, OnlyScratchNamesVmckptMakes) {
  EXPECT_TRUE(isRestoreScratchName(".live-restore-123"));
  EXPECT_TRUE(isRestoreScratchName(".live-old-9"));
  EXPECT_FALSE(isRestoreScratchName("live"));
  EXPECT_FALSE(isRestoreScratchName(".live-old-1/.."));
  EXPECT_FALSE(isRestoreScratchName(""));
  EXPECT_FALSE(isRestoreScratchName(".live-restore-" + std::string(200, 'x')));
}

}  // namespace
}  // namespace vmckpt::vmm
