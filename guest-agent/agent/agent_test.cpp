// End-to-end tests of vmckpt-agent: the real binary, with its host channel on a unix
// socket (--port-socket) or a pty (--port) played by the test, fsfreeze pointed at a
// mounts file with nothing to freeze, and processes that use libvmckpt (the demo
// workload as child processes, or this test process itself) or speak the socket raw.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/fs.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <optional>
#include <thread>

#include "common/child_process.hpp"
#include "common/deadline.hpp"
#include "common/temp_dir.hpp"
#include "common/unique_fd.hpp"
#include "fsfreeze.hpp"
#include "loop_fs.hpp"
#include "vmckpt/plugin.h"
#include "wire.hpp"

using namespace vmckpt;
using namespace std::chrono_literals;
using wire::Json;

namespace {

// Lines from an fd, with a deadline on every read.
class LineReader {
 public:
  explicit LineReader(int fd = -1) : fd_(fd) {}
  void setFd(int fd) {
    fd_ = fd;
    buf_.clear();
  }
  // The next line, or nullopt at the deadline or EOF.
  std::optional<std::string> next(Deadline d) {
    for (;;) {
      if (auto nl = buf_.find('\n'); nl != std::string::npos) {
        std::string line = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        return line;
      }
      pollfd p{fd_, POLLIN, 0};
      int n = ::poll(&p, 1, d.pollTimeoutMs());
      if (n <= 0) return std::nullopt;
      char tmp[65536];
      ssize_t r = ::read(fd_, tmp, sizeof tmp);
      if (r <= 0) return std::nullopt;
      buf_.append(tmp, static_cast<size_t>(r));
    }
  }

 private:
  int fd_;
  std::string buf_;
};

void writeAll(int fd, const std::string& data) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0 && errno == EINTR) continue;
    ASSERT_GT(n, 0) << std::strerror(errno);
    off += static_cast<size_t>(n);
  }
}

bool waitForPath(const std::string& path, Deadline d) {
  struct stat st{};
  while (::stat(path.c_str(), &st) != 0) {
    if (d.expired()) return false;
    std::this_thread::sleep_for(10ms);
  }
  return true;
}

// A workload process (vmckpt-plugin-demo) whose stdout the test reads.
class Demo {
 public:
  Demo(const std::string& agentSocket, std::vector<std::string> args) {
    std::vector<std::string> argv = {VMCKPT_PLUGIN_DEMO_BIN};
    argv.insert(argv.end(), args.begin(), args.end());
    SpawnOptions o;
    o.argv = argv;
    o.env = std::vector<std::string>{"VMCKPT_AGENT_SOCKET=" + agentSocket, "PATH=/usr/bin:/bin"};
    o.stdoutTo = Redirect::pipe();
    auto c = ChildProcess::spawn(o);
    EXPECT_TRUE(c.has_value());
    if (c) child_.emplace(std::move(*c));
    if (child_) out_.setFd(child_->stdoutFd());
  }
  pid_t pid() const { return child_ ? child_->pid() : -1; }

  // Waits for a line containing `what`; every line read is kept in lines().
  bool waitFor(const std::string& what, Deadline d = Deadline::in(10s)) {
    for (size_t i = seen_; i < lines_.size(); ++i)
      if (lines_[i].find(what) != std::string::npos) {
        seen_ = i + 1;
        return true;
      }
    seen_ = lines_.size();
    while (auto l = out_.next(d)) {
      lines_.push_back(*l);
      seen_ = lines_.size();
      if (l->find(what) != std::string::npos) return true;
    }
    return false;
  }
  // The "plugin-demo: ..." lines so far (counter lines left out), after draining briefly.
  std::vector<std::string> events(std::chrono::milliseconds settle = 100ms) {
    auto d = Deadline::in(settle);
    while (auto l = out_.next(d)) lines_.push_back(*l);
    seen_ = lines_.size();
    std::vector<std::string> out;
    for (const auto& l : lines_)
      if (l.starts_with("plugin-demo: ") && !l.starts_with("plugin-demo: registered") &&
          !l.starts_with("plugin-demo: checksum") && !l.starts_with("plugin-demo: device_map"))
        out.push_back(l.substr(13));
    return out;
  }
  const std::vector<std::string>& lines() const { return lines_; }

 private:
  std::optional<ChildProcess> child_;
  LineReader out_;
  std::vector<std::string> lines_;
  size_t seen_ = 0;
};

// A process speaking the agent socket by hand, registered.
struct RawProcess {
  UniqueFd fd;
  LineReader in;

  // The next event line (fails the test on timeout).
  Json nextEvent(Deadline d = Deadline::in(5s)) {
    auto line = in.next(d);
    EXPECT_TRUE(line) << "no event";
    return line ? Json::parse(*line) : Json();
  }
  void answer(const Json& event, const std::string& result, const Json& data = nullptr,
              const std::string& reason = {}) {
    Json r = {{"type", "reply"}, {"seq", event["seq"]}, {"result", result}};
    if (!data.is_null()) r["data"] = data;
    if (!reason.empty()) r["reason"] = reason;
    writeAll(fd.get(), r.dump() + "\n");
  }
};

class GuestAgentTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty());
    hostSocket_ = dir_.path() + "/host.sock";
    agentSocket_ = dir_.path() + "/agent.sock";
    mounts_ = dir_.path() + "/mounts";
    log_ = dir_.path() + "/agent.log";
    std::ofstream(mounts_) << "proc /proc proc rw 0 0\ntmpfs /run tmpfs rw 0 0\n";
  }

  void TearDown() override {
    if (agent_ && agent_->running()) {
      agent_->signal(SIGTERM);
      auto st = agent_->wait(Deadline::in(5s));
      EXPECT_TRUE(st.has_value() && st->success()) << "the agent did not exit cleanly on SIGTERM";
      struct stat s{};
      EXPECT_NE(::stat(agentSocket_.c_str(), &s), 0) << "the agent left its socket behind";
    }
    if (HasFailure()) {
      std::ifstream f(log_);
      std::string line;
      while (std::getline(f, line)) std::cerr << "agent log: " << line << "\n";
    }
  }

  // Starts the agent with its host channel on a socket the test listens on.
  void startAgent(std::vector<std::string> extra = {}) {
    listen_.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, hostSocket_.c_str(), sizeof a.sun_path - 1);
    ASSERT_EQ(::bind(listen_.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    ASSERT_EQ(::listen(listen_.get(), 4), 0);
    std::vector<std::string> argv = {"--port-socket", hostSocket_};
    argv.insert(argv.end(), extra.begin(), extra.end());
    spawnAgent(argv);
    acceptHost();
  }

  void spawnAgent(const std::vector<std::string>& portArgs) {
    SpawnOptions o;
    o.argv = {VMCKPT_AGENT_BIN, "--socket", agentSocket_, "--mounts", mounts_, "--notify-timeout-ms", "3000",
              "--rollback-timeout-ms", "2000", "-v"};
    o.argv.insert(o.argv.end(), portArgs.begin(), portArgs.end());
    o.stderrTo = Redirect::toFile(log_);
    auto c = ChildProcess::spawn(o);
    ASSERT_TRUE(c.has_value());
    agent_.emplace(std::move(*c));
    ASSERT_TRUE(waitForPath(agentSocket_, Deadline::in(5s))) << "no agent socket";
    struct stat st{};
    ASSERT_EQ(::stat(agentSocket_.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0666u);
  }

  void acceptHost() {
    pollfd p{listen_.get(), POLLIN, 0};
    ASSERT_EQ(::poll(&p, 1, 5000), 1) << "the agent did not connect to the host socket";
    host_.reset(::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    ASSERT_TRUE(host_.valid());
    hostIn_.setFd(host_.get());
  }

  void send(const std::string& raw) { writeAll(host_.get(), raw); }

  // Sends one request and returns the reply with its id (skipping other lines).
  Json request(const std::string& cmd, Json args = nullptr, Deadline d = Deadline::in(10s)) {
    uint64_t id = nextId_++;
    Json req = {{"id", id}, {"cmd", cmd}};
    if (!args.is_null()) req["args"] = args;
    send(req.dump() + "\n");
    return replyTo(id, d);
  }

  Json replyTo(uint64_t id, Deadline d = Deadline::in(10s)) {
    while (auto line = hostIn_.next(d)) {
      Json j = Json::parse(*line, nullptr, false);
      EXPECT_FALSE(j.is_discarded()) << *line;
      EXPECT_LE(line->size() + 1, wire::kMaxLineBytes);
      if (j.is_object() && j["id"] == id) return j;
      skipped_.push_back(j);
    }
    ADD_FAILURE() << "no reply to id " << id;
    return Json();
  }

  // The resync of PROTOCOL.md: a bare newline, then sync; lines before its reply are dropped.
  void resync() {
    send("\n");
    std::string token = "00ff00ff" + std::to_string(1000000 + nextId_).substr(0, 8);
    Json r = request("sync", {{"token", token}});
    ASSERT_EQ(r["ok"], true) << r.dump();
    EXPECT_EQ(r["result"]["token"], token);
  }

  int64_t registeredCount() {
    Json r = request("status");
    return r["result"].value("processes", -1);
  }

  bool waitRegistered(int64_t n, Deadline d = Deadline::in(10s)) {
    while (registeredCount() != n) {
      if (d.expired()) return false;
      std::this_thread::sleep_for(20ms);
    }
    return true;
  }

  // A process speaking the agent socket by hand.
  UniqueFd connectRaw() {
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, agentSocket_.c_str(), sizeof a.sun_path - 1);
    EXPECT_EQ(::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    return fd;
  }

  RawProcess registerRaw(const std::string& plugin, int apiVersion) {
    RawProcess p{connectRaw(), LineReader()};
    p.in.setFd(p.fd.get());
    writeAll(p.fd.get(), Json({{"type", "register"}, {"plugin", plugin}, {"api_version", apiVersion}}).dump() + "\n");
    auto reply = p.in.next(Deadline::in(5s));
    EXPECT_TRUE(reply && Json::parse(*reply)["type"] == "registered") << (reply ? *reply : "no reply");
    return p;
  }
  // Registers this test process through libvmckpt with the agent; 0 or -errno.
  int registerHere(const char* name, vmckpt_hook_fn hook, void* ctx) {
    vmckpt_plugin_descriptor d{VMCKPT_PLUGIN_API_VERSION, name, hook, ctx};
    ::setenv("VMCKPT_AGENT_SOCKET", agentSocket_.c_str(), 1);
    int rc = vmckpt_register(&d);
    ::unsetenv("VMCKPT_AGENT_SOCKET");
    return rc;
  }
  // Sends a request without waiting for its reply; replyTo(id) collects it.
  uint64_t post(const std::string& cmd, Json args) {
    uint64_t id = nextId_++;
    send(Json({{"id", id}, {"cmd", cmd}, {"args", std::move(args)}}).dump() + "\n");
    return id;
  }
  // The agent without fsfreeze, and two raw processes of plugin ib, api_version 2.
  std::pair<RawProcess, RawProcess> startWithTwoIbProcesses() {
    startAgent({"--no-fsfreeze"});
    resync();
    std::pair<RawProcess, RawProcess> procs{registerRaw("ib", 2), registerRaw("ib", 2)};
    EXPECT_TRUE(waitRegistered(2));
    return procs;
  }
  // The first stage of a group snapshot with raw processes: quiesce{release}, each
  // answering its PRESUSPEND(release) done with `data`. Returns the reply.
  Json drainRaw(std::initializer_list<RawProcess*> procs, const Json& data = nullptr) {
    uint64_t id = post("quiesce", {{"deadline_ms", 5000}, {"release", true}});
    for (RawProcess* p : procs) {
      Json e = p->nextEvent();
      EXPECT_EQ(e["event"], "PRESUSPEND");
      EXPECT_EQ(e["release"], true);
      p->answer(e, "done", data);
    }
    return replyTo(id);
  }
  // Each process gets a RESUME without flags (a rollback, a plain thaw) and answers it.
  void expectPlainResume(std::initializer_list<RawProcess*> procs, Deadline d = Deadline::in(5s)) {
    for (RawProcess* p : procs) {
      Json e = p->nextEvent(d);
      EXPECT_EQ(e["event"], "RESUME");
      EXPECT_FALSE(e.contains("connect_follows"));
      EXPECT_FALSE(e.contains("release"));
      p->answer(e, "done");
    }
  }

  TempDir dir_{"vmckpt-agent-test"};
  std::string hostSocket_, agentSocket_, mounts_, log_;
  std::optional<ChildProcess> agent_;
  UniqueFd listen_, host_;
  LineReader hostIn_;
  uint64_t nextId_ = 1;
  std::vector<Json> skipped_;
};

TEST_F(GuestAgentTest, SyncPingInfoStatus) {
  startAgent();
  resync();
  Json ping = request("ping");
  ASSERT_EQ(ping["ok"], true);
  EXPECT_EQ(ping["result"]["version"], VMCKPT_VERSION);
  EXPECT_EQ(ping["result"]["api_version"], 2);

  Json status = request("status");
  EXPECT_EQ(status["result"], Json({{"state", "idle"}, {"processes", 0}}));

  Json info = request("info");
  ASSERT_EQ(info["ok"], true);
  EXPECT_EQ(info["result"]["state"], "idle");
  EXPECT_EQ(info["result"]["plugins"], Json::parse(R"([{"name":"fsfreeze","builtin":true}])"));
  EXPECT_EQ(info["result"]["processes"], Json::array());
}

TEST_F(GuestAgentTest, QuiesceThenThawSendsEventsInOrder) {
  startAgent();
  resync();
  Demo demo(agentSocket_, {});
  ASSERT_TRUE(demo.waitFor("plugin-demo: registered as demo"));
  ASSERT_TRUE(demo.waitFor("counter 1"));

  Json info = request("info");
  ASSERT_EQ(info["result"]["processes"].size(), 1u);
  EXPECT_EQ(info["result"]["processes"][0]["pid"], demo.pid());
  EXPECT_EQ(info["result"]["processes"][0]["plugin"], "demo");
  EXPECT_EQ(info["result"]["api_version"], 2);
  EXPECT_EQ(info["result"]["processes"][0]["api_version"], 2);  // libvmckpt of this build
  EXPECT_EQ(info["result"]["plugins"][1], Json({{"name", "demo"}, {"builtin", false}}));

  Json q = request("quiesce", {{"deadline_ms", 5000}});
  ASSERT_EQ(q["ok"], true) << q.dump();
  EXPECT_GE(q["result"]["elapsed_ms"].get<int64_t>(), 0);
  EXPECT_EQ(q["result"]["plugins"],
            Json::parse(R"([{"name":"demo","pid":)" + std::to_string(demo.pid()) +
                        R"(,"result":"done"},{"name":"fsfreeze","pid":0,"result":"not_mine"}])"));
  EXPECT_EQ(request("status")["result"]["state"], "quiesced");
  EXPECT_EQ(request("info")["result"]["state"], "quiesced");

  Json again = request("quiesce", {{"deadline_ms", 5000}});
  EXPECT_EQ(again["ok"], false);
  EXPECT_EQ(again["error"]["code"], "wrong_state");

  Json t = request("thaw");
  ASSERT_EQ(t["ok"], true) << t.dump();
  EXPECT_EQ(t["result"]["plugins"][0]["name"], "fsfreeze");  // FITHAW first
  EXPECT_EQ(t["result"]["plugins"][1]["name"], "demo");
  EXPECT_EQ(t["result"]["plugins"][1]["result"], "done");
  EXPECT_EQ(request("status")["result"]["state"], "idle");

  ASSERT_TRUE(demo.waitFor("state ok"));
  EXPECT_EQ(demo.events(), (std::vector<std::string>{"event PRESUSPEND", "event PRECHECKPOINT",
                                                     "event RESUME", "state ok"}));
  // The counter runs again after RESUME.
  EXPECT_TRUE(demo.waitFor("counter"));
}

TEST_F(GuestAgentTest, RestoredSendsRestartWithTheDeviceMap) {
  startAgent();
  resync();
  Demo demo(agentSocket_, {});
  ASSERT_TRUE(demo.waitFor("registered"));
  ASSERT_TRUE(waitRegistered(1));
  ASSERT_EQ(request("quiesce", {{"deadline_ms", 5000}})["ok"], true);
  Json r = request("restored", {{"device_map", {{"mlx5_0", "rxe0"}}}});
  ASSERT_EQ(r["ok"], true) << r.dump();
  EXPECT_EQ(r["result"]["plugins"][1]["result"], "done");
  ASSERT_TRUE(demo.waitFor("state ok"));
  EXPECT_EQ(demo.events(), (std::vector<std::string>{"event PRESUSPEND", "event PRECHECKPOINT",
                                                     "event RESTART", "state ok"}));
  bool sawMap = false;
  for (const auto& l : demo.lines()) sawMap |= l == R"(plugin-demo: device_map {"mlx5_0":"rxe0"})";
  EXPECT_TRUE(sawMap);
  EXPECT_EQ(request("status")["result"]["state"], "idle");
}

TEST_F(GuestAgentTest, ThawAndRestoredInIdleOnlyNotify) {
  startAgent();
  resync();
  Demo demo(agentSocket_, {});
  ASSERT_TRUE(demo.waitFor("registered"));
  ASSERT_TRUE(waitRegistered(1));
  EXPECT_EQ(request("thaw")["ok"], true);
  EXPECT_EQ(request("restored")["ok"], true);
  EXPECT_EQ(request("restored", {{"device_map", Json::object()}})["ok"], true);
  EXPECT_EQ(demo.events(500ms), (std::vector<std::string>{"event RESUME", "state ok", "event RESTART", "state ok",
                                                          "event RESTART", "state ok"}));
}

TEST_F(GuestAgentTest, QuiesceWithReleaseStopsAfterPresuspendAndThawResumesEveryone) {
  startAgent();
  resync();
  Demo a(agentSocket_, {});
  ASSERT_TRUE(a.waitFor("registered"));  // first, so first in plugins[]
  Demo b(agentSocket_, {"--name", "other"});
  ASSERT_TRUE(b.waitFor("registered"));
  ASSERT_TRUE(waitRegistered(2));

  Json q = request("quiesce", {{"deadline_ms", 5000}, {"release", true}});
  ASSERT_EQ(q["ok"], true) << q.dump();
  // Only the processes: no fsfreeze entry, nothing is frozen before release.
  EXPECT_EQ(q["result"]["plugins"],
            Json::parse(R"([{"name":"demo","pid":)" + std::to_string(a.pid()) +
                        R"(,"result":"done"},{"name":"other","pid":)" + std::to_string(b.pid()) +
                        R"(,"result":"done"}])"));
  EXPECT_EQ(request("status")["result"]["state"], "drained");

  // A member elsewhere failed before the release: the host abandons the snapshot.
  Json t = request("thaw");
  ASSERT_EQ(t["ok"], true) << t.dump();
  EXPECT_EQ(t["result"]["plugins"][0], Json({{"name", "fsfreeze"}, {"pid", 0}, {"result", "not_mine"}}));
  EXPECT_EQ(t["result"]["plugins"][1]["result"], "done");
  EXPECT_EQ(t["result"]["plugins"][2]["result"], "done");
  EXPECT_EQ(request("status")["result"]["state"], "idle");
  ASSERT_TRUE(a.waitFor("state ok"));
  ASSERT_TRUE(b.waitFor("state ok"));
  for (Demo* d : {&a, &b})
    EXPECT_EQ(d->events(), (std::vector<std::string>{"event PRESUSPEND", "event RESUME", "state ok"}));
}

TEST_F(GuestAgentTest, FailedPresuspendRollsBackEveryProcess) {
  startAgent();
  resync();
  Demo bad(agentSocket_, {"--fail-presuspend"});
  Demo good(agentSocket_, {"--name", "good"});
  ASSERT_TRUE(bad.waitFor("registered"));
  ASSERT_TRUE(good.waitFor("registered"));
  ASSERT_TRUE(waitRegistered(2));

  Json q = request("quiesce", {{"deadline_ms", 5000}});
  ASSERT_EQ(q["ok"], false);
  EXPECT_TRUE(q["id"].is_number());
  EXPECT_EQ(q["error"]["code"], "plugin_failed");
  std::string msg = q["error"]["message"];
  EXPECT_NE(msg.find("plugin demo (pid " + std::to_string(bad.pid()) + ") failed PRESUSPEND"), std::string::npos)
      << msg;
  EXPECT_NE(msg.find("--fail-presuspend"), std::string::npos) << msg;
  EXPECT_NE(msg.find("rolled back"), std::string::npos) << msg;
  EXPECT_EQ(request("status")["result"]["state"], "idle");

  // Both got PRESUSPEND, so both get RESUME; nobody got PRECHECKPOINT.
  ASSERT_TRUE(bad.waitFor("event RESUME"));
  ASSERT_TRUE(good.waitFor("state ok"));
  EXPECT_EQ(bad.events(), (std::vector<std::string>{"event PRESUSPEND", "event RESUME", "state ok"}));
  EXPECT_EQ(good.events(), (std::vector<std::string>{"event PRESUSPEND", "event RESUME", "state ok"}));
}

TEST_F(GuestAgentTest, HangingPresuspendHitsTheDeadlineAndRollsBack) {
  startAgent();
  resync();
  Demo slow(agentSocket_, {"--hang-presuspend=2"});
  Demo good(agentSocket_, {"--name", "good"});
  ASSERT_TRUE(slow.waitFor("registered"));
  ASSERT_TRUE(good.waitFor("registered"));
  ASSERT_TRUE(waitRegistered(2));

  auto t0 = std::chrono::steady_clock::now();
  Json q = request("quiesce", {{"deadline_ms", 300}});
  auto took = std::chrono::steady_clock::now() - t0;
  ASSERT_EQ(q["ok"], false) << q.dump();
  EXPECT_EQ(q["error"]["code"], "deadline");
  std::string msg = q["error"]["message"];
  EXPECT_NE(msg.find("deadline of 300 ms"), std::string::npos) << msg;
  EXPECT_NE(msg.find("plugin demo (pid " + std::to_string(slow.pid()) + ")"), std::string::npos) << msg;
  EXPECT_EQ(msg.find("good"), std::string::npos) << msg;  // it answered in time
  EXPECT_GE(took, 300ms);
  EXPECT_LT(took, 1500ms) << "the late process must not hold up the reply";
  EXPECT_EQ(request("status")["result"]["state"], "idle");
  ASSERT_TRUE(good.waitFor("state ok"));
  EXPECT_EQ(good.events(), (std::vector<std::string>{"event PRESUSPEND", "event RESUME", "state ok"}));

  // The late one gets its RESUME once it answers PRESUSPEND, one event at a time.
  ASSERT_TRUE(slow.waitFor("event RESUME", Deadline::in(10s)));
  ASSERT_TRUE(slow.waitFor("state ok"));
  EXPECT_EQ(slow.events(), (std::vector<std::string>{"event PRESUSPEND", "event RESUME", "state ok"}));

  // The agent works normally afterwards: a full quiesce and thaw (the slow one hangs
  // again for 2 s, within the 10 s deadline).
  Json q2 = request("quiesce", {{"deadline_ms", 10000}});
  EXPECT_EQ(q2["ok"], true) << q2.dump();
  EXPECT_EQ(request("thaw")["ok"], true);
}

TEST_F(GuestAgentTest, AFailureRollsBackAtOnceEvenWithAnotherProcessHung) {
  startAgent();
  resync();
  Demo bad(agentSocket_, {"--fail-presuspend"});
  Demo slow(agentSocket_, {"--name", "slow", "--hang-presuspend=3"});
  ASSERT_TRUE(bad.waitFor("registered"));
  ASSERT_TRUE(slow.waitFor("registered"));
  ASSERT_TRUE(waitRegistered(2));
  auto t0 = std::chrono::steady_clock::now();
  Json q = request("quiesce", {{"deadline_ms", 20000}});
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1500ms) << "waited for the hung process";
  EXPECT_EQ(q["error"]["code"], "plugin_failed") << q.dump();
  EXPECT_EQ(request("status")["result"]["state"], "idle");
  ASSERT_TRUE(bad.waitFor("state ok"));
  ASSERT_TRUE(slow.waitFor("state ok", Deadline::in(10s)));
  EXPECT_EQ(slow.events(), (std::vector<std::string>{"event PRESUSPEND", "event RESUME", "state ok"}));
}

TEST_F(GuestAgentTest, ThawRightAfterAHungQuiesceDoesNotWaitForTheBusyProcess) {
  startAgent();
  resync();
  Demo slow(agentSocket_, {"--hang-presuspend=3"});
  ASSERT_TRUE(slow.waitFor("registered"));
  ASSERT_TRUE(waitRegistered(1));
  EXPECT_EQ(request("quiesce", {{"deadline_ms", 300}})["error"]["code"], "deadline");
  // What a host does after a failed quiesce, to be safe: thaw. The process is still in
  // its PRESUSPEND hook, so its RESUME is queued and not waited for.
  auto t0 = std::chrono::steady_clock::now();
  Json t = request("thaw", {{"deadline_ms", 5000}});
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s);
  ASSERT_EQ(t["ok"], true) << t.dump();
  EXPECT_EQ(t["result"]["plugins"][1]["result"], "not_mine");
  EXPECT_EQ(request("status")["result"]["state"], "idle");
  // Both RESUMEs (rollback, thaw) arrive once the hook returns, one at a time.
  ASSERT_TRUE(slow.waitFor("event RESUME", Deadline::in(10s)));
  ASSERT_TRUE(slow.waitFor("event RESUME", Deadline::in(5s)));
  EXPECT_EQ(slow.events(), (std::vector<std::string>{"event PRESUSPEND", "event RESUME", "state ok",
                                                     "event RESUME", "state ok"}));
}

TEST_F(GuestAgentTest, ThawDeadlineNamesTheSlowProcess) {
  startAgent();
  resync();
  // A raw process that takes RESUME and never answers it.
  UniqueFd fd = connectRaw();
  LineReader in(fd.get());
  writeAll(fd.get(), R"({"type":"register","plugin":"mute","api_version":1})" "\n");
  ASSERT_TRUE(in.next(Deadline::in(5s)));
  auto t0 = std::chrono::steady_clock::now();
  Json t = request("thaw", {{"deadline_ms", 200}});
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  ASSERT_EQ(t["ok"], false);
  EXPECT_EQ(t["error"]["code"], "deadline");
  EXPECT_NE(t["error"]["message"].get<std::string>().find("plugin mute (pid " + std::to_string(::getpid())),
            std::string::npos)
      << t.dump();
  EXPECT_EQ(request("status")["result"]["state"], "idle");
}

TEST_F(GuestAgentTest, OversizedLineGetsAParseErrorAndTheStreamGoesOn) {
  startAgent();
  resync();
  send(std::string(70000, 'x') + "\n");
  auto line = hostIn_.next(Deadline::in(5s));
  ASSERT_TRUE(line);
  Json err = Json::parse(*line);
  EXPECT_TRUE(err["id"].is_null());
  EXPECT_EQ(err["ok"], false);
  EXPECT_EQ(err["error"]["code"], "parse");
  EXPECT_EQ(request("ping")["ok"], true);
  // A line of exactly the limit (newline included) is accepted.
  std::string pad(wire::kMaxLineBytes, ' ');
  std::string req = R"({"id": 999, "cmd": "ping", "pad": ")";
  req += std::string(wire::kMaxLineBytes - req.size() - 3, 'p') + "\"}\n";
  ASSERT_EQ(req.size(), wire::kMaxLineBytes);
  send(req);
  EXPECT_EQ(replyTo(999)["ok"], true);
}

TEST_F(GuestAgentTest, ResyncAfterAPartialLine) {
  startAgent();
  send(R"({"id": 5, "cmd": "pi)");  // a host died mid-write
  send("\n");
  std::string token = "0123456789abcdef";
  send(Json({{"id", 77}, {"cmd", "sync"}, {"args", {{"token", token}}}}).dump() + "\n");
  Json r = replyTo(77);
  EXPECT_EQ(r["result"]["token"], token);
  ASSERT_EQ(skipped_.size(), 1u);  // the broken line's parse error came first
  EXPECT_EQ(skipped_[0]["error"]["code"], "parse");
  EXPECT_EQ(request("ping")["ok"], true);
}

TEST_F(GuestAgentTest, BadRequestsGetTheirCodes) {
  startAgent();
  resync();
  Json r = request("reboot");
  EXPECT_EQ(r["error"]["code"], "unknown_command");
  r = request("quiesce");
  EXPECT_EQ(r["error"]["code"], "bad_args");
  r = request("quiesce", {{"deadline_ms", 0}});
  EXPECT_EQ(r["error"]["code"], "bad_args");
  r = request("restored", {{"device_map", "mlx5_0"}});
  EXPECT_EQ(r["error"]["code"], "bad_args");
  r = request("restored", {{"connect_follows", "yes"}});
  EXPECT_EQ(r["error"]["code"], "bad_args");
  r = request("release");
  EXPECT_EQ(r["error"]["code"], "bad_args");
  r = request("connect");
  EXPECT_EQ(r["error"]["code"], "bad_args");
  r = request("connect", {{"peers", {{"ib", {{"qpn", 1}}}}}});
  EXPECT_EQ(r["error"]["code"], "bad_args");
  r = request("connect", {{"peers", Json::object()}});  // no processes: nothing to tell
  EXPECT_EQ(r["ok"], true) << r.dump();
  EXPECT_EQ(r["result"], Json({{"plugins", Json::array()}}));
  send("[1,2,3]\n{\"cmd\":\"ping\"}\n");
  for (int i = 0; i < 2; ++i) {
    auto line = hostIn_.next(Deadline::in(5s));
    ASSERT_TRUE(line);
    Json e = Json::parse(*line);
    EXPECT_TRUE(e["id"].is_null());
    EXPECT_EQ(e["error"]["code"], "parse");
  }
  EXPECT_EQ(request("ping")["ok"], true);
}

TEST_F(GuestAgentTest, HostReconnectsRepeatedly) {
  startAgent();
  for (int i = 0; i < 5; ++i) {
    resync();
    EXPECT_EQ(request("ping")["ok"], true);
    send(R"({"id": 1, "cmd": "pi)");  // leave a partial line behind
    host_.reset();
    acceptHost();
  }
  resync();
  EXPECT_EQ(request("ping")["ok"], true);
}

TEST_F(GuestAgentTest, HostChannelOnAPty) {
  int master = ::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
  ASSERT_GE(master, 0);
  UniqueFd m(master);
  ASSERT_EQ(::grantpt(master), 0);
  ASSERT_EQ(::unlockpt(master), 0);
  std::string slave = ::ptsname(master);
  // Keep the slave open here too, so the pty does not hang up before the agent opens it.
  UniqueFd keep(::open(slave.c_str(), O_RDWR | O_NOCTTY | O_CLOEXEC));
  spawnAgent({"--port", slave});
  host_.reset(::dup(master));
  hostIn_.setFd(host_.get());
  std::this_thread::sleep_for(200ms);  // let the agent put the pty in raw mode first
  resync();
  EXPECT_EQ(request("ping")["ok"], true);
  EXPECT_EQ(request("status")["result"]["state"], "idle");
}

TEST_F(GuestAgentTest, RegistrationRules) {
  startAgent();
  resync();
  auto expectRefused = [&](const std::string& line, const std::string& what) {
    UniqueFd fd = connectRaw();
    writeAll(fd.get(), line);
    LineReader in(fd.get());
    auto reply = in.next(Deadline::in(5s));
    ASSERT_TRUE(reply) << line;
    Json j = Json::parse(*reply);
    EXPECT_EQ(j["type"], "error") << line;
    EXPECT_NE(j["message"].get<std::string>().find(what), std::string::npos) << j.dump();
    EXPECT_FALSE(in.next(Deadline::in(5s))) << "connection should be closed";
  };
  expectRefused(R"({"type":"register","plugin":"ib","api_version":3})" "\n", "api_version 3");
  expectRefused(R"({"type":"register","plugin":"ib","api_version":0})" "\n", "api_version 0");
  expectRefused(R"({"type":"register","plugin":"i b","api_version":1})" "\n", "plugin name");
  expectRefused(R"({"type":"reply","seq":1,"result":"done"})" "\n", "register first");
  EXPECT_EQ(registeredCount(), 0);

  UniqueFd fd = connectRaw();
  writeAll(fd.get(), R"({"type":"register","plugin":"raw","api_version":1,"x-new":1})" "\n");
  LineReader in(fd.get());
  auto reply = in.next(Deadline::in(5s));
  ASSERT_TRUE(reply);
  Json j = Json::parse(*reply);
  EXPECT_EQ(j["type"], "registered");
  EXPECT_EQ(j["pid"], ::getpid());  // from SO_PEERCRED
  EXPECT_EQ(registeredCount(), 1);
  fd.reset();
  EXPECT_TRUE(waitRegistered(0));
}

TEST_F(GuestAgentTest, UnregisteredConnectionsTimeOut) {
  startAgent({"--register-timeout-ms", "200"});
  resync();
  UniqueFd fd = connectRaw();
  LineReader in(fd.get());
  EXPECT_FALSE(in.next(Deadline::in(3s)));  // closed by the agent, no line
}

TEST_F(GuestAgentTest, RawProcessSeqMatchingParseErrorsAndGoneMeansNotMine) {
  startAgent();
  resync();
  UniqueFd fd = connectRaw();
  LineReader in(fd.get());
  writeAll(fd.get(), R"({"type":"register","plugin":"raw","api_version":1})" "\n");
  ASSERT_TRUE(in.next(Deadline::in(5s)));

  uint64_t qid = nextId_++;
  send(Json({{"id", qid}, {"cmd", "quiesce"}, {"args", {{"deadline_ms", 5000}}}}).dump() + "\n");
  auto evLine = in.next(Deadline::in(5s));
  ASSERT_TRUE(evLine);
  Json ev = Json::parse(*evLine);
  EXPECT_EQ(ev["type"], "event");
  EXPECT_EQ(ev["event"], "PRESUSPEND");
  EXPECT_FALSE(ev.contains("device_map"));
  uint64_t seq = ev["seq"];

  // An oversized line and garbage get error lines; the connection stays.
  writeAll(fd.get(), std::string(70000, 'z') + "\n");
  auto e1 = in.next(Deadline::in(5s));
  ASSERT_TRUE(e1);
  EXPECT_EQ(Json::parse(*e1)["type"], "error");
  writeAll(fd.get(), "{oops\n");
  auto e2 = in.next(Deadline::in(5s));
  ASSERT_TRUE(e2);
  EXPECT_EQ(Json::parse(*e2)["type"], "error");
  // A reply with a wrong seq is ignored; the right one moves the quiesce on.
  writeAll(fd.get(), Json({{"type", "reply"}, {"seq", seq + 1000}, {"result", "failed"}}).dump() + "\n");
  writeAll(fd.get(), Json({{"type", "reply"}, {"seq", seq}, {"result", "done"}}).dump() + "\n");
  auto ev2 = in.next(Deadline::in(5s));
  ASSERT_TRUE(ev2);
  EXPECT_EQ(Json::parse(*ev2)["event"], "PRECHECKPOINT");
  EXPECT_GT(Json::parse(*ev2)["seq"].get<uint64_t>(), seq);
  // The process dies before answering: not_mine, and the quiesce succeeds.
  fd.reset();
  Json q = replyTo(qid);
  ASSERT_EQ(q["ok"], true) << q.dump();
  EXPECT_EQ(q["result"]["plugins"][0], Json({{"name", "raw"}, {"pid", ::getpid()}, {"result", "done"}}));
  EXPECT_EQ(request("thaw")["ok"], true);
}

// --- group restore: publish in RESTART, CONNECT with the peers (raw processes) ---------

using GroupRestoreTest = GuestAgentTest;

TEST_F(GroupRestoreTest, PublishedDataComesBackAndConnectHandsItToEveryMember) {
  startAgent({"--no-fsfreeze"});
  resync();
  RawProcess ib1 = registerRaw("ib", 2), ib2 = registerRaw("ib", 2), old = registerRaw("ib", 1),
             gl = registerRaw("gl", 2);
  ASSERT_TRUE(waitRegistered(4));
  const int64_t pid = ::getpid();

  uint64_t id = post("restored", {{"device_map", {{"mlx5_0", "rxe0"}}}, {"connect_follows", true}});
  Json e1 = ib1.nextEvent(), e2 = ib2.nextEvent(), e3 = old.nextEvent(), e4 = gl.nextEvent();
  for (const Json* e : {&e1, &e2, &e3, &e4}) {
    EXPECT_EQ((*e)["event"], "RESTART");
    EXPECT_EQ((*e)["connect_follows"], true);
    EXPECT_EQ((*e)["device_map"], Json({{"mlx5_0", "rxe0"}}));
  }
  ib1.answer(e1, "done", {{"qpn", 17}, {"gid", "fe80::1"}});
  ib2.answer(e2, "done", {{"qpn", 18}});
  old.answer(e3, "done");
  gl.answer(e4, "not_mine");
  Json r = replyTo(id);
  ASSERT_EQ(r["ok"], true) << r.dump();
  EXPECT_EQ(r["result"]["plugins"], Json::parse(R"([
      {"name":"ib","pid":)" + std::to_string(pid) + R"(,"result":"done","data":{"qpn":17,"gid":"fe80::1"}},
      {"name":"ib","pid":)" + std::to_string(pid) + R"(,"result":"done","data":{"qpn":18}},
      {"name":"ib","pid":)" + std::to_string(pid) + R"(,"result":"done"},
      {"name":"gl","pid":)" + std::to_string(pid) + R"(,"result":"not_mine"}])"));

  // The host hands every member's data to every member.
  Json peers = Json::parse(R"([{"qpn":17,"gid":"fe80::1"},{"qpn":18}])");
  id = post("connect", {{"peers", {{"ib", peers}, {"cuda", Json::array()}}}});
  e1 = ib1.nextEvent();
  e2 = ib2.nextEvent();
  e4 = gl.nextEvent();
  for (const Json* e : {&e1, &e2}) {
    EXPECT_EQ((*e)["event"], "CONNECT");
    EXPECT_EQ((*e)["peers"], peers);
    EXPECT_FALSE(e->contains("device_map"));
    EXPECT_FALSE(e->contains("connect_follows"));
  }
  EXPECT_EQ(e4["event"], "CONNECT");
  EXPECT_EQ(e4["peers"], Json::array());  // none published under its name
  ib1.answer(e1, "done");
  ib2.answer(e2, "done");
  gl.answer(e4, "not_mine");
  r = replyTo(id);
  ASSERT_EQ(r["ok"], true) << r.dump();
  EXPECT_EQ(r["result"]["plugins"].size(), 4u);  // no fsfreeze entry, the v1 process not_mine
  EXPECT_EQ(r["result"]["plugins"][0]["result"], "done");
  EXPECT_EQ(r["result"]["plugins"][2], Json({{"name", "ib"}, {"pid", pid}, {"result", "not_mine"}}));
  EXPECT_FALSE(r["result"]["plugins"][0].contains("data"));
  // The api_version 1 process never saw CONNECT.
  EXPECT_FALSE(old.in.next(Deadline::in(200ms)));

  // A member that fails CONNECT fails the command, named.
  id = post("connect", {{"peers", {{"ib", peers}}}, {"deadline_ms", 5000}});
  e1 = ib1.nextEvent();
  e2 = ib2.nextEvent();
  e4 = gl.nextEvent();
  ib1.answer(e1, "done");
  ib2.answer(e2, "failed", nullptr, "peer qpn 17 unreachable");
  gl.answer(e4, "not_mine");
  r = replyTo(id);
  EXPECT_EQ(r["ok"], false);
  EXPECT_EQ(r["error"]["code"], "plugin_failed");
  EXPECT_EQ(r["error"]["message"],
            "plugin ib (pid " + std::to_string(pid) + ") failed CONNECT: peer qpn 17 unreachable");
  EXPECT_EQ(request("status")["result"]["state"], "idle");
}

TEST_F(GroupRestoreTest, ConnectFollowsIsLeftOutUnlessAsked) {
  startAgent({"--no-fsfreeze"});
  resync();
  RawProcess p = registerRaw("ib", 2);
  ASSERT_TRUE(waitRegistered(1));
  uint64_t id = post("restored", Json::object());
  Json e = p.nextEvent();
  EXPECT_EQ(e["event"], "RESTART");
  EXPECT_FALSE(e.contains("connect_follows"));
  p.answer(e, "done");
  EXPECT_EQ(replyTo(id)["ok"], true);
}

TEST_F(GroupRestoreTest, DataThatIsNotASmallObjectFailsThatProcess) {
  startAgent({"--no-fsfreeze"});
  resync();
  RawProcess a = registerRaw("ib", 2), b = registerRaw("ib", 2);
  ASSERT_TRUE(waitRegistered(2));
  const std::string pid = std::to_string(::getpid());

  uint64_t id = post("restored", {{"connect_follows", true}});
  Json ea = a.nextEvent(), eb = b.nextEvent();
  a.answer(ea, "done", {{"k", std::string(wire::kMaxPublishBytes, 'x')}});  // 32776 bytes
  b.answer(eb, "done", Json::array({1, 2}));
  Json r = replyTo(id);
  EXPECT_EQ(r["ok"], false) << r.dump();
  EXPECT_EQ(r["error"]["code"], "plugin_failed");
  EXPECT_EQ(r["error"]["message"], "plugin ib (pid " + pid +
                                       ") failed RESTART: published data is 32776 bytes, more than 32768, "
                                       "plugin ib (pid " + pid +
                                       ") failed RESTART: published data is not a JSON object");

  // Each within its bound, but together more than one reply line can carry.
  RawProcess c = registerRaw("ib", 2);
  ASSERT_TRUE(waitRegistered(3));
  id = post("restored", {{"connect_follows", true}});
  Json big = {{"k", std::string(30000, 'y')}};
  for (RawProcess* p : {&a, &b, &c}) p->answer(p->nextEvent(), "done", big);
  r = replyTo(id);
  EXPECT_EQ(r["ok"], false) << r.dump().substr(0, 300);
  EXPECT_EQ(r["error"]["code"], "plugin_failed");
  const std::string msg = r["error"]["message"];
  EXPECT_TRUE(msg.starts_with("published data too large: the reply would be 90")) << msg;
  EXPECT_NE(msg.find("more than the 65536-byte line limit (data from 3 processes)"), std::string::npos) << msg;

  // Two of them fit.
  c.fd.reset();
  ASSERT_TRUE(waitRegistered(2));
  id = post("restored", {{"connect_follows", true}});
  for (RawProcess* p : {&a, &b}) p->answer(p->nextEvent(), "done", big);
  r = replyTo(id);
  ASSERT_EQ(r["ok"], true) << r.dump().substr(0, 300);
  EXPECT_EQ(r["result"]["plugins"][1]["data"], big);
}

// --- group snapshot: quiesce with release, release, thaw with connect_follows (raw) ----

using GroupSnapshotTest = GroupRestoreTest;

TEST_F(GroupSnapshotTest, FlagsReachTheirEventsAndDataComesBackOnlyFromThem) {
  startAgent({"--no-fsfreeze"});
  resync();
  RawProcess p = registerRaw("ib", 2);
  ASSERT_TRUE(waitRegistered(1));
  const Json entry = {{"name", "ib"}, {"pid", ::getpid()}, {"result", "done"}};

  // Stage one stops after PRESUSPEND: the host's barrier across the group comes next.
  Json r = drainRaw({&p}, {{"drained", 1}});
  ASSERT_EQ(r["ok"], true) << r.dump();
  EXPECT_GE(r["result"]["elapsed_ms"].get<int64_t>(), 0);
  Json drained = entry;
  drained["data"] = {{"drained", 1}};
  EXPECT_EQ(r["result"]["plugins"], Json::array({drained}));
  EXPECT_FALSE(p.in.next(Deadline::in(200ms))) << "an event before release";
  EXPECT_EQ(request("status")["result"]["state"], "drained");
  EXPECT_EQ(request("info")["result"]["state"], "drained");

  // Stage two: PRECHECKPOINT(release); its data comes back, not the drain's.
  uint64_t id = post("release", {{"deadline_ms", 5000}});
  Json e = p.nextEvent();
  EXPECT_EQ(e["event"], "PRECHECKPOINT");
  EXPECT_EQ(e["release"], true);
  EXPECT_FALSE(e.contains("connect_follows"));
  p.answer(e, "done", {{"released", true}});
  r = replyTo(id);
  ASSERT_EQ(r["ok"], true) << r.dump();
  EXPECT_GE(r["result"]["elapsed_ms"].get<int64_t>(), 0);
  Json released = entry;
  released["data"] = {{"released", true}};
  EXPECT_EQ(r["result"]["plugins"], Json::array({released}));
  EXPECT_EQ(request("status")["result"]["state"], "quiesced");

  id = post("thaw", {{"connect_follows", true}});
  e = p.nextEvent();
  EXPECT_EQ(e["event"], "RESUME");
  EXPECT_EQ(e["connect_follows"], true);
  EXPECT_FALSE(e.contains("release"));
  p.answer(e, "done", {{"qpn", 33}});
  r = replyTo(id);
  ASSERT_EQ(r["ok"], true) << r.dump();
  Json rejoined = entry;
  rejoined["data"] = {{"qpn", 33}};
  EXPECT_EQ(r["result"]["plugins"], Json::array({rejoined}));

  // Plain quiesce and thaw carry neither flag; data in their replies is ignored.
  id = post("quiesce", {{"deadline_ms", 5000}});
  for (const char* event : {"PRESUSPEND", "PRECHECKPOINT"}) {
    e = p.nextEvent();
    EXPECT_EQ(e["event"], event);
    EXPECT_FALSE(e.contains("release"));
    p.answer(e, "done", {{"stray", event}});
  }
  r = replyTo(id);
  ASSERT_EQ(r["ok"], true) << r.dump();
  EXPECT_EQ(r["result"]["plugins"], Json::array({entry}));
  id = post("thaw", Json::object());
  e = p.nextEvent();
  EXPECT_FALSE(e.contains("connect_follows"));
  p.answer(e, "done", Json::array({1}));  // not even checked
  r = replyTo(id);
  ASSERT_EQ(r["ok"], true) << r.dump();
  EXPECT_EQ(r["result"]["plugins"], Json::array({entry}));
}

TEST_F(GroupSnapshotTest, ReleaseNeedsStateDrainedAndQuiesceRefusesIt) {
  startAgent();  // fsfreeze on, with nothing to freeze
  resync();
  RawProcess p = registerRaw("ib", 2);
  ASSERT_TRUE(waitRegistered(1));
  const Json entry = {{"name", "ib"}, {"pid", ::getpid()}, {"result", "done"}};

  Json r = request("release", {{"deadline_ms", 5000}});
  EXPECT_EQ(r["error"]["code"], "wrong_state");
  EXPECT_EQ(r["error"]["message"], "release needs state drained (quiesce with release first), not idle");
  EXPECT_FALSE(p.in.next(Deadline::in(100ms))) << "an event for a refused release";

  ASSERT_EQ(drainRaw({&p})["ok"], true);
  for (const Json& args : {Json{{"deadline_ms", 5000}}, Json{{"deadline_ms", 5000}, {"release", true}}}) {
    r = request("quiesce", args);
    EXPECT_EQ(r["error"]["code"], "wrong_state") << args.dump();
    EXPECT_EQ(r["error"]["message"], "already drained by a quiesce with release; send release or thaw first");
  }
  // connect leaves the state as it is.
  uint64_t id = post("connect", {{"peers", {{"ib", Json::array()}}}});
  Json e = p.nextEvent();
  EXPECT_EQ(e["event"], "CONNECT");
  p.answer(e, "done");
  ASSERT_EQ(replyTo(id)["ok"], true);
  EXPECT_EQ(request("status")["result"]["state"], "drained");

  // release freezes last, after PRECHECKPOINT, as quiesce does.
  id = post("release", {{"deadline_ms", 5000}});
  e = p.nextEvent();
  EXPECT_EQ(e["event"], "PRECHECKPOINT");
  p.answer(e, "done");
  r = replyTo(id);
  ASSERT_EQ(r["ok"], true) << r.dump();
  EXPECT_EQ(r["result"]["plugins"],
            Json::array({entry, Json({{"name", "fsfreeze"}, {"pid", 0}, {"result", "not_mine"}})}));
  EXPECT_EQ(request("status")["result"]["state"], "quiesced");
  r = request("release", {{"deadline_ms", 5000}});
  EXPECT_EQ(r["error"]["code"], "wrong_state");
  EXPECT_EQ(r["error"]["message"], "release needs state drained (quiesce with release first), not quiesced");

  id = post("thaw", Json::object());
  expectPlainResume({&p});
  ASSERT_EQ(replyTo(id)["ok"], true);
  EXPECT_EQ(request("status")["result"]["state"], "idle");
}

TEST_F(GroupSnapshotTest, ThawInDrainedResumesEveryProcess) {
  auto [a, b] = startWithTwoIbProcesses();
  const int64_t pid = ::getpid();

  // Another member failed its drain: the host abandons the snapshot with a plain thaw.
  ASSERT_EQ(drainRaw({&a, &b})["ok"], true);
  uint64_t id = post("thaw", Json::object());
  expectPlainResume({&a, &b});
  Json r = replyTo(id);
  ASSERT_EQ(r["ok"], true) << r.dump();
  EXPECT_EQ(r["result"]["plugins"].size(), 2u);
  EXPECT_EQ(request("status")["result"]["state"], "idle");
  EXPECT_EQ(request("release", {{"deadline_ms", 5000}})["error"]["code"], "wrong_state");

  // Once some member released, the whole group reconnects: RESUME with connect_follows.
  ASSERT_EQ(drainRaw({&a, &b})["ok"], true);
  id = post("thaw", {{"connect_follows", true}});
  int qpn = 40;
  for (RawProcess* p : {&a, &b}) {
    Json e = p->nextEvent();
    EXPECT_EQ(e["event"], "RESUME");
    EXPECT_EQ(e["connect_follows"], true);
    EXPECT_FALSE(e.contains("release"));
    p->answer(e, "done", {{"qpn", ++qpn}});
  }
  r = replyTo(id);
  ASSERT_EQ(r["ok"], true) << r.dump();
  EXPECT_EQ(r["result"]["plugins"], Json::parse(R"([
      {"name":"ib","pid":)" + std::to_string(pid) + R"(,"result":"done","data":{"qpn":41}},
      {"name":"ib","pid":)" + std::to_string(pid) + R"(,"result":"done","data":{"qpn":42}}])"));
  EXPECT_EQ(request("status")["result"]["state"], "idle");
}

TEST_F(GroupSnapshotTest, AFailedOrLateReleaseRollsBackEveryDrainedProcess) {
  auto [a, b] = startWithTwoIbProcesses();
  const std::string pid = std::to_string(::getpid());

  ASSERT_EQ(drainRaw({&a, &b})["ok"], true);
  // One that registers after the drain takes no part in the release or its rollback.
  RawProcess late = registerRaw("ib", 2);
  ASSERT_TRUE(waitRegistered(3));
  uint64_t id = post("release", {{"deadline_ms", 5000}});
  Json ea = a.nextEvent(), eb = b.nextEvent();
  for (const Json* e : {&ea, &eb}) {
    EXPECT_EQ((*e)["event"], "PRECHECKPOINT");
    EXPECT_EQ((*e)["release"], true);
  }
  a.answer(ea, "done", {{"released", true}});
  b.answer(eb, "failed", nullptr, "ibv_close_device: Device or resource busy");
  expectPlainResume({&a, &b});
  Json r = replyTo(id);
  EXPECT_EQ(r["ok"], false) << r.dump();
  EXPECT_EQ(r["error"]["code"], "plugin_failed");
  EXPECT_EQ(r["error"]["message"], "plugin ib (pid " + pid +
                                       ") failed PRECHECKPOINT: ibv_close_device: Device or resource busy; "
                                       "rolled back");
  EXPECT_EQ(request("status")["result"]["state"], "idle");
  EXPECT_FALSE(late.in.next(Deadline::in(200ms))) << "the late process got an event";

  // Data that is not an object fails the release the same way.
  ASSERT_EQ(drainRaw({&a, &b, &late})["ok"], true);
  id = post("release", {{"deadline_ms", 5000}});
  ea = a.nextEvent();
  eb = b.nextEvent();
  Json el = late.nextEvent();
  a.answer(ea, "done");
  b.answer(eb, "done");
  late.answer(el, "done", "released");
  expectPlainResume({&a, &b, &late});
  r = replyTo(id);
  EXPECT_EQ(r["error"]["code"], "plugin_failed") << r.dump();
  EXPECT_EQ(r["error"]["message"],
            "plugin ib (pid " + pid + ") failed PRECHECKPOINT: published data is not a JSON object; rolled back");

  // The deadline: the silent one is named; the others are rolled back at once, and it
  // gets its RESUME once it answers.
  ASSERT_EQ(drainRaw({&a, &b, &late})["ok"], true);
  id = post("release", {{"deadline_ms", 300}});
  ea = a.nextEvent();
  eb = b.nextEvent();
  el = late.nextEvent();
  a.answer(ea, "done");
  late.answer(el, "done");
  expectPlainResume({&a, &late});
  r = replyTo(id);
  EXPECT_EQ(r["error"]["code"], "deadline") << r.dump();
  EXPECT_EQ(r["error"]["message"], "deadline of 300 ms passed waiting for PRECHECKPOINT from plugin ib (pid " +
                                       pid + "); rolled back");
  EXPECT_EQ(request("status")["result"]["state"], "idle");
  b.answer(eb, "done");
  expectPlainResume({&b});
}

TEST_F(GroupSnapshotTest, RollbackResumeCarriesNoFlagAndBadDataFailsTheQuiesce) {
  auto [a, b] = startWithTwoIbProcesses();
  const std::string pid = std::to_string(::getpid());

  uint64_t id = post("quiesce", {{"deadline_ms", 5000}, {"release", true}});
  Json ea = a.nextEvent(), eb = b.nextEvent();
  a.answer(ea, "done", {{"released", 1}});
  b.answer(eb, "done", Json::array({1}));
  for (RawProcess* p : {&a, &b}) {
    Json e = p->nextEvent();
    EXPECT_EQ(e["event"], "RESUME");
    EXPECT_FALSE(e.contains("connect_follows"));
    EXPECT_FALSE(e.contains("release"));
    p->answer(e, "done", {{"qpn", 1}});
  }
  Json r = replyTo(id);
  EXPECT_EQ(r["ok"], false) << r.dump();
  EXPECT_EQ(r["error"]["code"], "plugin_failed");
  EXPECT_EQ(r["error"]["message"], "plugin ib (pid " + pid +
                                       ") failed PRESUSPEND: published data is not a JSON object; rolled back");

  // Each at its bound, but together more than the drain's reply can carry: the quiesce
  // is rolled back rather than reported without them.
  Json big = {{"k", std::string(wire::kMaxPublishBytes - 8, 'y')}};
  id = post("quiesce", {{"deadline_ms", 5000}, {"release", true}});
  for (RawProcess* p : {&a, &b}) p->answer(p->nextEvent(), "done", big);
  expectPlainResume({&a, &b});
  r = replyTo(id);
  EXPECT_EQ(r["ok"], false) << r.dump().substr(0, 300);
  EXPECT_EQ(r["error"]["code"], "plugin_failed");
  const std::string msg = r["error"]["message"];
  EXPECT_TRUE(msg.starts_with("published data too large: the reply would be 656")) << msg;
  EXPECT_TRUE(msg.ends_with("line limit (data from 2 processes); rolled back")) << msg;
  EXPECT_EQ(request("status")["result"]["state"], "idle");
}

// This test process registers through libvmckpt itself.
struct InProcess {
  std::mutex m;
  std::vector<std::string> seen;
  bool notMine = false;
};

vmckpt_result inProcessHook(void* ctx, vmckpt_event ev, const char* map, char*, size_t) {
  auto* p = static_cast<InProcess*>(ctx);
  std::lock_guard l(p->m);
  p->seen.push_back(std::string(vmckpt_event_name(ev)) + (map ? std::string(" ") + map : ""));
  return p->notMine ? VMCKPT_NOT_MINE : VMCKPT_DONE;
}

// Through libvmckpt: a RESTART hook publishes when CONNECT follows; CONNECT gets peers.
struct Publisher {
  std::mutex m;
  std::vector<std::string> seen;
  int publishRc = 1;
};

vmckpt_result publishingHook(void* ctx, vmckpt_event ev, const char* arg, char*, size_t) {
  auto* p = static_cast<Publisher*>(ctx);
  std::lock_guard l(p->m);
  p->seen.push_back(std::string(vmckpt_event_name(ev)) + " " + std::to_string(vmckpt_connect_follows()) +
                    (arg ? std::string(" ") + arg : ""));
  if (ev == VMCKPT_RESTART && vmckpt_connect_follows()) p->publishRc = vmckpt_publish(R"({"qpn":99})");
  return VMCKPT_DONE;
}

TEST_F(GuestAgentTest, LibvmckptPublishesAndConnects) {
  startAgent({"--no-fsfreeze"});
  resync();
  Publisher state;
  ASSERT_EQ(registerHere("ib", &publishingHook, &state), 0);

  Json r = request("restored", {{"connect_follows", true}});
  ASSERT_EQ(r["ok"], true) << r.dump();
  EXPECT_EQ(r["result"]["plugins"][0]["data"], Json({{"qpn", 99}}));
  r = request("connect", {{"peers", {{"ib", Json::parse(R"([{"qpn":99},{"qpn":100}])")}}}});
  ASSERT_EQ(r["ok"], true) << r.dump();
  EXPECT_EQ(r["result"]["plugins"][0]["result"], "done");
  r = request("restored");
  ASSERT_EQ(r["ok"], true) << r.dump();
  EXPECT_FALSE(r["result"]["plugins"][0].contains("data"));
  {
    std::lock_guard l(state.m);
    EXPECT_EQ(state.publishRc, 0);
    EXPECT_EQ(state.seen, (std::vector<std::string>{"RESTART 1 {}", R"(CONNECT 0 [{"qpn":99},{"qpn":100}])",
                                                    "RESTART 0 {}"}));
  }
  vmckpt_unregister();
  EXPECT_TRUE(waitRegistered(0));
}

// Through libvmckpt: the drain (PRESUSPEND) and the release (PRECHECKPOINT) of a group
// snapshot both say release and may publish; the RESUME hook of a thaw that CONNECT
// follows rebuilds and publishes.
struct Releaser {
  std::mutex m;
  std::vector<std::string> seen;  // "EVENT connect_follows release publish-rc"
  bool failPrecheckpoint = false;

  std::vector<std::string> events() {
    std::lock_guard l(m);
    return seen;
  }
};

vmckpt_result releasingHook(void* ctx, vmckpt_event ev, const char*, char* reason, size_t reasonLen) {
  auto* p = static_cast<Releaser*>(ctx);
  std::lock_guard l(p->m);
  int rc = 1;
  if (ev == VMCKPT_PRESUSPEND && vmckpt_release_requested()) rc = vmckpt_publish(R"({"drained":1})");
  else if (ev == VMCKPT_PRECHECKPOINT) rc = vmckpt_publish(R"({"released":true})");  // EPERM without release
  else if (ev == VMCKPT_RESUME) rc = vmckpt_publish(R"({"qpn":7})");  // EPERM without connect_follows
  p->seen.push_back(std::string(vmckpt_event_name(ev)) + " " + std::to_string(vmckpt_connect_follows()) + " " +
                    std::to_string(vmckpt_release_requested()) + " " + std::to_string(rc));
  if (ev == VMCKPT_PRECHECKPOINT && p->failPrecheckpoint) {
    std::snprintf(reason, reasonLen, "a device fd is still open");
    return VMCKPT_FAILED;
  }
  return VMCKPT_DONE;
}

TEST_F(GuestAgentTest, LibvmckptReleasesAndRejoinsInAGroupSnapshot) {
  startAgent({"--no-fsfreeze"});
  resync();
  Releaser state;
  ASSERT_EQ(registerHere("ib", &releasingHook, &state), 0);

  // The group snapshot: quiesce{release} ... the host's barrier ... release -> capture ->
  // thaw{connect_follows} -> connect -> thaw.
  Json r = request("quiesce", {{"deadline_ms", 5000}, {"release", true}});
  ASSERT_EQ(r["ok"], true) << r.dump();
  EXPECT_EQ(r["result"]["plugins"][0]["data"], Json({{"drained", 1}}));
  EXPECT_EQ(request("status")["result"]["state"], "drained");
  EXPECT_EQ(state.events(), std::vector<std::string>{"PRESUSPEND 0 1 0"});  // no PRECHECKPOINT yet
  r = request("release", {{"deadline_ms", 5000}});
  ASSERT_EQ(r["ok"], true) << r.dump();
  EXPECT_EQ(r["result"]["plugins"][0]["data"], Json({{"released", true}}));
  EXPECT_EQ(request("status")["result"]["state"], "quiesced");
  r = request("thaw", {{"connect_follows", true}});
  ASSERT_EQ(r["ok"], true) << r.dump();
  EXPECT_EQ(r["result"]["plugins"][0]["data"], Json({{"qpn", 7}}));
  r = request("connect", {{"peers", {{"ib", Json::parse(R"([{"qpn":7}])")}}}});
  ASSERT_EQ(r["ok"], true) << r.dump();
  r = request("thaw");
  ASSERT_EQ(r["ok"], true) << r.dump();
  EXPECT_FALSE(r["result"]["plugins"][0].contains("data"));
  // A plain quiesce and thaw: neither flag, no data.
  r = request("quiesce", {{"deadline_ms", 5000}});
  ASSERT_EQ(r["ok"], true) << r.dump();
  EXPECT_FALSE(r["result"]["plugins"][0].contains("data"));
  r = request("thaw");
  ASSERT_EQ(r["ok"], true) << r.dump();
  EXPECT_FALSE(r["result"]["plugins"][0].contains("data"));
  // A group that failed between the stages: thaw in drained resumes, state idle.
  ASSERT_EQ(request("quiesce", {{"deadline_ms", 5000}, {"release", true}})["ok"], true);
  r = request("thaw");
  ASSERT_EQ(r["ok"], true) << r.dump();
  EXPECT_EQ(request("status")["result"]["state"], "idle");
  // A failed PRECHECKPOINT in release: rolled back with a plain RESUME, state idle.
  {
    std::lock_guard l(state.m);
    state.failPrecheckpoint = true;
  }
  ASSERT_EQ(request("quiesce", {{"deadline_ms", 5000}, {"release", true}})["ok"], true);
  r = request("release", {{"deadline_ms", 5000}});
  EXPECT_EQ(r["error"]["code"], "plugin_failed") << r.dump();
  EXPECT_EQ(r["error"]["message"], "plugin ib (pid " + std::to_string(::getpid()) +
                                       ") failed PRECHECKPOINT: a device fd is still open; rolled back");
  EXPECT_EQ(request("status")["result"]["state"], "idle");
  // thaw{connect_follows} in idle works too.
  r = request("thaw", {{"connect_follows", true}});
  ASSERT_EQ(r["ok"], true) << r.dump();
  EXPECT_EQ(r["result"]["plugins"][0]["data"], Json({{"qpn", 7}}));
  EXPECT_EQ(state.events(),
            (std::vector<std::string>{"PRESUSPEND 0 1 0", "PRECHECKPOINT 0 1 0", "RESUME 1 0 0", "CONNECT 0 0 1",
                                      "RESUME 0 0 -1",                                                  // group
                                      "PRESUSPEND 0 0 1", "PRECHECKPOINT 0 0 -1", "RESUME 0 0 -1",     // plain
                                      "PRESUSPEND 0 1 0", "RESUME 0 0 -1",                             // abandoned
                                      "PRESUSPEND 0 1 0", "PRECHECKPOINT 0 1 0", "RESUME 0 0 -1",      // failed
                                      "RESUME 1 0 0"}));
  vmckpt_unregister();
  EXPECT_TRUE(waitRegistered(0));
}

TEST_F(GuestAgentTest, LibvmckptInThisProcess) {
  startAgent({"--no-fsfreeze"});
  resync();
  EXPECT_EQ(request("info")["result"]["plugins"], Json::array());
  InProcess state;
  state.notMine = true;
  ASSERT_EQ(registerHere("inproc", &inProcessHook, &state), 0);

  Json q = request("quiesce", {{"deadline_ms", 5000}});
  ASSERT_EQ(q["ok"], true) << q.dump();
  EXPECT_EQ(q["result"]["plugins"], Json::parse(R"([{"name":"inproc","pid":)" + std::to_string(::getpid()) +
                                                R"(,"result":"not_mine"}])"));
  Json r = request("restored", {{"device_map", {{"gpu0", {{"uuid", "GPU-1"}}}}}});
  ASSERT_EQ(r["ok"], true) << r.dump();
  {
    std::lock_guard l(state.m);
    EXPECT_EQ(state.seen, (std::vector<std::string>{"PRESUSPEND", "PRECHECKPOINT",
                                                    R"(RESTART {"gpu0":{"uuid":"GPU-1"}})"}));
  }
  vmckpt_unregister();
  EXPECT_TRUE(waitRegistered(0));
}

// --- fsfreeze for real, on a private loop-mounted filesystem (root and loop devices) ---

// Whether the filesystem at `dir` is frozen: FIFREEZE on a frozen one fails with EBUSY
// (and one that was not frozen is thawed again at once).
bool isFrozen(const std::string& dir) {
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) return false;
  if (::ioctl(fd.get(), FIFREEZE, 0) == 0) {
    (void)::ioctl(fd.get(), FITHAW, 0);
    return false;
  }
  return errno == EBUSY;
}

class GuestAgentFreezeTest : public GuestAgentTest {
 protected:
  void SetUp() override {
    GuestAgentTest::SetUp();
    if (auto why = test::LoopFs::unavailable("xfs")) GTEST_SKIP() << "no loop xfs here: " << *why;
    auto fs = test::LoopFs::create("xfs", 512ull << 20);
    ASSERT_TRUE(fs.has_value()) << fs.error().message();
    fs_ = std::move(*fs);
    // The agent sees only this filesystem, never the machine's own.
    std::ofstream(mounts_) << "proc /proc proc rw 0 0\n"
                           << fs_->device() << " " << fs_->mountPoint() << " xfs rw,relatime 0 0\n";
  }
  void TearDown() override {
    GuestAgentTest::TearDown();
    if (fs_) {
      EXPECT_FALSE(isFrozen(fs_->mountPoint())) << "left frozen";
      UniqueFd fd(::open(fs_->mountPoint().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
      if (fd) (void)::ioctl(fd.get(), FITHAW, 0);  // never unmount a frozen filesystem
    }
  }
  std::unique_ptr<test::LoopFs> fs_;
};

TEST_F(GuestAgentFreezeTest, QuiesceFreezesLastAndThawThawsFirst) {
  startAgent();
  resync();
  Demo demo(agentSocket_, {});
  ASSERT_TRUE(demo.waitFor("registered"));
  ASSERT_TRUE(waitRegistered(1));
  Json q = request("quiesce", {{"deadline_ms", 10000}});
  ASSERT_EQ(q["ok"], true) << q.dump();
  EXPECT_EQ(q["result"]["plugins"][1], Json({{"name", "fsfreeze"}, {"pid", 0}, {"result", "done"}}));
  EXPECT_TRUE(isFrozen(fs_->mountPoint()));
  Json t = request("thaw");
  ASSERT_EQ(t["ok"], true) << t.dump();
  EXPECT_EQ(t["result"]["plugins"][0], Json({{"name", "fsfreeze"}, {"pid", 0}, {"result", "done"}}));
  EXPECT_FALSE(isFrozen(fs_->mountPoint()));

  // restored thaws too (the snapshot was taken frozen).
  ASSERT_EQ(request("quiesce", {{"deadline_ms", 10000}})["ok"], true);
  EXPECT_TRUE(isFrozen(fs_->mountPoint()));
  ASSERT_EQ(request("restored")["ok"], true);
  EXPECT_FALSE(isFrozen(fs_->mountPoint()));
  // Nothing frozen: thaw says not_mine for fsfreeze.
  EXPECT_EQ(request("thaw")["result"]["plugins"][0]["result"], "not_mine");
}

TEST_F(GuestAgentFreezeTest, FailedQuiesceNeverFreezes) {
  startAgent();
  resync();
  Demo bad(agentSocket_, {"--fail-presuspend"});
  ASSERT_TRUE(bad.waitFor("registered"));
  ASSERT_TRUE(waitRegistered(1));
  EXPECT_EQ(request("quiesce", {{"deadline_ms", 10000}})["error"]["code"], "plugin_failed");
  EXPECT_FALSE(isFrozen(fs_->mountPoint()));
}

TEST_F(GuestAgentFreezeTest, AlreadyFrozenIsSkippedNotFailed) {
  startAgent();
  resync();
  UniqueFd fd(::open(fs_->mountPoint().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  ASSERT_EQ(::ioctl(fd.get(), FIFREEZE, 0), 0);
  Json q = request("quiesce", {{"deadline_ms", 10000}});
  EXPECT_EQ(q["ok"], true) << q.dump();
  EXPECT_EQ(q["result"]["plugins"][0]["result"], "not_mine");
  EXPECT_EQ(request("thaw")["ok"], true);  // thaws it (fsfreeze thaws every candidate)
  EXPECT_FALSE(isFrozen(fs_->mountPoint()));
}

TEST_F(GuestAgentFreezeTest, SigtermWhileQuiescedThaws) {
  startAgent();
  resync();
  ASSERT_EQ(request("quiesce", {{"deadline_ms", 10000}})["ok"], true);
  EXPECT_TRUE(isFrozen(fs_->mountPoint()));
  agent_->signal(SIGTERM);
  auto st = agent_->wait(Deadline::in(5s));
  ASSERT_TRUE(st.has_value());
  EXPECT_TRUE(st->success());
  EXPECT_FALSE(isFrozen(fs_->mountPoint()));
}

TEST_F(GuestAgentFreezeTest, QuiesceWithReleaseFreezesOnlyAtRelease) {
  startAgent();
  resync();
  RawProcess p = registerRaw("ib", 2);
  ASSERT_TRUE(waitRegistered(1));
  ASSERT_EQ(drainRaw({&p})["ok"], true);
  EXPECT_FALSE(isFrozen(fs_->mountPoint())) << "frozen before release";
  uint64_t id = post("release", {{"deadline_ms", 10000}});
  p.answer(p.nextEvent(), "done");  // PRECHECKPOINT
  Json r = replyTo(id);
  ASSERT_EQ(r["ok"], true) << r.dump();
  EXPECT_EQ(r["result"]["plugins"][1], Json({{"name", "fsfreeze"}, {"pid", 0}, {"result", "done"}}));
  EXPECT_TRUE(isFrozen(fs_->mountPoint()));
  id = post("thaw", Json::object());
  expectPlainResume({&p});
  ASSERT_EQ(replyTo(id)["ok"], true);
  EXPECT_FALSE(isFrozen(fs_->mountPoint()));

  // SIGTERM while drained: a clean exit, nothing frozen, nothing sent.
  ASSERT_EQ(drainRaw({&p})["ok"], true);
  agent_->signal(SIGTERM);
  auto st = agent_->wait(Deadline::in(5s));
  ASSERT_TRUE(st.has_value());
  EXPECT_TRUE(st->success());
  EXPECT_FALSE(isFrozen(fs_->mountPoint()));
  EXPECT_FALSE(p.in.next(Deadline::in(200ms))) << "an event at exit";
}

TEST_F(GuestAgentFreezeTest, ReleaseWhosePublishedDataDoesNotFitThawsWhatItFroze) {
  startAgent();
  resync();
  RawProcess a = registerRaw("ib", 2), b = registerRaw("ib", 2);
  ASSERT_TRUE(waitRegistered(2));
  ASSERT_EQ(drainRaw({&a, &b})["ok"], true);
  uint64_t id = post("release", {{"deadline_ms", 10000}});
  Json big = {{"k", std::string(wire::kMaxPublishBytes - 8, 'y')}};
  for (RawProcess* p : {&a, &b}) p->answer(p->nextEvent(), "done", big);  // PRECHECKPOINT
  // Frozen by now; the reply does not fit, so the rollback thaws and RESUMEs.
  expectPlainResume({&a, &b}, Deadline::in(10s));
  Json r = replyTo(id);
  EXPECT_EQ(r["error"]["code"], "plugin_failed") << r.dump().substr(0, 300);
  EXPECT_FALSE(isFrozen(fs_->mountPoint()));
  EXPECT_EQ(request("status")["result"]["state"], "idle");
}

TEST(FreezeJob, FreezesAndCancelUndoes) {
  if (auto why = test::LoopFs::unavailable("xfs")) GTEST_SKIP() << "no loop xfs here: " << *why;
  auto fs = test::LoopFs::create("xfs", 512ull << 20);
  ASSERT_TRUE(fs.has_value()) << fs.error().message();
  std::vector<agent::FreezeTarget> targets = {{(*fs)->mountPoint(), (*fs)->device()}};

  auto job = agent::FreezeJob::start(targets);
  ASSERT_TRUE(job.has_value());
  auto out = (*job)->take();
  EXPECT_TRUE(out.error.empty()) << out.error;
  EXPECT_EQ(out.frozen, std::vector<std::string>{(*fs)->mountPoint()});
  EXPECT_TRUE(isFrozen((*fs)->mountPoint()));
  auto thawed = agent::thawTargets(targets);
  EXPECT_EQ(thawed.thawed, std::vector<std::string>{(*fs)->mountPoint()});
  EXPECT_TRUE(thawed.errors.empty());
  EXPECT_FALSE(isFrozen((*fs)->mountPoint()));
  EXPECT_TRUE(agent::thawTargets(targets).thawed.empty());  // not frozen: left alone

  // Cancelled at once: whatever it froze is thawed before it reports.
  auto job2 = agent::FreezeJob::start(targets);
  ASSERT_TRUE(job2.has_value());
  (*job2)->cancel();
  auto out2 = (*job2)->take();
  EXPECT_TRUE(out2.cancelled);
  EXPECT_TRUE(out2.frozen.empty());
  EXPECT_FALSE(isFrozen((*fs)->mountPoint()));
}

}  // namespace
