// Unit tests of the QMP client against a scripted fake QMP server on a socketpair.
// (The client against real QEMU is covered by tests/integration.)
#include "qmp/qmp_client.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <thread>

using namespace vmckpt;
using namespace std::chrono_literals;
using qmp::Json;

namespace {

const char* kGreeting =
    R"({"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian 1:7.2"},)"
    R"( "capabilities": ["oob"], "x-future-key": 1}})";

// The server side of a socketpair, driven by a test script in its own thread.
class FakeServer {
 public:
  FakeServer() {
    int sv[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    client_.reset(sv[0]);
    server_.reset(sv[1]);
  }
  ~FakeServer() {
    if (thread_.joinable()) thread_.join();
  }
  UniqueFd takeClientEnd() { return std::move(client_); }

  void run(std::function<void(FakeServer&)> script) {
    thread_ = std::thread([this, script] { script(*this); });
  }
  void join() {
    if (thread_.joinable()) thread_.join();
  }

  void send(const std::string& raw) {
    size_t off = 0;
    while (off < raw.size()) {
      ssize_t n = ::send(server_.get(), raw.data() + off, raw.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return;
      off += static_cast<size_t>(n);
    }
  }
  void sendLine(const std::string& json) { send(json + "\r\n"); }

  // Reads one request line; collects fds passed with it.
  Json readRequest(std::vector<int>* fds = nullptr) {
    for (;;) {
      size_t nl = buf_.find('\n');
      if (nl != std::string::npos) {
        std::string line = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        return Json::parse(line);
      }
      char data[4096];
      char control[CMSG_SPACE(sizeof(int) * 8)];
      iovec iov{data, sizeof data};
      msghdr msg{};
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      msg.msg_control = control;
      msg.msg_controllen = sizeof control;
      ssize_t n = ::recvmsg(server_.get(), &msg, 0);
      if (n <= 0) return Json();
      for (cmsghdr* cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
        if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
          size_t count = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
          for (size_t i = 0; i < count; ++i) {
            int fd;
            std::memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof fd);
            if (fds) fds->push_back(fd);
            else ::close(fd);
          }
        }
      }
      buf_.append(data, static_cast<size_t>(n));
    }
  }

  // Greeting plus the capabilities exchange.
  void handshake() {
    sendLine(kGreeting);
    Json req = readRequest();
    EXPECT_EQ(req["execute"], "qmp_capabilities");
    sendLine(Json({{"return", Json::object()}, {"id", req["id"]}}).dump());
  }

  void close() { server_.reset(); }

 private:
  UniqueFd client_, server_;
  std::string buf_;
  std::thread thread_;
};

Json event(const std::string& name, Json data = Json::object(), long long sec = 100, long long usec = 5) {
  return {{"event", name}, {"data", data}, {"timestamp", {{"seconds", sec}, {"microseconds", usec}}}};
}

}  // namespace

TEST(QmpClient, GreetingAndCapabilities) {
  FakeServer srv;
  srv.run([](FakeServer& s) {
    s.handshake();
    Json req = s.readRequest();
    EXPECT_EQ(req["execute"], "query-status");
    EXPECT_FALSE(req.contains("arguments"));
    s.sendLine(Json({{"return", {{"status", "running"}, {"running", true}, {"new-key", 3}}}, {"id", req["id"]}}).dump());
  });
  auto c = qmp::Client::handshake(srv.takeClientEnd(), Deadline::in(2s));
  ASSERT_TRUE(c) << c.error().message();
  EXPECT_EQ(c->greeting().major, 7);
  EXPECT_EQ(c->greeting().minor, 2);
  EXPECT_EQ(c->greeting().micro, 22);
  EXPECT_EQ(c->greeting().package, "Debian 1:7.2");
  ASSERT_EQ(c->greeting().capabilities.size(), 1u);
  auto r = c->execute("query-status");
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ((*r)["status"], "running");
}

TEST(QmpClient, ArgumentsAreSent) {
  FakeServer srv;
  srv.run([](FakeServer& s) {
    s.handshake();
    Json req = s.readRequest();
    EXPECT_EQ(req["arguments"]["device"], "disk0");
    s.sendLine(Json({{"return", Json::object()}, {"id", req["id"]}}).dump());
  });
  auto c = qmp::Client::handshake(srv.takeClientEnd(), Deadline::in(2s));
  ASSERT_TRUE(c);
  EXPECT_TRUE(c->execute("eject", {{"device", "disk0"}}));
}

TEST(QmpClient, EventsInterleavedWithRepliesAreQueuedInOrder) {
  FakeServer srv;
  srv.run([](FakeServer& s) {
    s.sendLine(kGreeting);
    Json caps = s.readRequest();
    s.sendLine(event("RTC_CHANGE").dump());  // an event even before the first reply
    s.sendLine(Json({{"return", Json::object()}, {"id", caps["id"]}}).dump());
    Json req = s.readRequest();
    EXPECT_EQ(req["execute"], "stop");
    // Events between the request and its reply, one of them split across writes.
    std::string stop = event("STOP", Json::object(), 1700000000, 123456).dump();
    s.send(stop.substr(0, 10));
    std::this_thread::sleep_for(20ms);
    s.send(stop.substr(10) + "\r\n");
    s.sendLine(Json({{"return", Json::object()}, {"id", req["id"]}}).dump());
    s.sendLine(event("RESUME").dump());
  });
  auto c = qmp::Client::handshake(srv.takeClientEnd(), Deadline::in(2s));
  ASSERT_TRUE(c) << c.error().message();
  ASSERT_TRUE(c->execute("stop"));
  auto stop = c->waitEvent("STOP", Deadline::in(1s));
  ASSERT_TRUE(stop) << stop.error().message();
  EXPECT_EQ(stop->timestampUs, 1700000000LL * 1000000 + 123456);
  auto resume = c->waitEvent("RESUME", Deadline::in(1s));
  ASSERT_TRUE(resume) << resume.error().message();
  srv.join();
  auto rest = c->takeEvents();
  ASSERT_EQ(rest.size(), 1u);
  EXPECT_EQ(rest[0].name, "RTC_CHANGE");
}

TEST(QmpClient, RepliesWithUnknownIdsAreDropped) {
  FakeServer srv;
  srv.run([](FakeServer& s) {
    s.handshake();
    Json req = s.readRequest();
    s.sendLine(R"({"return": {"stale": true}, "id": "vmckpt-999"})");
    s.sendLine(R"({"return": {"stale": true}, "id": 17})");
    s.sendLine(Json({{"return", {{"fresh", true}}}, {"id", req["id"]}}).dump());
  });
  auto c = qmp::Client::handshake(srv.takeClientEnd(), Deadline::in(2s));
  ASSERT_TRUE(c);
  auto r = c->execute("query-name");
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_TRUE((*r)["fresh"].get<bool>());
}

TEST(QmpClient, ErrorRepliesAreTypedErrors) {
  FakeServer srv;
  srv.run([](FakeServer& s) {
    s.handshake();
    Json req = s.readRequest();
    s.sendLine(Json({{"error", {{"class", "CommandNotFound"}, {"desc", "The command frobnicate has not been found"}}},
                     {"id", req["id"]}})
                   .dump());
  });
  auto c = qmp::Client::handshake(srv.takeClientEnd(), Deadline::in(2s));
  ASSERT_TRUE(c);
  auto r = c->execute("frobnicate");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::qmp);
  EXPECT_EQ(r.error().qmpClass(), "CommandNotFound");
  EXPECT_EQ(r.error().message(), "qmp frobnicate: The command frobnicate has not been found");
}

TEST(QmpClient, ReplyWithoutIdBelongsToTheCommandInFlight) {
  FakeServer srv;
  srv.run([](FakeServer& s) {
    s.handshake();
    (void)s.readRequest();
    s.sendLine(R"({"error": {"class": "GenericError", "desc": "JSON parse error"}})");
  });
  auto c = qmp::Client::handshake(srv.takeClientEnd(), Deadline::in(2s));
  ASSERT_TRUE(c);
  auto r = c->execute("query-status");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::qmp);
}

TEST(QmpClient, PeerClosingMidReplyIsAnError) {
  FakeServer srv;
  srv.run([](FakeServer& s) {
    s.handshake();
    (void)s.readRequest();
    s.send(R"({"return": {"status": "runn)");
    s.close();
  });
  auto c = qmp::Client::handshake(srv.takeClientEnd(), Deadline::in(2s));
  ASSERT_TRUE(c);
  auto start = std::chrono::steady_clock::now();
  auto r = c->execute("query-status", Json::object(), Deadline::in(5s));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::protocol);
  EXPECT_NE(r.error().message().find("in the middle of a message"), std::string::npos) << r.error().message();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);  // noticed at once, not at the deadline
}

TEST(QmpClient, PeerClosingBeforeGreetingIsAnError) {
  FakeServer srv;
  srv.run([](FakeServer& s) { s.close(); });
  auto c = qmp::Client::handshake(srv.takeClientEnd(), Deadline::in(2s));
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().code(), Errc::protocol);
  EXPECT_NE(c.error().message().find("QMP greeting"), std::string::npos);
}

TEST(QmpClient, SilentPeerHitsTheDeadline) {
  FakeServer srv;
  srv.run([](FakeServer& s) {
    s.handshake();
    (void)s.readRequest();  // ... and never answer
  });
  auto c = qmp::Client::handshake(srv.takeClientEnd(), Deadline::in(2s));
  ASSERT_TRUE(c);
  auto start = std::chrono::steady_clock::now();
  auto r = c->execute("query-status", Json::object(), Deadline::in(300ms));
  auto took = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::timeout);
  EXPECT_GE(took, 290ms);
  EXPECT_LT(took, 2s);
  srv.close();
}

TEST(QmpClient, SilentPeerDuringGreetingHitsTheDeadline) {
  FakeServer srv;  // sends nothing at all
  auto c = qmp::Client::handshake(srv.takeClientEnd(), Deadline::in(200ms));
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().code(), Errc::timeout);
}

TEST(QmpClient, WaitEventHitsTheDeadline) {
  FakeServer srv;
  srv.run([](FakeServer& s) {
    s.handshake();
    s.sendLine(event("RESUME").dump());  // not the one we wait for
  });
  auto c = qmp::Client::handshake(srv.takeClientEnd(), Deadline::in(2s));
  ASSERT_TRUE(c);
  auto e = c->waitEvent("SHUTDOWN", Deadline::in(200ms));
  ASSERT_FALSE(e);
  EXPECT_EQ(e.error().code(), Errc::timeout);
  srv.join();
  auto rest = c->takeEvents();  // the RESUME that arrived meanwhile is kept
  ASSERT_EQ(rest.size(), 1u);
  EXPECT_EQ(rest[0].name, "RESUME");
}

TEST(QmpClient, MalformedMessageIsAProtocolError) {
  FakeServer srv;
  srv.run([](FakeServer& s) {
    s.handshake();
    (void)s.readRequest();
    s.sendLine("{this is not json");
  });
  auto c = qmp::Client::handshake(srv.takeClientEnd(), Deadline::in(2s));
  ASSERT_TRUE(c);
  auto r = c->execute("query-status");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::protocol);
}

TEST(QmpClient, OversizedMessageIsRefused) {
  FakeServer srv;
  srv.run([](FakeServer& s) {
    s.handshake();
    (void)s.readRequest();
    s.send(R"({"return": ")" + std::string(qmp::kMaxMessageBytes + 1024, 'x'));
  });
  auto c = qmp::Client::handshake(srv.takeClientEnd(), Deadline::in(2s));
  ASSERT_TRUE(c);
  auto r = c->execute("query-status", Json::object(), Deadline::in(5s));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::protocol);
  srv.close();
}

TEST(QmpClient, PassesFileDescriptors) {
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  UniqueFd readEnd(p[0]), writeEnd(p[1]);
  FakeServer srv;
  srv.run([](FakeServer& s) {
    s.handshake();
    std::vector<int> fds;
    Json req = s.readRequest(&fds);
    EXPECT_EQ(req["execute"], "getfd");
    EXPECT_EQ(req["arguments"]["fdname"], "devstate");
    ASSERT_EQ(fds.size(), 1u);
    EXPECT_EQ(::write(fds[0], "via-scm", 7), 7);
    ::close(fds[0]);
    s.sendLine(Json({{"return", Json::object()}, {"id", req["id"]}}).dump());
  });
  auto c = qmp::Client::handshake(srv.takeClientEnd(), Deadline::in(2s));
  ASSERT_TRUE(c);
  int fd = writeEnd.get();
  auto r = c->execute("getfd", {{"fdname", "devstate"}}, Deadline::in(2s), std::span<const int>(&fd, 1));
  ASSERT_TRUE(r) << r.error().message();
  writeEnd.reset();
  char buf[16] = {};
  EXPECT_EQ(::read(readEnd.get(), buf, sizeof buf), 7);
  EXPECT_STREQ(buf, "via-scm");
}

TEST(QmpClient, ConnectWaitsForTheSocketToAppear) {
  char dir[] = "/tmp/vmckpt-qmp-test-XXXXXX";
  ASSERT_NE(::mkdtemp(dir), nullptr);
  std::string path = std::string(dir) + "/qmp.sock";
  std::thread server([&] {
    std::this_thread::sleep_for(150ms);
    UniqueFd lfd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strcpy(addr.sun_path, path.c_str());
    ASSERT_EQ(::bind(lfd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    ASSERT_EQ(::listen(lfd.get(), 1), 0);
    UniqueFd conn(::accept4(lfd.get(), nullptr, nullptr, SOCK_CLOEXEC));
    std::string g = std::string(kGreeting) + "\r\n";
    ASSERT_GT(::send(conn.get(), g.data(), g.size(), MSG_NOSIGNAL), 0);
    char buf[512];
    ssize_t n = ::recv(conn.get(), buf, sizeof buf, 0);
    ASSERT_GT(n, 0);
    Json req = Json::parse(std::string(buf, static_cast<size_t>(n)));
    std::string reply = Json({{"return", Json::object()}, {"id", req["id"]}}).dump() + "\r\n";
    ASSERT_GT(::send(conn.get(), reply.data(), reply.size(), MSG_NOSIGNAL), 0);
    std::this_thread::sleep_for(50ms);
  });
  auto c = qmp::Client::connect(path, Deadline::in(3s));
  server.join();
  EXPECT_TRUE(c) << c.error().message();
  ::unlink(path.c_str());
  ::rmdir(dir);
}

TEST(QmpClient, ConnectToMissingSocketTimesOut) {
  auto c = qmp::Client::connect("/nonexistent/vmckpt/qmp.sock", Deadline::in(100ms));
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().code(), Errc::timeout);
}

TEST(QmpClient, ExecuteUntilEventReturnsAtTheEventBeforeTheReply) {
  FakeServer srv;
  std::atomic<bool> replySent{false};
  srv.run([&](FakeServer& s) {
    s.handshake();
    s.sendLine(event("RESUME", Json::object(), 1, 1).dump());  // before the command: not its effect
    Json req = s.readRequest();
    EXPECT_EQ(req["execute"], "cont");
    s.sendLine(event("RESUME", Json::object(), 2, 2).dump());
    std::this_thread::sleep_for(200ms);  // QEMU answering late
    replySent = true;
    s.sendLine(Json({{"return", Json::object()}, {"id", req["id"]}}).dump());
    Json next = s.readRequest();
    s.sendLine(Json({{"return", {{"status", "running"}}}, {"id", next["id"]}}).dump());
  });
  auto c = qmp::Client::handshake(srv.takeClientEnd(), Deadline::in(2s));
  ASSERT_TRUE(c);
  std::this_thread::sleep_for(50ms);
  (void)c->takeEvents();  // the caller's usual reset; the early RESUME may or may not be in it
  auto ev = c->executeUntilEvent("cont", Json::object(), "RESUME", Deadline::in(2s));
  ASSERT_TRUE(ev) << ev.error().message();
  EXPECT_EQ(ev->timestampUs, 2LL * 1000000 + 2);
  EXPECT_FALSE(replySent.load());
  // The late reply to `cont` is dropped as stale by the next command.
  auto st = c->execute("query-status");
  ASSERT_TRUE(st) << st.error().message();
  EXPECT_EQ((*st)["status"], "running");
  srv.join();
}

TEST(QmpClient, ExecuteUntilEventFailsOnAnErrorReply) {
  FakeServer srv;
  srv.run([](FakeServer& s) {
    s.handshake();
    Json req = s.readRequest();
    s.sendLine(Json({{"error", {{"class", "GenericError"}, {"desc", "Migration is not finalized yet"}}}, {"id", req["id"]}})
                   .dump());
  });
  auto c = qmp::Client::handshake(srv.takeClientEnd(), Deadline::in(2s));
  ASSERT_TRUE(c);
  auto ev = c->executeUntilEvent("cont", Json::object(), "RESUME", Deadline::in(2s));
  ASSERT_FALSE(ev);
  EXPECT_EQ(ev.error().code(), Errc::qmp);
  EXPECT_NE(ev.error().message().find("not finalized"), std::string::npos) << ev.error().message();
  srv.join();
}

TEST(QmpClient, ExecuteUntilEventHitsTheDeadline) {
  FakeServer srv;
  srv.run([](FakeServer& s) {
    s.handshake();
    Json req = s.readRequest();
    s.sendLine(Json({{"return", Json::object()}, {"id", req["id"]}}).dump());  // but no event
    std::this_thread::sleep_for(400ms);
  });
  auto c = qmp::Client::handshake(srv.takeClientEnd(), Deadline::in(2s));
  ASSERT_TRUE(c);
  auto ev = c->executeUntilEvent("cont", Json::object(), "RESUME", Deadline::in(150ms));
  ASSERT_FALSE(ev);
  EXPECT_EQ(ev.error().code(), Errc::timeout);
  EXPECT_NE(ev.error().message().find("RESUME"), std::string::npos) << ev.error().message();
  srv.join();
}

// Found by the qmp_reply fuzzer: members of the wrong type made json's value() throw,
// which ended vmckpt (std::terminate). They now read as absent.
TEST(QmpClient, MembersOfTheWrongTypeReadAsAbsent) {
  FakeServer srv;
  srv.run([](FakeServer& s) {
    s.sendLine(R"({"QMP": {"version": {"qemu": {"major": "7", "minor": 2.5, "micro": null}}, "capabilities": []}})");
    Json caps = s.readRequest();
    s.sendLine(Json({{"return", Json::object()}, {"id", caps["id"]}}).dump());
    s.sendLine(R"({"event": "STOP", "timestamp": {"seconds": "soon", "microseconds": [1]}, "data": "not an object"})");
    // Found by the qmp_reply fuzzer: seconds * 10^6 overflowed (UBSan).
    s.sendLine(R"({"event": "RESUME", "timestamp": {"seconds": 9223372036854775807, "microseconds": 999999}})");
  });
  auto c = qmp::Client::handshake(srv.takeClientEnd(), Deadline::in(2s));
  ASSERT_TRUE(c) << c.error().message();
  EXPECT_EQ(c->greeting().major, 0);
  EXPECT_EQ(c->greeting().minor, 0);
  auto stop = c->waitEvent("STOP", Deadline::in(1s));
  ASSERT_TRUE(stop) << stop.error().message();
  EXPECT_EQ(stop->timestampUs, 0);
  EXPECT_EQ(qmp::stringField(stop->data, "status", "none"), "none");
  auto resume = c->waitEvent("RESUME", Deadline::in(1s));
  ASSERT_TRUE(resume) << resume.error().message();
  EXPECT_EQ(resume->timestampUs, 0);
  srv.join();

  EXPECT_EQ(qmp::stringField(Json::parse(R"({"status": 3})"), "status", "x"), "x");
  EXPECT_EQ(qmp::stringField(Json::parse(R"({"status": "running"})"), "status"), "running");
  EXPECT_EQ(qmp::intField(Json::parse(R"({"n": 1.5})"), "n", -1), -1);
  EXPECT_EQ(qmp::intField(Json::parse(R"({"n": 42})"), "n"), 42);
  EXPECT_EQ(qmp::intField(Json::parse(R"([1, 2])"), "n", 7), 7);
}
