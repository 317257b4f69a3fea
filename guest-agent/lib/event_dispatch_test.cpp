// Unit tests of libvmckpt's event dispatch: hook calls and reply lines, no sockets.
#include "event_dispatch.hpp"

#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>
#include <functional>
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

// --- API version 2: CONNECT, vmckpt_publish, vmckpt_connect_follows, release ----------

TEST(EventDispatch, ConnectGetsThePeersAsAnArrayText) {
  Recorder r;
  auto g = reg(r);
  Json rep = replyOf(handle(g, R"({"type":"event","seq":3,"event":"CONNECT","peers":[{"qpn":17},{"qpn":18}]})"));
  EXPECT_EQ(rep["seq"], 3);
  EXPECT_EQ(rep["result"], "done");
  EXPECT_FALSE(rep.contains("data"));
  replyOf(handle(g, eventLine(4, "CONNECT")));  // no peers: "[]"
  ASSERT_EQ(r.events.size(), 2u);
  EXPECT_EQ(r.events[0], VMCKPT_CONNECT);
  EXPECT_EQ(r.maps[0], R"([{"qpn":17},{"qpn":18}])");
  EXPECT_EQ(r.maps[1], "[]");
}

TEST(EventDispatch, AVersion1PluginIsNeverCalledWithConnect) {
  Recorder r;
  plugin::Registration g{"old", &recordingHook, &r, 1};
  Json rep = replyOf(handle(g, R"({"type":"event","seq":5,"event":"CONNECT","peers":[{"qpn":1}]})"));
  EXPECT_EQ(rep["seq"], 5);
  EXPECT_EQ(rep["result"], "not_mine");
  EXPECT_TRUE(r.events.empty());
  replyOf(handle(g, eventLine(6, "RESTART")));  // everything else still reaches it
  EXPECT_EQ(r.events, std::vector<vmckpt_event>{VMCKPT_RESTART});
}

// A hook that runs a test's code inside the call and records what the C functions said.
struct Scripted {
  std::function<void(vmckpt_event)> body;
  std::vector<int> follows;   // vmckpt_connect_follows() per call
  std::vector<int> releases;  // vmckpt_release_requested() per call
  vmckpt_result result = VMCKPT_DONE;
};

vmckpt_result scriptedHook(void* ctx, vmckpt_event ev, const char*, char*, size_t) {
  auto* s = static_cast<Scripted*>(ctx);
  s->follows.push_back(vmckpt_connect_follows());
  s->releases.push_back(vmckpt_release_requested());
  if (s->body) s->body(ev);
  return s->result;
}

TEST(EventDispatch, PublishInRestartBecomesTheReplysData) {
  Scripted s;
  std::vector<int> rcs;
  s.body = [&](vmckpt_event) {
    rcs.push_back(vmckpt_publish(R"({"qpn":1})"));
    rcs.push_back(vmckpt_publish(R"( {"qpn":17, "gid":"fe80::1"} )"));  // replaces the first
  };
  plugin::Registration g{"ib", &scriptedHook, &s};
  Json rep = replyOf(handle(g, R"({"type":"event","seq":8,"event":"RESTART","connect_follows":true})"));
  EXPECT_EQ(rcs, (std::vector<int>{0, 0}));
  EXPECT_EQ(rep["result"], "done");
  EXPECT_EQ(rep["data"], Json::parse(R"({"qpn":17,"gid":"fe80::1"})"));
  // Not carried over into the next RESTART.
  s.body = nullptr;
  EXPECT_FALSE(replyOf(handle(g, eventLine(9, "RESTART"))).contains("data"));
  // A failed RESTART carries what it published too, with its reason.
  s.body = [&](vmckpt_event) { (void)vmckpt_publish("{}"); };
  s.result = VMCKPT_FAILED;
  EXPECT_EQ(replyOf(handle(g, eventLine(10, "RESTART")))["data"], Json::object());
}

TEST(EventDispatch, PublishRefusesWhatIsNotASmallObject) {
  Scripted s;
  std::vector<int> rcs;
  std::string atLimit = R"({"k":")" + std::string(VMCKPT_PUBLISH_MAX - 8, 'x') + R"("})";
  std::string overLimit = R"({"k":")" + std::string(VMCKPT_PUBLISH_MAX - 7, 'x') + R"("})";
  std::string overAsText = R"({"k":"x"})" + std::string(VMCKPT_PUBLISH_MAX, ' ');
  s.body = [&](vmckpt_event) {
    for (const char* bad : {static_cast<const char*>(nullptr), "[1,2]", "17", "\"s\"", "{", "{} {}", "",
                            "{\"a\":1e5}" /* fine */})
      rcs.push_back(vmckpt_publish(bad));
    rcs.push_back(vmckpt_publish(overLimit.c_str()));
    rcs.push_back(vmckpt_publish(overAsText.c_str()));
    rcs.push_back(vmckpt_publish(atLimit.c_str()));
  };
  plugin::Registration g{"ib", &scriptedHook, &s};
  Json rep = replyOf(handle(g, eventLine(1, "RESTART")));
  EXPECT_EQ(rcs, (std::vector<int>{-EINVAL, -EINVAL, -EINVAL, -EINVAL, -EINVAL, -EINVAL, -EINVAL, 0, -EINVAL,
                                   -EINVAL, 0}));
  ASSERT_TRUE(rep.contains("data"));
  EXPECT_EQ(rep["data"]["k"].get<std::string>().size(), VMCKPT_PUBLISH_MAX - 8);
}

TEST(EventDispatch, PublishInPlainEventsAndOutsideHooksIsEPERM) {
  EXPECT_EQ(vmckpt_publish("{}"), -EPERM);
  Scripted s;
  std::vector<int> rcs;
  s.body = [&](vmckpt_event) { rcs.push_back(vmckpt_publish(R"({"qpn":17})")); };
  plugin::Registration g{"ib", &scriptedHook, &s};
  for (const char* ev : {"PRESUSPEND", "PRECHECKPOINT", "RESUME", "CONNECT"})
    EXPECT_FALSE(replyOf(handle(g, eventLine(1, ev))).contains("data")) << ev;
  EXPECT_EQ(rcs, (std::vector<int>{-EPERM, -EPERM, -EPERM, -EPERM}));
  EXPECT_EQ(vmckpt_publish("{}"), -EPERM);  // the RESTART scope ended with the call
  replyOf(handle(g, eventLine(2, "RESTART")));
  EXPECT_EQ(vmckpt_publish("{}"), -EPERM);
}

// Each flag counts only in the event that may carry it, and so does publishing.
TEST(EventDispatch, ConnectFollowsReleaseAndPublishHoldOnlyInTheEventsThatCarryThem) {
  struct Case {
    const char* event;
    const char* fields;
    int follows, release, publishRc;
  };
  const Case cases[] = {
      {"RESTART", R"(,"connect_follows":true)", 1, 0, 0},
      {"RESTART", R"(,"connect_follows":false)", 0, 0, 0},
      {"RESTART", "", 0, 0, 0},
      {"RESTART", R"(,"release":true)", 0, 0, 0},
      {"RESUME", R"(,"connect_follows":true)", 1, 0, 0},
      {"RESUME", R"(,"connect_follows":false)", 0, 0, -EPERM},
      {"RESUME", "", 0, 0, -EPERM},
      {"RESUME", R"(,"release":true)", 0, 0, -EPERM},
      {"PRESUSPEND", R"(,"release":true)", 0, 1, 0},
      {"PRESUSPEND", R"(,"release":false)", 0, 0, -EPERM},
      {"PRESUSPEND", R"(,"connect_follows":true)", 0, 0, -EPERM},
      {"PRECHECKPOINT", R"(,"release":true)", 0, 1, 0},
      {"PRECHECKPOINT", R"(,"connect_follows":true,"release":true)", 0, 1, 0},
      {"PRECHECKPOINT", R"(,"release":false)", 0, 0, -EPERM},
      {"PRECHECKPOINT", R"(,"connect_follows":true)", 0, 0, -EPERM},
      {"PRECHECKPOINT", "", 0, 0, -EPERM},
      {"CONNECT", R"(,"connect_follows":true,"release":true)", 0, 0, -EPERM},
  };
  EXPECT_EQ(vmckpt_connect_follows(), 0);
  EXPECT_EQ(vmckpt_release_requested(), 0);
  for (const auto& c : cases) {
    Scripted s;
    std::vector<int> rcs;
    s.body = [&](vmckpt_event) { rcs.push_back(vmckpt_publish(R"({"qpn":17})")); };
    plugin::Registration g{"ib", &scriptedHook, &s};
    std::string line = R"({"type":"event","seq":1,"event":")" + std::string(c.event) + "\"" + c.fields + "}";
    Json rep = replyOf(handle(g, line));
    EXPECT_EQ(s.follows, std::vector<int>{c.follows}) << line;
    EXPECT_EQ(s.releases, std::vector<int>{c.release}) << line;
    EXPECT_EQ(rcs, std::vector<int>{c.publishRc}) << line;
    EXPECT_EQ(rep.contains("data"), c.publishRc == 0) << line;
  }
  EXPECT_EQ(vmckpt_connect_follows(), 0);
  EXPECT_EQ(vmckpt_release_requested(), 0);
}

TEST(EventDispatch, PublishInTheReleaseStagesAndAConnectFollowsResume) {
  Scripted s;
  std::vector<int> rcs;
  s.body = [&](vmckpt_event ev) {
    const char* json = ev == VMCKPT_PRESUSPEND      ? R"({"released":1})"
                       : ev == VMCKPT_PRECHECKPOINT ? R"({"released":true})"
                                                    : R"({"qpn":21})";
    rcs.push_back(vmckpt_publish(json));
  };
  plugin::Registration g{"ib", &scriptedHook, &s};
  Json rep = replyOf(handle(g, R"({"type":"event","seq":1,"event":"PRESUSPEND","release":true})"));
  EXPECT_EQ(rep["result"], "done");
  EXPECT_EQ(rep["data"], Json({{"released", 1}}));
  // The second stage, after the group's barrier: each reply has only its own event's data.
  rep = replyOf(handle(g, R"({"type":"event","seq":2,"event":"PRECHECKPOINT","release":true})"));
  EXPECT_EQ(rep["result"], "done");
  EXPECT_EQ(rep["data"], Json({{"released", true}}));
  rep = replyOf(handle(g, R"({"type":"event","seq":3,"event":"RESUME","connect_follows":true})"));
  EXPECT_EQ(rep["data"], Json({{"qpn", 21}}));
  // The plain RESUME after CONNECT may not publish; nothing carries over.
  EXPECT_FALSE(replyOf(handle(g, eventLine(4, "RESUME"))).contains("data"));
  EXPECT_EQ(rcs, (std::vector<int>{0, 0, 0, -EPERM}));
  // A failed PRESUSPEND or PRECHECKPOINT carries what it published too, with its reason;
  // so does not_mine.
  s.result = VMCKPT_FAILED;
  rep = replyOf(handle(g, R"({"type":"event","seq":5,"event":"PRESUSPEND","release":true})"));
  EXPECT_EQ(rep["result"], "failed");
  EXPECT_EQ(rep["data"], Json({{"released", 1}}));
  rep = replyOf(handle(g, R"({"type":"event","seq":6,"event":"PRECHECKPOINT","release":true})"));
  EXPECT_EQ(rep["result"], "failed");
  EXPECT_EQ(rep["data"], Json({{"released", true}}));
  s.result = VMCKPT_NOT_MINE;
  rep = replyOf(handle(g, R"({"type":"event","seq":7,"event":"RESUME","connect_follows":true})"));
  EXPECT_EQ(rep["result"], "not_mine");
  EXPECT_EQ(rep["data"], Json({{"qpn", 21}}));
  // The same bound as in RESTART.
  std::string overLimit = R"({"k":")" + std::string(VMCKPT_PUBLISH_MAX - 7, 'x') + R"("})";
  s.body = [&](vmckpt_event) { rcs.push_back(vmckpt_publish(overLimit.c_str())); };
  s.result = VMCKPT_DONE;
  EXPECT_FALSE(replyOf(handle(g, R"({"type":"event","seq":8,"event":"PRESUSPEND","release":true})")).contains("data"));
  EXPECT_EQ(rcs.back(), -EINVAL);
  EXPECT_FALSE(
      replyOf(handle(g, R"({"type":"event","seq":9,"event":"PRECHECKPOINT","release":true})")).contains("data"));
  EXPECT_EQ(rcs.back(), -EINVAL);
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
  EXPECT_EQ(replyOf(handle(g, eventLine(5, "CONNECT")))["result"], "done");  // default
}

class Rejoining : public Plugin {
 public:
  EventResult onPresuspend() override { return noteRelease(R"({"drained":1})"); }
  EventResult onPrecheckpoint() override { return noteRelease(R"({"released":true})"); }
  EventResult onResume() override {
    follows = connectFollows();
    return EventResult::done();
  }
  EventResult onRestart(std::string_view) override {
    follows = connectFollows();
    publishRc = publish(R"({"qpn":42})");
    return EventResult::done();
  }
  EventResult onConnect(std::string_view peersJson) override {
    peers = std::string(peersJson);
    return peers == "[]" ? EventResult::failed("no peers") : EventResult::done();
  }
  bool follows = false, released = false;
  int publishRc = 1;
  std::string peers;

 private:
  EventResult noteRelease(const char* json) {
    released = releaseRequested();
    publishRc = publish(json);
    return EventResult::done();
  }
};

TEST(PluginBase, OnConnectAndTheHelpers) {
  Rejoining p;
  plugin::Registration g{"ib", &Plugin::hook, &p};
  Json rep = replyOf(handle(g, R"({"type":"event","seq":1,"event":"RESTART","connect_follows":true})"));
  EXPECT_TRUE(p.follows);
  EXPECT_EQ(p.publishRc, 0);
  EXPECT_EQ(rep["data"], Json({{"qpn", 42}}));
  EXPECT_EQ(replyOf(handle(g, R"({"type":"event","seq":2,"event":"CONNECT","peers":[{"qpn":42}]})"))["result"],
            "done");
  EXPECT_EQ(p.peers, R"([{"qpn":42}])");
  Json f = replyOf(handle(g, eventLine(3, "CONNECT")));
  EXPECT_EQ(f["result"], "failed");
  EXPECT_EQ(f["reason"], "no peers");
  EXPECT_EQ(p.peers, "[]");

  // Group snapshot: release in PRESUSPEND and PRECHECKPOINT, connect_follows in RESUME.
  rep = replyOf(handle(g, R"({"type":"event","seq":4,"event":"PRESUSPEND","release":true})"));
  EXPECT_TRUE(p.released);
  EXPECT_EQ(p.publishRc, 0);
  EXPECT_EQ(rep["data"], Json({{"drained", 1}}));
  p.released = false;
  rep = replyOf(handle(g, R"({"type":"event","seq":5,"event":"PRECHECKPOINT","release":true})"));
  EXPECT_TRUE(p.released);
  EXPECT_EQ(p.publishRc, 0);
  EXPECT_EQ(rep["data"], Json({{"released", true}}));
  replyOf(handle(g, R"({"type":"event","seq":6,"event":"RESUME","connect_follows":true})"));
  EXPECT_TRUE(p.follows);
  for (const char* plain : {"PRESUSPEND", "PRECHECKPOINT"}) {
    rep = replyOf(handle(g, eventLine(7, plain)));
    EXPECT_FALSE(p.released) << plain;
    EXPECT_EQ(p.publishRc, -EPERM) << plain;
    EXPECT_FALSE(rep.contains("data")) << plain;
  }
  replyOf(handle(g, eventLine(8, "RESUME")));
  EXPECT_FALSE(p.follows);
}

}  // namespace
