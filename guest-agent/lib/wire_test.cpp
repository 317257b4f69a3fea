// Unit tests of the framing and messages shared by vmckpt-agent and libvmckpt.
#include "wire.hpp"

#include <gtest/gtest.h>

using namespace vmckpt::wire;

namespace {

std::vector<LineBuffer::Item> drain(LineBuffer& b) {
  std::vector<LineBuffer::Item> out;
  while (auto i = b.next()) out.push_back(*i);
  return out;
}

TEST(LineBuffer, SplitsLinesAcrossAppendsAndStripsCr) {
  LineBuffer b;
  b.append("{\"a\":1}\r\n{\"b\"");
  b.append(":2}\n\n");
  auto items = drain(b);
  ASSERT_EQ(items.size(), 3u);
  EXPECT_EQ(items[0].text, "{\"a\":1}");
  EXPECT_EQ(items[1].text, "{\"b\":2}");
  EXPECT_EQ(items[2].text, "");
  EXPECT_EQ(b.buffered(), 0u);
}

TEST(LineBuffer, AcceptsALineOfExactlyTheLimit) {
  LineBuffer b;
  b.append(std::string(kMaxLineBytes - 1, 'x') + "\n");
  auto items = drain(b);
  ASSERT_EQ(items.size(), 1u);
  EXPECT_EQ(items[0].kind, LineBuffer::Kind::line);
  EXPECT_EQ(items[0].text.size(), kMaxLineBytes - 1);
}

TEST(LineBuffer, ReportsAnOversizedLineOnceAndRecovers) {
  LineBuffer b;
  b.append(std::string(kMaxLineBytes, 'x'));  // no newline yet: already too long
  auto items = drain(b);
  ASSERT_EQ(items.size(), 1u);
  EXPECT_EQ(items[0].kind, LineBuffer::Kind::oversized);
  b.append(std::string(100000, 'y'));  // still the same line: dropped silently
  EXPECT_TRUE(drain(b).empty());
  b.append("tail\n{\"ok\":1}\n");
  items = drain(b);
  ASSERT_EQ(items.size(), 1u);
  EXPECT_EQ(items[0].text, "{\"ok\":1}");
}

TEST(LineBuffer, OversizedInOneChunkWithNewline) {
  LineBuffer b;
  b.append(std::string(kMaxLineBytes, 'x') + "\nnext\n");
  auto items = drain(b);
  ASSERT_EQ(items.size(), 2u);
  EXPECT_EQ(items[0].kind, LineBuffer::Kind::oversized);
  EXPECT_EQ(items[1].text, "next");
}

TEST(LineBuffer, ClearDropsAPartialLine) {
  LineBuffer b;
  b.append("{\"id\": 1, \"cm");
  b.clear();
  b.append("d\": 2}\n");
  auto items = drain(b);
  ASSERT_EQ(items.size(), 1u);
  EXPECT_EQ(items[0].text, "d\": 2}");
}

TEST(Wire, ParseObject) {
  EXPECT_TRUE(parseObject(R"({"a": [1, {"b": 2}]})").has_value());
  EXPECT_FALSE(parseObject("[1, 2]").has_value());
  EXPECT_FALSE(parseObject("{\"a\": ").has_value());
  EXPECT_FALSE(parseObject("garbage").has_value());
  EXPECT_FALSE(parseObject("{\"s\": \"\xff\"}").has_value());  // not UTF-8
  std::string deep = std::string(100, '[') + std::string(100, ']');
  auto r = parseObject("{\"a\": " + deep + "}");
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().find("nested"), std::string::npos);
  // Brackets inside strings do not count.
  EXPECT_TRUE(parseObject("{\"a\": \"" + std::string(100, '[') + "\"}").has_value());
}

TEST(Wire, ToLineIsOneLineEvenWithBadUtf8) {
  std::string line = toLine({{"reason", std::string("a\nb\xff")}});
  EXPECT_EQ(line.back(), '\n');
  EXPECT_EQ(line.find('\n'), line.size() - 1);
  EXPECT_TRUE(parseObject(line.substr(0, line.size() - 1)).has_value());
}

TEST(Wire, OneLine) {
  EXPECT_EQ(oneLine("a\nb\tc"), "a b c");
  EXPECT_EQ(oneLine(std::string(1000, 'x'), 10), std::string(10, 'x'));
  // Truncation does not split a UTF-8 sequence ("é" is 2 bytes).
  EXPECT_EQ(oneLine("ab\xc3\xa9", 3), "ab");
}

TEST(Wire, PluginNames) {
  EXPECT_TRUE(validPluginName("ib"));
  EXPECT_TRUE(validPluginName("cuda-12.8_x"));
  EXPECT_TRUE(validPluginName(std::string(64, 'a')));
  EXPECT_FALSE(validPluginName(std::string(65, 'a')));
  EXPECT_FALSE(validPluginName(""));
  EXPECT_FALSE(validPluginName("a b"));
  EXPECT_FALSE(validPluginName("a/b"));
}

TEST(Wire, EventNames) {
  for (auto k : {EventKind::presuspend, EventKind::precheckpoint, EventKind::resume, EventKind::restart,
                 EventKind::connect})
    EXPECT_EQ(eventFromName(eventName(k)), k);
  EXPECT_EQ(eventName(EventKind::connect), "CONNECT");
  EXPECT_EQ(eventName(static_cast<EventKind>(6)), "UNKNOWN");
  EXPECT_EQ(eventName(EventKind::precheckpoint), "PRECHECKPOINT");
  EXPECT_FALSE(eventFromName("presuspend").has_value());
}

TEST(Wire, EventRoundTrip) {
  Json map = {{"mlx5_0", "rxe0"}};
  std::string line = encodeEvent(7, EventKind::restart, &map);
  auto msg = parseObject(line.substr(0, line.size() - 1));
  ASSERT_TRUE(msg);
  EXPECT_EQ(messageType(*msg), "event");
  auto ev = decodeEvent(*msg);
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->seq, 7u);
  EXPECT_EQ(ev->event, "RESTART");
  ASSERT_TRUE(ev->deviceMap);
  EXPECT_EQ(*ev->deviceMap, map);

  EXPECT_FALSE(ev->connectFollows);
  EXPECT_FALSE(ev->peers);

  line = encodeEvent(8, EventKind::presuspend, nullptr);
  EXPECT_EQ(line.find("device_map"), std::string::npos);
  EXPECT_EQ(line.find("connect_follows"), std::string::npos);
  EXPECT_EQ(line.find("peers"), std::string::npos);
}

TEST(Wire, ConnectFollowsAndPeersRoundTrip) {
  Json map = Json::object();
  std::string line = encodeEvent(9, EventKind::restart, EventPayload{&map, true, nullptr});
  auto ev = decodeEvent(*parseObject(line.substr(0, line.size() - 1)));
  ASSERT_TRUE(ev);
  EXPECT_TRUE(ev->connectFollows);
  EXPECT_FALSE(ev->peers);

  Json peers = Json::parse(R"([{"qpn":17,"gid":"fe80::1"},{"qpn":18}])");
  line = encodeEvent(10, EventKind::connect, EventPayload{nullptr, false, &peers});
  auto msg = parseObject(line.substr(0, line.size() - 1));
  ASSERT_TRUE(msg);
  EXPECT_EQ((*msg)["event"], "CONNECT");
  ev = decodeEvent(*msg);
  ASSERT_TRUE(ev);
  EXPECT_FALSE(ev->connectFollows);
  EXPECT_FALSE(ev->deviceMap);
  ASSERT_TRUE(ev->peers);
  EXPECT_EQ(*ev->peers, peers);

  EXPECT_FALSE(decodeEvent(*parseObject(R"({"type":"event","seq":1,"event":"CONNECT","peers":{}})")));
  EXPECT_FALSE(decodeEvent(*parseObject(R"({"type":"event","seq":1,"event":"RESTART","connect_follows":1})")));
}

TEST(Wire, ReleaseAndConnectFollowsOnResumeRoundTrip) {
  // release: PRESUSPEND (drain) and PRECHECKPOINT (close) of a group snapshot;
  // connect_follows: its RESUME. Each flag travels alone.
  struct Case {
    EventKind kind;
    bool follows, release;
  };
  for (const Case c : {Case{EventKind::presuspend, false, true}, Case{EventKind::precheckpoint, false, true},
                       Case{EventKind::resume, true, false}}) {
    std::string line = encodeEvent(11, c.kind, EventPayload{nullptr, c.follows, nullptr, c.release});
    auto msg = parseObject(line.substr(0, line.size() - 1));
    ASSERT_TRUE(msg) << line;
    EXPECT_EQ(msg->contains("release"), c.release) << line;
    EXPECT_EQ(msg->contains("connect_follows"), c.follows) << line;
    auto ev = decodeEvent(*msg);
    ASSERT_TRUE(ev) << line;
    EXPECT_EQ(ev->event, eventName(c.kind));
    EXPECT_EQ(ev->release, c.release) << line;
    EXPECT_EQ(ev->connectFollows, c.follows) << line;
  }

  // Only when true; absent and null mean false, anything else is refused.
  EXPECT_EQ(encodeEvent(13, EventKind::presuspend, EventPayload{}).find("release"), std::string::npos);
  EXPECT_EQ(encodeEvent(13, EventKind::precheckpoint, EventPayload{}).find("release"), std::string::npos);
  EXPECT_FALSE(decodeEvent(*parseObject(R"({"type":"event","seq":1,"event":"PRESUSPEND"})"))->release);
  EXPECT_FALSE(decodeEvent(*parseObject(R"({"type":"event","seq":1,"event":"PRESUSPEND","release":null})"))->release);
  EXPECT_FALSE(decodeEvent(*parseObject(R"({"type":"event","seq":1,"event":"PRESUSPEND","release":1})")));
  EXPECT_FALSE(decodeEvent(*parseObject(R"({"type":"event","seq":1,"event":"PRECHECKPOINT","release":"yes"})")));
  EXPECT_FALSE(decodeEvent(*parseObject(R"({"type":"event","seq":1,"event":"RESUME","connect_follows":"yes"})")));
}

TEST(Wire, PublishAllowedOnlyWhereTheHostCollectsData) {
  struct Case {
    EventKind kind;
    bool follows, release, allowed;
  };
  const Case cases[] = {
      {EventKind::restart, false, false, true},
      {EventKind::restart, true, false, true},
      {EventKind::resume, true, false, true},
      {EventKind::resume, false, false, false},
      {EventKind::resume, false, true, false},
      {EventKind::presuspend, false, true, true},
      {EventKind::presuspend, true, false, false},
      // The release stage: the plugin publishes what it closed.
      {EventKind::precheckpoint, false, true, true},
      {EventKind::precheckpoint, true, true, true},
      {EventKind::precheckpoint, true, false, false},
      {EventKind::precheckpoint, false, false, false},
      {EventKind::connect, true, true, false},
  };
  for (const auto& c : cases)
    EXPECT_EQ(publishAllowed(c.kind, c.follows, c.release), c.allowed)
        << eventName(c.kind) << " connect_follows " << c.follows << " release " << c.release;
}

TEST(Wire, ReplyDataRoundTripAndCheck) {
  Json data = {{"qpn", 17}};
  std::string line = encodeReply(4, Outcome::done, {}, &data);
  auto r = decodeReply(*parseObject(line.substr(0, line.size() - 1)));
  ASSERT_TRUE(r);
  ASSERT_TRUE(r->data);
  EXPECT_EQ(*r->data, data);
  EXPECT_EQ(encodeReply(4, Outcome::done, {}).find("data"), std::string::npos);

  // Taken as sent; checkPublished() is what bounds it.
  auto odd = decodeReply(*parseObject(R"({"type":"reply","seq":1,"result":"done","data":[1]})"));
  ASSERT_TRUE(odd && odd->data);
  EXPECT_FALSE(checkPublished(*odd->data));
  EXPECT_EQ(checkPublished(data).value_or(0), 10u);  // {"qpn":17}
  Json big = {{"k", std::string(kMaxPublishBytes - 8, 'x')}};  // {"k":"..."} is 8 + n bytes
  EXPECT_TRUE(checkPublished(big));
  big["k"] = std::string(kMaxPublishBytes - 7, 'x');
  ASSERT_FALSE(checkPublished(big));
  EXPECT_NE(checkPublished(big).error().find("32769 bytes"), std::string::npos);
}

TEST(Wire, ReplyRoundTripAndErrors) {
  std::string line = encodeReply(3, Outcome::failed, "no\ndevice");
  auto r = decodeReply(*parseObject(line.substr(0, line.size() - 1)));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->seq, 3u);
  EXPECT_EQ(r->result, Outcome::failed);
  EXPECT_EQ(r->reason, "no device");

  EXPECT_FALSE(decodeReply(*parseObject(R"({"type":"reply","seq":-1,"result":"done"})")));
  EXPECT_FALSE(decodeReply(*parseObject(R"({"type":"reply","seq":1,"result":"maybe"})")));
  EXPECT_FALSE(decodeReply(*parseObject(R"({"type":"reply","result":"done"})")));
  auto tolerant = decodeReply(*parseObject(R"({"type":"reply","seq":1,"result":"not_mine","x-new":[1]})"));
  ASSERT_TRUE(tolerant);
  EXPECT_EQ(tolerant->result, Outcome::notMine);
}

TEST(Wire, RegisterRoundTrip) {
  std::string line = encodeRegister("ib");
  auto m = decodeRegister(*parseObject(line.substr(0, line.size() - 1)));
  ASSERT_TRUE(m);
  EXPECT_EQ(m->plugin, "ib");
  EXPECT_EQ(m->apiVersion, 2);
  line = encodeRegister("ib", 1);
  EXPECT_EQ(decodeRegister(*parseObject(line.substr(0, line.size() - 1)))->apiVersion, 1);
  EXPECT_FALSE(decodeRegister(*parseObject(R"({"type":"register","plugin":"x","api_version":"1"})")));
  EXPECT_FALSE(decodeRegister(*parseObject(R"({"type":"register","api_version":1})")));
}

}  // namespace
