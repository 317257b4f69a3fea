// Unit tests of the agent's host request parsing and reply lines (no I/O).
#include "host_request.hpp"

#include <gtest/gtest.h>

using namespace vmckpt::agent;
using vmckpt::wire::LineBuffer;

namespace {

auto parse(const std::string& text) { return parseHostItem({LineBuffer::Kind::line, text}); }

Json replyJson(const std::string& line) {
  EXPECT_EQ(line.back(), '\n');
  return Json::parse(line);
}

TEST(HostRequest, BlankLinesAreResyncAndGetNoReply) {
  for (const char* s : {"", " ", "\t \r"}) {
    auto r = parse(s);
    ASSERT_TRUE(r.has_value()) << s;
    EXPECT_FALSE(r->has_value()) << s;
  }
}

TEST(HostRequest, ParsesEveryCommand) {
  auto r = parse(R"({"id": 1, "cmd": "sync", "args": {"token": "0123456789abcdef"}})");
  ASSERT_TRUE(r && *r);
  EXPECT_EQ((*r)->cmd, Command::sync);
  EXPECT_EQ((*r)->token, "0123456789abcdef");

  r = parse(R"({"id": 17, "cmd": "quiesce", "args": {"deadline_ms": 5000}, "x-future": 1})");
  ASSERT_TRUE(r && *r);
  EXPECT_EQ((*r)->id, 17u);
  EXPECT_EQ((*r)->cmd, Command::quiesce);
  EXPECT_EQ((*r)->deadline.count(), 5000);

  r = parse(R"({"id": 2, "cmd": "restored", "args": {"device_map": {"mlx5_0": "rxe0"}}})");
  ASSERT_TRUE(r && *r);
  EXPECT_EQ((*r)->deviceMap, Json({{"mlx5_0", "rxe0"}}));

  r = parse(R"({"id": 3, "cmd": "restored"})");
  ASSERT_TRUE(r && *r);
  EXPECT_EQ((*r)->deviceMap, Json::object());
  EXPECT_EQ((*r)->deadline.count(), 0);

  r = parse(R"({"id": 3, "cmd": "thaw", "args": {"deadline_ms": 2500}})");
  ASSERT_TRUE(r && *r);
  EXPECT_EQ((*r)->deadline.count(), 2500);

  r = parse(R"({"id": 5, "cmd": "restored", "args": {"connect_follows": true}})");
  ASSERT_TRUE(r && *r);
  EXPECT_TRUE((*r)->connectFollows);
  r = parse(R"({"id": 5, "cmd": "restored", "args": {"connect_follows": false}})");
  ASSERT_TRUE(r && *r);
  EXPECT_FALSE((*r)->connectFollows);
  EXPECT_FALSE((*parse(R"({"id": 5, "cmd": "restored"})"))->connectFollows);

  // Group snapshot: quiesce with release, thaw with connect_follows; false when absent.
  r = parse(R"({"id": 8, "cmd": "quiesce", "args": {"deadline_ms": 5000, "release": true}})");
  ASSERT_TRUE(r && *r);
  EXPECT_TRUE((*r)->release);
  EXPECT_FALSE((*r)->connectFollows);
  r = parse(R"({"id": 8, "cmd": "quiesce", "args": {"deadline_ms": 5000, "release": false}})");
  ASSERT_TRUE(r && *r);
  EXPECT_FALSE((*r)->release);
  EXPECT_FALSE((*parse(R"({"id": 8, "cmd": "quiesce", "args": {"deadline_ms": 5000}})"))->release);
  // The second stage of a quiesce with release: a command of its own, its deadline required.
  r = parse(R"({"id": 10, "cmd": "release", "args": {"deadline_ms": 3000}})");
  ASSERT_TRUE(r && *r);
  EXPECT_EQ((*r)->cmd, Command::release);
  EXPECT_EQ(commandName((*r)->cmd), "release");
  EXPECT_EQ((*r)->deadline.count(), 3000);
  EXPECT_FALSE((*r)->release);  // the quiesce flag; release needs none
  r = parse(R"({"id": 9, "cmd": "thaw", "args": {"connect_follows": true}})");
  ASSERT_TRUE(r && *r);
  EXPECT_TRUE((*r)->connectFollows);
  EXPECT_FALSE((*r)->release);
  EXPECT_FALSE((*parse(R"({"id": 9, "cmd": "thaw"})"))->connectFollows);
  EXPECT_FALSE((*parse(R"({"id": 9, "cmd": "thaw", "args": {"connect_follows": null}})"))->connectFollows);

  r = parse(R"({"id": 6, "cmd": "connect", "args": {"peers": {"ib": [{"qpn": 17}, {"qpn": 18}], "gl": []},
                                                   "deadline_ms": 700}})");
  ASSERT_TRUE(r && *r);
  EXPECT_EQ((*r)->cmd, Command::connect);
  EXPECT_EQ((*r)->peers, Json::parse(R"({"ib": [{"qpn": 17}, {"qpn": 18}], "gl": []})"));
  EXPECT_EQ((*r)->deadline.count(), 700);
  r = parse(R"({"id": 6, "cmd": "connect", "args": {"peers": {}}})");
  ASSERT_TRUE(r && *r);
  EXPECT_EQ((*r)->peers, Json::object());
  EXPECT_EQ((*r)->deadline.count(), 0);

  for (auto [text, cmd] : {std::pair{"ping", Command::ping}, {"info", Command::info},
                           {"thaw", Command::thaw}, {"status", Command::status}}) {
    r = parse(std::string(R"({"id": 4, "cmd": ")") + text + "\"}");
    ASSERT_TRUE(r && *r) << text;
    EXPECT_EQ((*r)->cmd, cmd);
  }
}

struct Bad {
  const char* line;
  ErrorCode code;
  bool hasId;
};

TEST(HostRequest, RejectsWithTheRightCode) {
  const Bad cases[] = {
      {"not json", ErrorCode::parse, false},
      {"[1,2]", ErrorCode::parse, false},
      {R"({"cmd": "ping"})", ErrorCode::parse, false},
      {R"({"id": -1, "cmd": "ping"})", ErrorCode::parse, false},
      {R"({"id": "7", "cmd": "ping"})", ErrorCode::parse, false},
      {R"({"id": 7})", ErrorCode::parse, true},
      {R"({"id": 7, "cmd": 3})", ErrorCode::parse, true},
      {R"({"id": 7, "cmd": "reboot"})", ErrorCode::unknownCommand, true},
      {R"({"id": 7, "cmd": "ping", "args": [1]})", ErrorCode::badArgs, true},
      {R"({"id": 7, "cmd": "sync"})", ErrorCode::badArgs, true},
      {R"({"id": 7, "cmd": "sync", "args": {"token": 5}})", ErrorCode::badArgs, true},
      {R"({"id": 7, "cmd": "quiesce"})", ErrorCode::badArgs, true},
      {R"({"id": 7, "cmd": "quiesce", "args": {"deadline_ms": 0}})", ErrorCode::badArgs, true},
      {R"({"id": 7, "cmd": "quiesce", "args": {"deadline_ms": -5}})", ErrorCode::badArgs, true},
      {R"({"id": 7, "cmd": "quiesce", "args": {"deadline_ms": 600001}})", ErrorCode::badArgs, true},
      {R"({"id": 7, "cmd": "quiesce", "args": {"deadline_ms": 1.5}})", ErrorCode::badArgs, true},
      {R"({"id": 7, "cmd": "quiesce", "args": {"deadline_ms": "100"}})", ErrorCode::badArgs, true},
      {R"({"id": 7, "cmd": "restored", "args": {"device_map": []}})", ErrorCode::badArgs, true},
      {R"({"id": 7, "cmd": "restored", "args": {"deadline_ms": 0}})", ErrorCode::badArgs, true},
      {R"({"id": 7, "cmd": "thaw", "args": {"deadline_ms": "5"}})", ErrorCode::badArgs, true},
      {R"({"id": 7, "cmd": "restored", "args": {"connect_follows": 1}})", ErrorCode::badArgs, true},
      {R"({"id": 7, "cmd": "restored", "args": {"connect_follows": "true"}})", ErrorCode::badArgs, true},
      {R"({"id": 7, "cmd": "thaw", "args": {"connect_follows": 1}})", ErrorCode::badArgs, true},
      {R"({"id": 7, "cmd": "thaw", "args": {"connect_follows": {}}})", ErrorCode::badArgs, true},
      {R"({"id": 7, "cmd": "quiesce", "args": {"deadline_ms": 5000, "release": 1}})", ErrorCode::badArgs, true},
      {R"({"id": 7, "cmd": "quiesce", "args": {"deadline_ms": 5000, "release": "true"}})", ErrorCode::badArgs, true},
      {R"({"id": 7, "cmd": "release"})", ErrorCode::badArgs, true},
      {R"({"id": 7, "cmd": "release", "args": {}})", ErrorCode::badArgs, true},
      {R"({"id": 7, "cmd": "release", "args": {"deadline_ms": null}})", ErrorCode::badArgs, true},
      {R"({"id": 7, "cmd": "release", "args": {"deadline_ms": 0}})", ErrorCode::badArgs, true},
      {R"({"id": 7, "cmd": "release", "args": {"deadline_ms": 600001}})", ErrorCode::badArgs, true},
      {R"({"id": 7, "cmd": "release", "args": {"deadline_ms": "100"}})", ErrorCode::badArgs, true},
      {R"({"id": 7, "cmd": "release", "args": [5000]})", ErrorCode::badArgs, true},
      {R"({"id": 7, "cmd": "connect"})", ErrorCode::badArgs, true},
      {R"({"id": 7, "cmd": "connect", "args": {}})", ErrorCode::badArgs, true},
      {R"({"id": 7, "cmd": "connect", "args": {"peers": null}})", ErrorCode::badArgs, true},
      {R"({"id": 7, "cmd": "connect", "args": {"peers": []}})", ErrorCode::badArgs, true},
      {R"({"id": 7, "cmd": "connect", "args": {"peers": {"ib": {"qpn": 1}}}})", ErrorCode::badArgs, true},
      {R"({"id": 7, "cmd": "connect", "args": {"peers": {"ib": [], "gl": "x"}}})", ErrorCode::badArgs, true},
      {R"({"id": 7, "cmd": "connect", "args": {"peers": {}, "deadline_ms": 0}})", ErrorCode::badArgs, true},
      {R"({"id": 7, "cmd": "connect", "args": {"peers": {}, "deadline_ms": 600001}})", ErrorCode::badArgs, true},
  };
  for (const auto& c : cases) {
    auto r = parse(c.line);
    ASSERT_FALSE(r.has_value()) << c.line;
    EXPECT_EQ(r.error().code, c.code) << c.line;
    EXPECT_EQ(r.error().id.has_value(), c.hasId) << c.line;
    Json j = replyJson(errorReply(r.error()));
    EXPECT_EQ(j["ok"], false);
    EXPECT_EQ(j["error"]["code"], errorCodeName(c.code));
    if (!c.hasId) EXPECT_TRUE(j["id"].is_null()) << c.line;
    else EXPECT_EQ(j["id"], 7);
  }
  // The same one-line message as for restored's connect_follows.
  EXPECT_EQ(parse(R"({"id": 7, "cmd": "quiesce", "args": {"deadline_ms": 5000, "release": 1}})").error().message,
            "release is not a boolean");
  EXPECT_EQ(parse(R"({"id": 7, "cmd": "thaw", "args": {"connect_follows": 1}})").error().message,
            "connect_follows is not a boolean");
  // release says its own name, as quiesce does.
  EXPECT_EQ(parse(R"({"id": 7, "cmd": "release"})").error().message,
            "release needs deadline_ms, an integer 1..600000");
  EXPECT_EQ(parse(R"({"id": 7, "cmd": "quiesce", "args": {}})").error().message,
            "quiesce needs deadline_ms, an integer 1..600000");
  EXPECT_EQ(parse(R"({"id": 7, "cmd": "release", "args": {"deadline_ms": 0}})").error().message,
            "deadline_ms must be 1..600000");
  // The extremes of the deadline are accepted.
  for (const char* cmd : {"quiesce", "release"})
    for (int ms : {1, 600000})
      EXPECT_TRUE(parse(R"({"id": 7, "cmd": ")" + std::string(cmd) + R"(", "args": {"deadline_ms": )" +
                        std::to_string(ms) + "}}"))
          << cmd << " " << ms;
}

TEST(HostRequest, DeviceMapMustLeaveRoomForTheRestartEvent) {
  std::string big(kMaxDeviceMapBytes, 'm');
  auto r = parse(R"({"id": 7, "cmd": "restored", "args": {"device_map": {"k": ")" + big + "\"}}}");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, ErrorCode::badArgs);
  std::string fits(kMaxDeviceMapBytes - 100, 'm');
  r = parse(R"({"id": 7, "cmd": "restored", "args": {"device_map": {"k": ")" + fits + "\"}}}");
  ASSERT_TRUE(r && *r);
  std::string event = vmckpt::wire::encodeEvent(1 << 30, vmckpt::wire::EventKind::restart, &(*r)->deviceMap);
  EXPECT_LE(event.size(), vmckpt::wire::kMaxLineBytes);
}

TEST(HostRequest, PeersMustLeaveRoomForTheConnectEvent) {
  std::string big(kMaxDeviceMapBytes, 'p');
  auto r = parse(R"({"id": 7, "cmd": "connect", "args": {"peers": {"ib": [")" + big + "\"]}}}");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, ErrorCode::badArgs);
  EXPECT_NE(r.error().message.find("peers.ib"), std::string::npos) << r.error().message;
  std::string fits(kMaxDeviceMapBytes - 100, 'p');
  r = parse(R"({"id": 7, "cmd": "connect", "args": {"peers": {"ib": [")" + fits + "\"]}}}");
  ASSERT_TRUE(r && *r);
  vmckpt::wire::EventPayload payload;
  payload.peers = &(*r)->peers["ib"];
  std::string event = vmckpt::wire::encodeEvent(1 << 30, vmckpt::wire::EventKind::connect, payload);
  EXPECT_LE(event.size(), vmckpt::wire::kMaxLineBytes);
}

TEST(HostRequest, OversizedLineIsAParseErrorWithNullId) {
  auto r = parseHostItem({LineBuffer::Kind::oversized, {}});
  ASSERT_FALSE(r.has_value());
  Json j = replyJson(errorReply(r.error()));
  EXPECT_TRUE(j["id"].is_null());
  EXPECT_EQ(j["error"]["code"], "parse");
}

TEST(HostRequest, Replies) {
  Json ok = replyJson(okReply(17, {{"token", "ab"}}));
  EXPECT_EQ(ok, Json({{"id", 17}, {"ok", true}, {"result", {{"token", "ab"}}}}));
  Json err = replyJson(errorReply(17, ErrorCode::pluginFailed, "plugin ib (pid 3) failed\nPRESUSPEND"));
  EXPECT_EQ(err["error"]["code"], "plugin_failed");
  EXPECT_EQ(err["error"]["message"], "plugin ib (pid 3) failed PRESUSPEND");
  // A result that would not fit the line limit becomes an internal error.
  Json big = replyJson(okReply(1, {{"x", std::string(vmckpt::wire::kMaxLineBytes, 'a')}}));
  EXPECT_EQ(big["error"]["code"], "internal");
  // okReplyIfFits says how long the line would have been.
  auto fits = okReplyIfFits(1, {{"x", "a"}});
  ASSERT_TRUE(fits);
  EXPECT_EQ(Json::parse(*fits)["result"]["x"], "a");
  auto over = okReplyIfFits(1, {{"x", std::string(vmckpt::wire::kMaxLineBytes, 'a')}});
  ASSERT_FALSE(over);
  EXPECT_GT(over.error(), vmckpt::wire::kMaxLineBytes);
}

}  // namespace
