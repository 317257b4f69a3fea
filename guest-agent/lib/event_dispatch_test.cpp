// Unit tests of libvmckpt's event dispatch: hook calls and reply lines, no sockets.
#include "event_dispatch.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <stdexcept>
#include <vector>

#include "vmckpt/plugin.hpp"

using namespace vmckpt;
using vmckpt::wire::Json;

namespace {

struct Recorder {
  std::vector<vmckpt_event> events;
  std::vector<std::string> maps;  // "(null)" when the hook got NULL
  vmckpt_result result = VMCKPT_DONE;
  std::string reason;
  bool fillReason = false;
};

vmckpt_result recordingHook(void* ctx, vmckpt_event ev, const char* map, char* reason, size_t len) {
  auto* r = static_cast<Recorder*>(ctx);
  r->events.push_back(ev);
  r->maps.push_back(map ? map : "(null)");
  if (r->fillReason) std::memset(reason, 'z', len);  // no NUL at all
  else if (!r->reason.empty()) std::snprintf(reason, len, "%s", r->reason.c_str());
  return r->result;
}

Json replyOf(const std::string& line) {
  EXPECT_FALSE(line.empty());
  EXPECT_EQ(line.back(), '\n');
  auto j = wire::parseObject(line.substr(0, line.size() - 1));
  EXPECT_TRUE(j.has_value());
  return j ? *j : Json();
}

std::string eventLine(uint64_t seq, const std::string& name, const Json* map = nullptr) {
  Json j = {{"type", "event"}, {"seq", seq}, {"event", name}};
  if (map) j["device_map"] = *map;
  return j.dump();
}

plugin::Registration reg(Recorder& r) { return {"test", &recordingHook, &r}; }

std::string handle(const plugin::Registration& g, const std::string& text) {
  return plugin::handleAgentItem(g, {wire::LineBuffer::Kind::line, text});
}

TEST(EventDispatch, CallsTheHookInOrderAndRepliesWithTheSeq) {
  Recorder r;
  auto g = reg(r);
  Json map = {{"ib0", "rxe0"}};
  Json rep = replyOf(handle(g, eventLine(11, "PRESUSPEND")));
  EXPECT_EQ(rep["type"], "reply");
  EXPECT_EQ(rep["seq"], 11);
  EXPECT_EQ(rep["result"], "done");
  EXPECT_FALSE(rep.contains("reason"));
  replyOf(handle(g, eventLine(12, "PRECHECKPOINT")));
  replyOf(handle(g, eventLine(13, "RESUME")));
  replyOf(handle(g, eventLine(14, "RESTART", &map)));
  ASSERT_EQ(r.events.size(), 4u);
  EXPECT_EQ(r.events[0], VMCKPT_PRESUSPEND);
  EXPECT_EQ(r.events[1], VMCKPT_PRECHECKPOINT);
  EXPECT_EQ(r.events[2], VMCKPT_RESUME);
  EXPECT_EQ(r.events[3], VMCKPT_RESTART);
  EXPECT_EQ(r.maps[0], "(null)");
  EXPECT_EQ(r.maps[2], "(null)");
  EXPECT_EQ(Json::parse(r.maps[3]), map);
}

TEST(EventDispatch, RestartWithoutMapGetsEmptyObject) {
  Recorder r;
  replyOf(handle(reg(r), eventLine(1, "RESTART")));
  ASSERT_EQ(r.maps.size(), 1u);
  EXPECT_EQ(r.maps[0], "{}");
}

TEST(EventDispatch, FailedCarriesTheReason) {
  Recorder r;
  r.result = VMCKPT_FAILED;
  r.reason = "QP 17 would not drain";
  Json rep = replyOf(handle(reg(r), eventLine(5, "PRESUSPEND")));
  EXPECT_EQ(rep["result"], "failed");
  EXPECT_EQ(rep["reason"], "QP 17 would not drain");
}

TEST(EventDispatch, UnterminatedReasonIsCut) {
  Recorder r;
  r.result = VMCKPT_FAILED;
  r.fillReason = true;
  Json rep = replyOf(handle(reg(r), eventLine(5, "PRESUSPEND")));
  EXPECT_EQ(rep["result"], "failed");
  EXPECT_LE(rep["reason"].get<std::string>().size(), wire::kMaxReasonBytes);
}

TEST(EventDispatch, NotMineAndInvalidResults) {
  Recorder r;
  r.result = VMCKPT_NOT_MINE;
  EXPECT_EQ(replyOf(handle(reg(r), eventLine(1, "RESUME")))["result"], "not_mine");
  r.result = static_cast<vmckpt_result>(42);
  Json rep = replyOf(handle(reg(r), eventLine(2, "RESUME")));
  EXPECT_EQ(rep["result"], "failed");
  EXPECT_NE(rep["reason"].get<std::string>().find("42"), std::string::npos);
}

TEST(EventDispatch, UnknownEventIsNotMineWithoutACall) {
  Recorder r;
  Json rep = replyOf(handle(reg(r), eventLine(9, "POSTRESTART_V2")));
  EXPECT_EQ(rep["seq"], 9);
  EXPECT_EQ(rep["result"], "not_mine");
  EXPECT_TRUE(r.events.empty());
}

TEST(EventDispatch, IgnoresWhatIsNotAnEvent) {
  Recorder r;
  auto g = reg(r);
  EXPECT_EQ(handle(g, R"({"type":"error","message":"x"})"), "");
  EXPECT_EQ(handle(g, R"({"type":"registered","pid":1})"), "");
  EXPECT_EQ(handle(g, "not json"), "");
  EXPECT_EQ(handle(g, R"({"type":"event","event":"RESUME"})"), "");  // no seq
  EXPECT_EQ(plugin::handleAgentItem(g, {wire::LineBuffer::Kind::oversized, {}}), "");
  EXPECT_TRUE(r.events.empty());
}

vmckpt_result throwingHook(void*, vmckpt_event, const char*, char*, size_t) { throw std::runtime_error("boom"); }

TEST(EventDispatch, AThrowingHookFails) {
  plugin::Registration g{"t", &throwingHook, nullptr};
  Json rep = replyOf(handle(g, eventLine(1, "PRESUSPEND")));
  EXPECT_EQ(rep["result"], "failed");
}

// --- the C++ base class of plugin.hpp, through the same dispatch -----------------------

class Partial : public Plugin {
 public:
  EventResult onPrecheckpoint() override { return EventResult::failed("disk full"); }
  EventResult onRestart(std::string_view map) override {
    lastMap = std::string(map);
    return EventResult::notMine();
  }
  EventResult onResume() override { throw std::runtime_error("resume exploded"); }
  std::string lastMap;
};

TEST(PluginBase, DefaultsAreDoneAndOverridesWork) {
  Partial p;
  plugin::Registration g{"cxx", &Plugin::hook, &p};
  Json map = {{"a", 1}};
  EXPECT_EQ(replyOf(handle(g, eventLine(1, "PRESUSPEND")))["result"], "done");
  Json f = replyOf(handle(g, eventLine(2, "PRECHECKPOINT")));
  EXPECT_EQ(f["result"], "failed");
  EXPECT_EQ(f["reason"], "disk full");
  Json e = replyOf(handle(g, eventLine(3, "RESUME")));
  EXPECT_EQ(e["result"], "failed");
  EXPECT_EQ(e["reason"], "resume exploded");
  EXPECT_EQ(replyOf(handle(g, eventLine(4, "RESTART", &map)))["result"], "not_mine");
  EXPECT_EQ(Json::parse(p.lastMap), map);
}

}  // namespace
