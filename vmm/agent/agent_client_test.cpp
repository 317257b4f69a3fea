// The host side of the agent protocol against a scripted fake agent on a socketpair.
#include "vmm/agent/agent_client.hpp"

#include <gtest/gtest.h>
#include <sys/socket.h>

#include <thread>

using namespace vmckpt;
using namespace vmckpt::vmm::agent;
using namespace std::chrono_literals;
using Json = nlohmann::json;

namespace {

class FakeAgent {
 public:
  FakeAgent() {
    int sv[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    host_.reset(sv[0]);
    guest_.reset(sv[1]);
  }
  ~FakeAgent() {
    if (t_.joinable()) t_.join();
  }
  UniqueFd hostEnd() { return std::move(host_); }
  void run(std::function<void(FakeAgent&)> f) {
    t_ = std::thread([this, f] { f(*this); });
  }
  void send(const std::string& s) {
    size_t off = 0;
    while (off < s.size()) {
      ssize_t n = ::send(guest_.get(), s.data() + off, s.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return;
      off += static_cast<size_t>(n);
    }
  }
  // The next non-empty request line from the host.
  Json request() {
    for (;;) {
      auto nl = buf_.find('\n');
      if (nl != std::string::npos) {
        std::string line = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        if (line.empty()) continue;
        return Json::parse(line);
      }
      char b[4096];
      ssize_t n = ::recv(guest_.get(), b, sizeof b, 0);
      if (n <= 0) return Json();
      buf_.append(b, static_cast<size_t>(n));
    }
  }
  void reply(const Json& req, const Json& result) {
    send(Json({{"id", req["id"]}, {"ok", true}, {"result", result}}).dump() + "\n");
  }
  // Answers the host's sync, after `before` has been sent.
  void sync(const std::string& before = "") {
    Json req = request();
    EXPECT_EQ(req["cmd"], "sync");
    send(before);
    reply(req, {{"token", req["args"]["token"]}});
  }

 private:
  UniqueFd host_, guest_;
  std::string buf_;
  std::thread t_;
};

}  // namespace

TEST(AgentProtocol, ParsesRepliesAndRejectsTheRest) {
  auto ok = parseAgentLine(R"({"id": 4, "ok": true, "result": {"version": "0.1.0"}, "extra": 1})");
  ASSERT_TRUE(ok.valid);
  EXPECT_EQ(*ok.reply.id, 4u);
  EXPECT_EQ(ok.reply.result["version"], "0.1.0");
  auto err = parseAgentLine(R"({"id": null, "ok": false, "error": {"code": "parse", "message": "bad\u001b[2Jline"}})");
  ASSERT_TRUE(err.valid);
  EXPECT_FALSE(err.reply.id);
  EXPECT_EQ(err.reply.errorMessage, "bad?[2Jline");  // no terminal escapes from the guest
  for (const char* bad : {"", "nope", "[1,2]", R"({"ok": true})", R"({"id": -3, "ok": true})", R"({"id": 1})",
                          R"({"id": 1, "ok": true, "result": 5})", R"({"id": 1, "ok": false})", R"({"id": "x", "ok": true})"})
    EXPECT_FALSE(parseAgentLine(bad).valid) << bad;
  EXPECT_FALSE(parseAgentLine(std::string(kMaxLineBytes, ' ')).valid);
}

TEST(AgentProtocol, SplitterSkipsOverlongLinesAndResumes) {
  LineSplitter s;
  s.feed("ab");
  EXPECT_FALSE(s.next());
  s.feed("c\r\nde");
  EXPECT_EQ(*s.next(), "abc");
  EXPECT_FALSE(s.next());
  std::string huge(kMaxLineBytes + 10, 'x');
  s.feed(huge.substr(0, 40000));
  EXPECT_FALSE(s.next());
  s.feed(huge.substr(40000));
  EXPECT_FALSE(s.next());
  s.feed("\nok\n");
  EXPECT_EQ(*s.next(), "ok");
  EXPECT_EQ(s.takeOverlong(), 1u);
}

TEST(AgentClient, ResyncDropsStaleLinesThenCalls) {
  FakeAgent a;
  a.run([](FakeAgent& f) {
    // Junk from before this connection: a partial line, an old reply, garbage.
    f.sync("{\"id\": 99, \"ok\": tr\n{\"id\": 1, \"ok\": true, \"result\": {\"token\": \"old\"}}\nnot json\n");
    Json req = f.request();
    EXPECT_EQ(req["cmd"], "ping");
    f.reply(req, {{"version", "0.1.0"}, {"api_version", 1}});
  });
  auto c = Client::handshake(a.hostEnd(), Deadline::in(2s));
  ASSERT_TRUE(c) << c.error().message();
  auto r = c->call("ping", Json::object(), Deadline::in(2s));
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ((*r)["api_version"], 1);
}

TEST(AgentClient, AgentErrorsAreReported) {
  FakeAgent a;
  a.run([](FakeAgent& f) {
    f.sync();
    Json req = f.request();
    f.send(Json({{"id", req["id"]}, {"ok", false}, {"error", {{"code", "plugin_failed"}, {"message", "ib (pid 7): drain"}}}})
               .dump() +
           "\n");
  });
  auto c = Client::handshake(a.hostEnd(), Deadline::in(2s));
  ASSERT_TRUE(c);
  auto r = c->call("quiesce", {{"deadline_ms", 100}}, Deadline::in(2s));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::processFailed);
  EXPECT_EQ(r.error().message(), "agent quiesce: plugin_failed: ib (pid 7): drain");
}

TEST(AgentClient, InvalidJsonUnknownIdsAndOverlongLinesAreErrors) {
  for (std::string junk : {std::string("{not json\n"), std::string("{\"id\": 12345, \"ok\": true}\n"),
                           std::string(kMaxLineBytes + 5, 'j') + "\n"}) {
    FakeAgent a;
    a.run([junk](FakeAgent& f) {
      f.sync();
      (void)f.request();
      f.send(junk);
    });
    auto c = Client::handshake(a.hostEnd(), Deadline::in(2s));
    ASSERT_TRUE(c);
    auto r = c->call("ping", Json::object(), Deadline::in(2s));
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code(), Errc::protocol) << r.error().message();
  }
}

TEST(AgentClient, FloodingAndStallingAgentsAreCutOff) {
  FakeAgent flood;
  flood.run([](FakeAgent& f) {
    (void)f.request();  // sync, never answered: stale lines forever
    std::string spam;
    for (int i = 0; i < 2000; ++i) spam += "{\"id\": 1, \"ok\": true}\n";
    f.send(spam);
  });
  auto c = Client::handshake(flood.hostEnd(), Deadline::in(5s));
  ASSERT_FALSE(c);
  EXPECT_NE(c.error().message().find("flooded"), std::string::npos) << c.error().message();

  FakeAgent stall;
  stall.run([](FakeAgent& f) {
    f.sync();
    (void)f.request();  // and never answer
  });
  auto c2 = Client::handshake(stall.hostEnd(), Deadline::in(2s));
  ASSERT_TRUE(c2);
  auto t0 = std::chrono::steady_clock::now();
  auto r = c2->call("quiesce", Json::object(), Deadline::in(300ms));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::timeout);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);

  FakeAgent silent;  // no agent in the guest at all
  auto c3 = Client::handshake(silent.hostEnd(), Deadline::in(200ms));
  ASSERT_FALSE(c3);
  EXPECT_EQ(c3.error().code(), Errc::timeout);
}
