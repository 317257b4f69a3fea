// Every registered plugin, through its C hook, as the agent's events would reach it.
#include <gtest/gtest.h>

#include "conformance.hpp"

namespace vmckpt::conformance {

std::vector<SubjectFactory>& subjects() {
  static std::vector<SubjectFactory> all;
  return all;
}

namespace {

struct Call {
  vmckpt_result result;
  std::string reason;
};

Call send(Subject& s, vmckpt_event ev, const char* deviceMap = nullptr) {
  vmckpt_plugin_descriptor d = s.descriptor();
  EXPECT_EQ(d.api_version, static_cast<unsigned>(VMCKPT_PLUGIN_API_VERSION));
  char reason[256] = {};
  vmckpt_result r = d.hook(d.ctx, ev, ev == VMCKPT_RESTART ? (deviceMap ? deviceMap : "{}") : nullptr, reason, sizeof reason);
  return {r, reason};
}

// PRESUSPEND then PRECHECKPOINT, both answered done (or not-mine); returns what was saved.
std::string quiesce(Subject& s) {
  EXPECT_NE(send(s, VMCKPT_PRESUSPEND).result, VMCKPT_FAILED);
  EXPECT_NE(send(s, VMCKPT_PRECHECKPOINT).result, VMCKPT_FAILED);
  return s.saved();
}

class Conformance : public ::testing::TestWithParam<SubjectFactory> {
 protected:
  std::unique_ptr<Subject> make(bool failing = false) { return GetParam().make(failing); }
};

TEST_P(Conformance, QuiesceIsIdempotent) {
  auto s = make();
  std::string once = quiesce(*s);
  EXPECT_FALSE(s->works()) << "works while quiesced: PRESUSPEND must stop new work";
  EXPECT_NE(send(*s, VMCKPT_PRESUSPEND).result, VMCKPT_FAILED);
  EXPECT_NE(send(*s, VMCKPT_PRECHECKPOINT).result, VMCKPT_FAILED);
  EXPECT_EQ(s->saved(), once) << "a second quiesce saved something else";
  EXPECT_EQ(send(*s, VMCKPT_RESUME).result, VMCKPT_DONE);
}

TEST_P(Conformance, ThawAfterQuiesceReturnsToWork) {
  auto s = make();
  EXPECT_TRUE(s->works());
  quiesce(*s);
  EXPECT_FALSE(s->works());
  EXPECT_EQ(send(*s, VMCKPT_RESUME).result, VMCKPT_DONE);
  EXPECT_TRUE(s->works());
  // And again: a plugin is quiesced many times in its life.
  quiesce(*s);
  EXPECT_EQ(send(*s, VMCKPT_RESUME).result, VMCKPT_DONE);
  EXPECT_TRUE(s->works());
}

TEST_P(Conformance, ChangeAltersTheSavedState) {
  auto s = make();
  std::string before = quiesce(*s);
  ASSERT_EQ(send(*s, VMCKPT_RESUME).result, VMCKPT_DONE);
  s->change();
  std::string after = quiesce(*s);
  EXPECT_NE(before, after) << "the saved state does not follow the plugin's state";
  EXPECT_EQ(send(*s, VMCKPT_RESUME).result, VMCKPT_DONE);
}

TEST_P(Conformance, SaveChangeRestoreSaveIsEqual) {
  auto s = make();
  s->change();
  std::string first = quiesce(*s);
  auto memory = s->captureMemory();  // the VM snapshot is taken here
  ASSERT_EQ(send(*s, VMCKPT_RESUME).result, VMCKPT_DONE);
  s->change();
  s->change();
  // The VM is restored from the snapshot: memory comes back, then RESTART.
  s->restoreMemory(memory);
  Call restart = send(*s, VMCKPT_RESTART, R"({"ib": "rxe0"})");
  EXPECT_EQ(restart.result, VMCKPT_DONE) << restart.reason;
  EXPECT_EQ(quiesce(*s), first) << "state after restore differs from the state saved";
  EXPECT_EQ(send(*s, VMCKPT_RESUME).result, VMCKPT_DONE);
  EXPECT_TRUE(s->works());
}

TEST_P(Conformance, FailureComesWithAReason) {
  auto s = make(true);
  if (!s->canFail()) GTEST_SKIP() << GetParam().name << " has no way to make PRESUSPEND fail";
  Call c = send(*s, VMCKPT_PRESUSPEND);
  EXPECT_EQ(c.result, VMCKPT_FAILED);
  EXPECT_FALSE(c.reason.empty()) << "a failure must say why (it reaches the user's error line)";
}

TEST_P(Conformance, UnknownEventsAreNotMine) {
  auto s = make();
  vmckpt_plugin_descriptor d = s->descriptor();
  char reason[64] = {};
  EXPECT_EQ(d.hook(d.ctx, static_cast<vmckpt_event>(99), nullptr, reason, sizeof reason), VMCKPT_NOT_MINE);
}

INSTANTIATE_TEST_SUITE_P(Plugins, Conformance, ::testing::ValuesIn(subjects()),
                         [](const auto& p) { return p.param.name; });

}  // namespace
}  // namespace vmckpt::conformance
