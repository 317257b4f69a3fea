// Unit tests of libvmckpt's C ABI against a scripted fake agent on a unix socket.
#include <errno.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "common/deadline.hpp"
#include "common/temp_dir.hpp"
#include "common/unique_fd.hpp"
#include "vmckpt/plugin.h"
#include "wire.hpp"

using namespace vmckpt;
using namespace std::chrono_literals;
using wire::Json;

namespace {

// The agent's end: a listening socket and helpers to speak lines on accepted ones.
class FakeAgent {
 public:
  explicit FakeAgent(const std::string& path) : path_(path) {
    listen_.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
    EXPECT_EQ(::bind(listen_.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    EXPECT_EQ(::listen(listen_.get(), 8), 0);
  }

  UniqueFd accept(Deadline d) {
    pollfd p{listen_.get(), POLLIN, 0};
    if (::poll(&p, 1, d.pollTimeoutMs()) != 1) return {};
    return UniqueFd(::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC));
  }

  // Reads one line from fd ("" on EOF or timeout; *eof set on EOF).
  std::string readLine(int fd, Deadline d, bool* eof = nullptr) {
    std::string& buf = bufs_[fd];
    for (;;) {
      if (auto nl = buf.find('\n'); nl != std::string::npos) {
        std::string line = buf.substr(0, nl);
        buf.erase(0, nl + 1);
        return line;
      }
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, d.pollTimeoutMs()) != 1) return {};
      char tmp[4096];
      ssize_t n = ::recv(fd, tmp, sizeof tmp, 0);
      if (n <= 0) {
        if (eof) *eof = true;
        return {};
      }
      buf.append(tmp, static_cast<size_t>(n));
    }
  }

  static void send(int fd, const std::string& data) {
    size_t off = 0;
    while (off < data.size()) {
      ssize_t n = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return;
      off += static_cast<size_t>(n);
    }
  }

  // Accepts a connection, checks its register line and answers registered.
  UniqueFd acceptRegistration(const std::string& plugin, int apiVersion = VMCKPT_PLUGIN_API_VERSION) {
    UniqueFd fd = accept(Deadline::in(5s));
    EXPECT_TRUE(fd.valid());
    if (!fd) return fd;
    Json reg = Json::parse(readLine(fd.get(), Deadline::in(5s)), nullptr, false);
    EXPECT_EQ(reg.value("type", ""), "register");
    EXPECT_EQ(reg.value("plugin", ""), plugin);
    EXPECT_EQ(reg.value("api_version", 0), apiVersion);
    send(fd.get(), R"({"type":"registered","pid":4242,"x-extra":true})" "\n");
    return fd;
  }

 private:
  std::string path_;
  UniqueFd listen_;
  std::map<int, std::string> bufs_;
};

struct Recorder {
  std::mutex m;
  std::vector<std::string> seen;  // "EVENT" or "RESTART {map}"
  vmckpt_result presuspendResult = VMCKPT_DONE;

  std::vector<std::string> snapshot() {
    std::lock_guard l(m);
    return seen;
  }
};

vmckpt_result hook(void* ctx, vmckpt_event ev, const char* map, char* reason, size_t len) {
  auto* r = static_cast<Recorder*>(ctx);
  std::lock_guard l(r->m);
  std::string s = vmckpt_event_name(ev);
  if (map) s += std::string(" ") + map;
  r->seen.push_back(s);
  // A group member publishes its new ids for the others.
  if (ev == VMCKPT_RESTART && vmckpt_connect_follows()) (void)vmckpt_publish(R"({"qpn":7})");
  if (ev == VMCKPT_PRESUSPEND && r->presuspendResult == VMCKPT_FAILED) {
    std::snprintf(reason, len, "cannot stop");
    return VMCKPT_FAILED;
  }
  return ev == VMCKPT_PRESUSPEND ? r->presuspendResult : VMCKPT_DONE;
}

class PluginApi : public ::testing::Test {
 protected:
  void SetUp() override {
    socket_ = dir_.path() + "/agent.sock";
    ::setenv("VMCKPT_AGENT_SOCKET", socket_.c_str(), 1);
    desc_.api_version = VMCKPT_PLUGIN_API_VERSION;
    desc_.name = "unit";
    desc_.hook = &hook;
    desc_.ctx = &rec_;
  }
  void TearDown() override {
    vmckpt_unregister();
    ::unsetenv("VMCKPT_AGENT_SOCKET");
  }

  // Registers while a helper thread plays the agent's side of the handshake.
  UniqueFd registerWith(FakeAgent& agent, int* rc) {
    UniqueFd conn;
    std::thread t([&] { conn = agent.acceptRegistration("unit", static_cast<int>(desc_.api_version)); });
    *rc = vmckpt_register(&desc_);
    t.join();
    return conn;
  }

  static std::string event(uint64_t seq, const char* name, const char* extra = "") {
    return "{\"type\":\"event\",\"seq\":" + std::to_string(seq) + ",\"event\":\"" + name + "\"" + extra + "}\n";
  }

  TempDir dir_{"vmckpt-libtest"};
  std::string socket_;
  vmckpt_plugin_descriptor desc_{};
  Recorder rec_;
};

TEST_F(PluginApi, RejectsBadDescriptors) {
  EXPECT_EQ(vmckpt_register(nullptr), -EINVAL);
  auto d = desc_;
  d.api_version = VMCKPT_PLUGIN_API_VERSION + 1;
  EXPECT_EQ(vmckpt_register(&d), -EINVAL);
  d.api_version = 0;
  EXPECT_EQ(vmckpt_register(&d), -EINVAL);
  d = desc_;
  d.name = nullptr;
  EXPECT_EQ(vmckpt_register(&d), -EINVAL);
  d.name = "";
  EXPECT_EQ(vmckpt_register(&d), -EINVAL);
  d.name = "bad name";
  EXPECT_EQ(vmckpt_register(&d), -EINVAL);
  d = desc_;
  d.hook = nullptr;
  EXPECT_EQ(vmckpt_register(&d), -EINVAL);
}

TEST_F(PluginApi, NoAgentIsENOENT) { EXPECT_EQ(vmckpt_register(&desc_), -ENOENT); }

TEST_F(PluginApi, RefusalIsEPROTO) {
  FakeAgent agent(socket_);
  std::thread t([&] {
    UniqueFd fd = agent.accept(Deadline::in(5s));
    agent.readLine(fd.get(), Deadline::in(5s));
    FakeAgent::send(fd.get(), R"({"type":"error","message":"api_version 1 is not supported"})" "\n");
  });
  EXPECT_EQ(vmckpt_register(&desc_), -EPROTO);
  t.join();
}

// Found with the GL plugin in a guest: a process that exits while registered (no
// vmckpt_unregister) aborted in std::terminate from libvmckpt's static destructors.
TEST_F(PluginApi, ExitingWhileRegisteredIsAnOrdinaryExit) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        FakeAgent agent(socket_);
        int rc = -1;
        UniqueFd conn = registerWith(agent, &rc);
        int code = rc == 0 && conn.valid() ? 0 : 3;
        // The child runs the whole fixture again and std::exit skips its destructors:
        // its directory goes here (the agent's socket file with it; the connection stays).
        (void)fs::removeTree(dir_.path());
        std::exit(code);
      },
      ::testing::ExitedWithCode(0), "");
}

TEST_F(PluginApi, AnswersEventsInOrderWithTheirSeq) {
  FakeAgent agent(socket_);
  int rc = -1;
  UniqueFd conn = registerWith(agent, &rc);
  ASSERT_EQ(rc, 0);
  ASSERT_TRUE(conn.valid());
  EXPECT_EQ(vmckpt_register(&desc_), -EBUSY);

  const char* names[] = {"PRESUSPEND", "PRECHECKPOINT", "RESUME"};
  uint64_t seq = 100;
  for (const char* n : names) {
    FakeAgent::send(conn.get(), event(seq, n));
    Json r = Json::parse(agent.readLine(conn.get(), Deadline::in(5s)), nullptr, false);
    EXPECT_EQ(r.value("type", ""), "reply");
    EXPECT_EQ(r.value("seq", 0u), seq);
    EXPECT_EQ(r.value("result", ""), "done");
    ++seq;
  }
  FakeAgent::send(conn.get(), event(seq, "RESTART", R"(,"device_map":{"mlx5_0":"rxe0"})"));
  Json r = Json::parse(agent.readLine(conn.get(), Deadline::in(5s)), nullptr, false);
  EXPECT_EQ(r.value("seq", 0u), seq);
  auto seen = rec_.snapshot();
  ASSERT_EQ(seen.size(), 4u);
  EXPECT_EQ(seen[0], "PRESUSPEND");
  EXPECT_EQ(seen[1], "PRECHECKPOINT");
  EXPECT_EQ(seen[2], "RESUME");
  EXPECT_EQ(seen[3], R"(RESTART {"mlx5_0":"rxe0"})");
}

TEST_F(PluginApi, FailedCarriesReason) {
  rec_.presuspendResult = VMCKPT_FAILED;
  FakeAgent agent(socket_);
  int rc = -1;
  UniqueFd conn = registerWith(agent, &rc);
  ASSERT_EQ(rc, 0);
  FakeAgent::send(conn.get(), event(1, "PRESUSPEND"));
  Json r = Json::parse(agent.readLine(conn.get(), Deadline::in(5s)), nullptr, false);
  EXPECT_EQ(r.value("result", ""), "failed");
  EXPECT_EQ(r.value("reason", ""), "cannot stop");
}

TEST_F(PluginApi, OversizedAndBrokenLinesAreIgnored) {
  FakeAgent agent(socket_);
  int rc = -1;
  UniqueFd conn = registerWith(agent, &rc);
  ASSERT_EQ(rc, 0);
  FakeAgent::send(conn.get(), std::string(wire::kMaxLineBytes + 10, 'x') + "\n");
  FakeAgent::send(conn.get(), "{not json\n");
  FakeAgent::send(conn.get(), R"({"type":"something-new"})" "\n");
  FakeAgent::send(conn.get(), event(7, "RESUME"));
  Json r = Json::parse(agent.readLine(conn.get(), Deadline::in(5s)), nullptr, false);
  EXPECT_EQ(r.value("seq", 0u), 7u);
  EXPECT_EQ(rec_.snapshot(), std::vector<std::string>{"RESUME"});
}

TEST_F(PluginApi, ReconnectsAndRegistersAgainWhenTheAgentGoesAway) {
  FakeAgent agent(socket_);
  int rc = -1;
  UniqueFd conn = registerWith(agent, &rc);
  ASSERT_EQ(rc, 0);
  conn.reset();  // the agent restarted, say
  UniqueFd again = agent.acceptRegistration("unit");
  ASSERT_TRUE(again.valid());
  FakeAgent::send(again.get(), event(1, "RESUME"));
  Json r = Json::parse(agent.readLine(again.get(), Deadline::in(5s)), nullptr, false);
  EXPECT_EQ(r.value("seq", 0u), 1u);
}

TEST_F(PluginApi, UnregisterClosesTheConnectionAndAllowsANewRegistration) {
  FakeAgent agent(socket_);
  int rc = -1;
  UniqueFd conn = registerWith(agent, &rc);
  ASSERT_EQ(rc, 0);
  auto t0 = std::chrono::steady_clock::now();
  vmckpt_unregister();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s);
  bool eof = false;
  agent.readLine(conn.get(), Deadline::in(2s), &eof);
  EXPECT_TRUE(eof);
  UniqueFd conn2 = registerWith(agent, &rc);
  EXPECT_EQ(rc, 0);
}

// API version 2 over the socket: the RESTART reply carries what the hook published, and
// CONNECT hands the peers to the hook.
TEST_F(PluginApi, PublishesInRestartAndGetsPeersInConnect) {
  FakeAgent agent(socket_);
  int rc = -1;
  UniqueFd conn = registerWith(agent, &rc);
  ASSERT_EQ(rc, 0);
  FakeAgent::send(conn.get(), event(1, "RESTART", R"(,"connect_follows":true)"));
  Json r = Json::parse(agent.readLine(conn.get(), Deadline::in(5s)), nullptr, false);
  EXPECT_EQ(r.value("result", ""), "done");
  EXPECT_EQ(r["data"], Json({{"qpn", 7}}));
  FakeAgent::send(conn.get(), event(2, "RESTART"));  // no group: nothing published
  r = Json::parse(agent.readLine(conn.get(), Deadline::in(5s)), nullptr, false);
  EXPECT_FALSE(r.contains("data"));
  FakeAgent::send(conn.get(), event(3, "CONNECT", R"(,"peers":[{"qpn":7},{"qpn":8}])"));
  r = Json::parse(agent.readLine(conn.get(), Deadline::in(5s)), nullptr, false);
  EXPECT_EQ(r.value("seq", 0u), 3u);
  EXPECT_EQ(r.value("result", ""), "done");
  EXPECT_EQ(rec_.snapshot(), (std::vector<std::string>{"RESTART {}", "RESTART {}",
                                                       R"(CONNECT [{"qpn":7},{"qpn":8}])"}));
}

// A plugin built against version 1 still registers (as api_version 1) and is never
// called with CONNECT.
TEST_F(PluginApi, AVersion1DescriptorRegistersAsVersion1AndNeverSeesConnect) {
  desc_.api_version = 1;
  FakeAgent agent(socket_);
  int rc = -1;
  UniqueFd conn = registerWith(agent, &rc);  // checks "api_version":1
  ASSERT_EQ(rc, 0);
  FakeAgent::send(conn.get(), event(1, "CONNECT", R"(,"peers":[])"));
  Json r = Json::parse(agent.readLine(conn.get(), Deadline::in(5s)), nullptr, false);
  EXPECT_EQ(r.value("result", ""), "not_mine");
  FakeAgent::send(conn.get(), event(2, "RESUME"));
  r = Json::parse(agent.readLine(conn.get(), Deadline::in(5s)), nullptr, false);
  EXPECT_EQ(r.value("seq", 0u), 2u);
  EXPECT_EQ(rec_.snapshot(), std::vector<std::string>{"RESUME"});
}

}  // namespace
