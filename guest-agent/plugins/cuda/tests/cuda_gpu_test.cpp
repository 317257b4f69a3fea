// The CUDA helper and the agent's CUDA step on a real GPU. HelperCli needs none: usage
// errors, and a clear error where no driver is. GpuAgent needs one (SKIP otherwise): the
// real vmckpt-agent, its host channel played by this test, checkpoints the project's CUDA
// workloads by pid at random moments; while checkpointed they hold no NVIDIA device file
// and the driver says so; after thaw they finish with the checksum of an uninterrupted run.
// The binaries are the build's, or those in $VMCKPT_CUDA_TEST_BIN_DIR (a copy elsewhere).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <thread>

#include "common/child_process.hpp"
#include "common/deadline.hpp"
#include "common/temp_dir.hpp"
#include "common/unique_fd.hpp"
#include "nvidia_fds.hpp"

using namespace vmckpt;
using namespace std::chrono_literals;
using Json = nlohmann::json;

namespace {

std::string bin(const char* built, const char* name) {
  if (const char* dir = std::getenv("VMCKPT_CUDA_TEST_BIN_DIR")) return std::string(dir) + "/" + name;
  return built;
}
std::string agentBin() { return bin(VMCKPT_AGENT_BIN, "vmckpt-agent"); }
std::string helperBin() { return bin(VMCKPT_CUDA_HELPER_BIN, "vmckpt-cuda-ckpt"); }
std::string workloadBin() { return bin(VMCKPT_CUDA_WORKLOAD_BIN, "vmckpt-cuda-workload"); }
std::string interposerLib() { return bin(VMCKPT_CUDA_INTERPOSER_LIB, "libvmckpt-cuda.so"); }

struct HelperRun {
  int code = -1;
  Json out;
  std::string err;
};
HelperRun helper(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {helperBin()};
  argv.insert(argv.end(), args.begin(), args.end());
  auto r = runCommand(argv, Deadline::in(60s));
  HelperRun h;
  if (!r) return h;
  h.code = r->status.code;
  h.err = r->err;
  h.out = Json::parse(r->out.substr(0, r->out.find('\n')), nullptr, false);
  return h;
}

// Lines from an fd, each read bounded by a deadline.
class Lines {
 public:
  explicit Lines(int fd) : fd_(fd) {}
  std::optional<std::string> next(Deadline d) {
    for (;;) {
      if (auto nl = buf_.find('\n'); nl != std::string::npos) {
        std::string l = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        return l;
      }
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, d.pollTimeoutMs()) <= 0) return std::nullopt;
      char tmp[4096];
      ssize_t n = ::read(fd_, tmp, sizeof tmp);
      if (n <= 0) return std::nullopt;
      buf_.append(tmp, static_cast<size_t>(n));
    }
  }

 private:
  int fd_;
  std::string buf_;
};

// One vmckpt-cuda-workload process.
class Workload {
 public:
  explicit Workload(std::vector<std::string> args, std::vector<std::string> env = {}) {
    SpawnOptions o;
    o.argv = {workloadBin()};
    o.argv.insert(o.argv.end(), args.begin(), args.end());
    if (!env.empty()) {  // ours first; the inherited ones we do not set after
      std::vector<std::string> all = env;
      for (char** e = environ; *e; ++e) {
        std::string_view kv = *e;
        std::string_view key = kv.substr(0, kv.find('='));
        bool ours = false;
        for (const auto& mine : env) ours = ours || std::string_view(mine).substr(0, mine.find('=')) == key;
        if (!ours) all.emplace_back(kv);
      }
      o.env = all;
    }
    o.stdoutTo = Redirect::pipe();
    auto c = ChildProcess::spawn(o);
    EXPECT_TRUE(c.has_value()) << (c ? "" : c.error().message());
    if (c) {
      child_.emplace(std::move(*c));
      lines_.emplace(child_->stdoutFd());
    }
  }
  pid_t pid() const { return child_ ? child_->pid() : -1; }
  // Waits for a line starting with `prefix`; returns it.
  std::optional<std::string> waitFor(const std::string& prefix, Deadline d) {
    if (!lines_) return std::nullopt;
    while (auto l = lines_->next(d)) {
      last_ = *l;
      if (l->starts_with("error")) return *l;
      if (l->starts_with(prefix)) return *l;
    }
    return std::nullopt;
  }
  // The checksum line at the end (or whatever it said instead).
  std::string finish(Deadline d) {
    auto l = waitFor("checksum", d);
    if (child_) (void)child_->wait(Deadline::in(10s));
    return l ? *l : "no checksum (last line: " + last_ + ")";
  }

 private:
  std::optional<ChildProcess> child_;
  std::optional<Lines> lines_;
  std::string last_;
};

std::string uninterrupted(const std::vector<std::string>& args, std::vector<std::string> env = {}) {
  Workload w(args, std::move(env));
  return w.finish(Deadline::in(300s));
}

// vmckpt-agent with its host channel on a socket this test listens on.
class Agent {
 public:
  explicit Agent(const std::string& dir, std::vector<std::string> extra = {}) {
    std::string hostSocket = dir + "/host.sock";
    listen_.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::snprintf(a.sun_path, sizeof a.sun_path, "%s", hostSocket.c_str());
    EXPECT_EQ(::bind(listen_.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    EXPECT_EQ(::listen(listen_.get(), 1), 0);
    SpawnOptions o;
    o.argv = {agentBin(), "--port-socket", hostSocket, "--socket", dir + "/agent.sock", "--no-fsfreeze",
              "--cuda-helper", helperBin()};
    o.argv.insert(o.argv.end(), extra.begin(), extra.end());
    auto c = ChildProcess::spawn(o);
    EXPECT_TRUE(c.has_value());
    if (c) child_.emplace(std::move(*c));
    pollfd p{listen_.get(), POLLIN, 0};
    EXPECT_EQ(::poll(&p, 1, 10000), 1) << "the agent did not connect";
    host_.reset(::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    lines_.emplace(host_.get());
  }
  Json request(const std::string& cmd, Json args, Deadline d = Deadline::in(120s)) {
    int id = ++lastId_;
    std::string line = Json({{"id", id}, {"cmd", cmd}, {"args", args}}).dump() + "\n";
    EXPECT_EQ(::write(host_.get(), line.data(), line.size()), static_cast<ssize_t>(line.size()));
    while (auto l = lines_->next(d)) {
      auto j = Json::parse(*l, nullptr, false);
      if (j.is_object() && j["id"] == id) return j;
    }
    return {{"ok", false}, {"error", {{"message", "no reply to " + cmd}}}};
  }

 private:
  UniqueFd listen_, host_;
  std::optional<ChildProcess> child_;
  std::optional<Lines> lines_;
  int lastId_ = 0;
};

// The plugins[] entry named cuda.
Json cudaEntry(const Json& reply) {
  for (const auto& p : reply["result"]["plugins"])
    if (p["name"] == "cuda") return p;
  return nullptr;
}

std::string gpuOrSkipReason() {
  auto h = helper({"gpus"});
  if (h.code == 0 && h.out.is_object() && !h.out["gpus"].empty()) return {};
  return h.out.is_object() && h.out.contains("error") ? h.out["error"].get<std::string>()
                                                      : "vmckpt-cuda-ckpt gpus: " + h.err;
}

std::vector<double> field(const Json& entry, const char* key) {
  std::vector<double> v;
  for (const auto& p : entry["processes"]) v.push_back(p[key].get<double>());
  return v;
}

}  // namespace

TEST(HelperCli, UsageErrorsExitTwo) {
  EXPECT_EQ(helper({}).code, 2);
  EXPECT_EQ(helper({"frobnicate"}).code, 2);
  EXPECT_EQ(helper({"checkpoint"}).code, 2);                   // no pid
  EXPECT_EQ(helper({"checkpoint", "12x"}).code, 2);            // not a pid
  EXPECT_EQ(helper({"checkpoint", "--gpu", "same", "1"}).code, 2);  // restore's option
  auto bad = helper({"restore", "--gpu", "0000:65:00.0", "1"});
  EXPECT_EQ(bad.code, 2);
  EXPECT_NE(bad.err.find("GPU UUID"), std::string::npos) << bad.err;
}

TEST(HelperCli, SaysWhyWithoutADriverOrLists) {
  auto h = helper({"gpus"});
  ASSERT_TRUE(h.out.is_object()) << h.err;
  if (h.code == 0) {
    EXPECT_FALSE(h.out["gpus"].empty());
    EXPECT_GE(h.out["driver_version"].get<int>(), 12080);
  } else {
    EXPECT_EQ(h.code, 1);
    EXPECT_EQ(h.out["ok"], false);
    std::string e = h.out["error"];
    EXPECT_TRUE(e.find("no CUDA driver") != std::string::npos || e.find("cuInit") != std::string::npos ||
                e.find("too old") != std::string::npos)
        << e;
  }
}

TEST(GpuAgent, CheckpointsTwoWorkloadsTenTimesAtRandomMoments) {
  if (auto why = gpuOrSkipReason(); !why.empty()) GTEST_SKIP() << "no GPU: " << why;
  const std::vector<std::string> big = {"--mib", "1024", "--streams", "4", "--rounds", "600", "--sleep-ms", "10"};
  const std::vector<std::string> small = {"--mib", "128", "--streams", "2", "--rounds", "800", "--sleep-ms", "10"};
  std::string wantBig = uninterrupted(big), wantSmall = uninterrupted(small);
  ASSERT_TRUE(wantBig.starts_with("checksum")) << wantBig;
  ASSERT_TRUE(wantSmall.starts_with("checksum")) << wantSmall;

  TempDir dir("vmckpt-cuda-test");
  Agent agent(dir.path());
  Workload a(big), b(small);
  ASSERT_TRUE(a.waitFor("ready", Deadline::in(60s)));
  ASSERT_TRUE(b.waitFor("ready", Deadline::in(60s)));
  std::mt19937 rng(std::random_device{}());
  std::uniform_int_distribution<int> gap(50, 600);
  std::vector<double> lockMs, ckptMs, restoreMs;
  for (int cycle = 0; cycle < 10; ++cycle) {
    std::this_thread::sleep_for(std::chrono::milliseconds(gap(rng)));
    Json q = agent.request("quiesce", {{"deadline_ms", 30000}});
    ASSERT_EQ(q["ok"], true) << "cycle " << cycle << ": " << q.dump();
    Json c = cudaEntry(q);
    ASSERT_EQ(c["result"], "done") << q.dump();
    ASSERT_EQ(c["processes"].size(), 2u) << q.dump();
    for (pid_t pid : {a.pid(), b.pid()}) {
      EXPECT_TRUE(cuda::nvidiaFilesOf(pid).empty()) << "cycle " << cycle << ": pid " << pid << " holds NVIDIA files";
      auto st = helper({"state", std::to_string(pid)});
      EXPECT_EQ(st.out["processes"][0]["state"], "checkpointed") << st.out.dump();
    }
    auto l = field(c, "lock_ms"), k = field(c, "checkpoint_ms");
    lockMs.insert(lockMs.end(), l.begin(), l.end());
    ckptMs.insert(ckptMs.end(), k.begin(), k.end());
    Json t = agent.request("thaw", {{"deadline_ms", 30000}});
    ASSERT_EQ(t["ok"], true) << "cycle " << cycle << ": " << t.dump();
    Json r = cudaEntry(t);
    ASSERT_EQ(r["result"], "done") << t.dump();
    auto rs = field(r, "restore_ms");
    restoreMs.insert(restoreMs.end(), rs.begin(), rs.end());
    for (pid_t pid : {a.pid(), b.pid()}) EXPECT_FALSE(cuda::nvidiaFilesOf(pid).empty());
  }
  EXPECT_EQ(a.finish(Deadline::in(300s)), wantBig);
  EXPECT_EQ(b.finish(Deadline::in(300s)), wantSmall);
  std::sort(ckptMs.begin(), ckptMs.end());
  std::sort(restoreMs.begin(), restoreMs.end());
  std::sort(lockMs.begin(), lockMs.end());
  std::printf("per-process medians over %zu checkpoints: lock %.1f ms, checkpoint %.1f ms, restore %.1f ms\n",
              ckptMs.size(), lockMs[lockMs.size() / 2], ckptMs[ckptMs.size() / 2], restoreMs[restoreMs.size() / 2]);
}

TEST(GpuAgent, AHolderTheDriverCannotCheckpointFailsTheQuiesceAndNothingStaysLocked) {
  if (auto why = gpuOrSkipReason(); !why.empty()) GTEST_SKIP() << "no GPU: " << why;
  const std::vector<std::string> args = {"--mib", "256", "--streams", "2", "--rounds", "300", "--sleep-ms", "10"};
  std::string want = uninterrupted(args);
  TempDir dir("vmckpt-cuda-test");
  Agent agent(dir.path());
  Workload w(args);
  ASSERT_TRUE(w.waitFor("ready", Deadline::in(60s)));
  // A process holding /dev/nvidiactl without being a CUDA process (as an NVML user or a
  // persistence daemon would): the GPU could not be unplugged.
  SpawnOptions o;
  o.argv = {"/bin/sh", "-c", "exec 7</dev/nvidiactl; exec sleep 60"};
  auto holder = ChildProcess::spawn(o);
  ASSERT_TRUE(holder.has_value());
  for (int i = 0; i < 100 && cuda::nvidiaFilesOf(holder->pid()).empty(); ++i) std::this_thread::sleep_for(20ms);
  Json q = agent.request("quiesce", {{"deadline_ms", 30000}});
  ASSERT_EQ(q["ok"], false) << q.dump();
  std::string msg = q["error"]["message"];
  EXPECT_NE(msg.find("cuda: "), std::string::npos) << msg;
  EXPECT_NE(msg.find("pid " + std::to_string(holder->pid())), std::string::npos) << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos);
  auto st = helper({"state", std::to_string(w.pid())});
  EXPECT_EQ(st.out["processes"][0]["state"], "running") << st.out.dump();
  holder->kill();
  // Without it, the next quiesce works and the workload still ends right.
  Json q2 = agent.request("quiesce", {{"deadline_ms", 30000}});
  ASSERT_EQ(q2["ok"], true) << q2.dump();
  Json t = agent.request("thaw", {{"deadline_ms", 30000}});
  ASSERT_EQ(t["ok"], true) << t.dump();
  EXPECT_EQ(w.finish(Deadline::in(300s)), want);
}

TEST(GpuAgent, RestoredOntoTheGpuTheDeviceMapNames) {
  if (auto why = gpuOrSkipReason(); !why.empty()) GTEST_SKIP() << "no GPU: " << why;
  auto g = helper({"gpus"});
  std::string uuid = g.out["gpus"][0];
  const std::vector<std::string> args = {"--mib", "512", "--streams", "4", "--rounds", "300", "--sleep-ms", "10"};
  std::string want = uninterrupted(args);
  TempDir dir("vmckpt-cuda-test");
  Agent agent(dir.path());
  Workload w(args);
  ASSERT_TRUE(w.waitFor("round 20", Deadline::in(60s)));
  ASSERT_EQ(agent.request("quiesce", {{"deadline_ms", 30000}})["ok"], true);
  // A GPU that is not there: the restore fails, says so, and the processes stay
  // checkpointed for a later try.
  Json bad = agent.request("restored", {{"device_map", {{"gpu", "GPU-00000000-0000-0000-0000-000000000001"}}},
                                        {"deadline_ms", 30000}});
  EXPECT_EQ(bad["ok"], false) << bad.dump();
  EXPECT_NE(bad.dump().find("cuda: "), std::string::npos) << bad.dump();
  EXPECT_EQ(helper({"state", std::to_string(w.pid())}).out["processes"][0]["state"], "checkpointed");
  // The GPU pairs path with this machine's one GPU named.
  Json ok = agent.request("restored", {{"device_map", {{"gpu", uuid}}}, {"deadline_ms", 30000}});
  ASSERT_EQ(ok["ok"], true) << ok.dump();
  EXPECT_EQ(cudaEntry(ok)["result"], "done");
  EXPECT_EQ(w.finish(Deadline::in(300s)), want);
}

// Managed memory: the driver's checkpoint refuses it, so without the interposer the
// quiesce fails with the driver's reason; with libvmckpt-cuda.so preloaded and
// VMCKPT_CUDA_UVM=refuse it fails with the interposer's; either way the workload goes on
// unharmed. By default the interposer parks the managed ranges: ten quiesce/thaw cycles
// at random moments, each checkpointing the process (no NVIDIA file open), and the run
// ends with the checksum of an uninterrupted plain run, whose managed memory was the
// driver's all along.
TEST(GpuAgent, ManagedMemoryIsParkedTenTimesOrRefusedUnharmed) {
  if (auto why = gpuOrSkipReason(); !why.empty()) GTEST_SKIP() << "no GPU: " << why;
  const std::vector<std::string> args = {"--managed", "--mib", "64", "--streams", "4", "--rounds", "400",
                                         "--sleep-ms", "10"};
  std::string want = uninterrupted(args);
  ASSERT_TRUE(want.starts_with("checksum")) << want;
  TempDir dir("vmckpt-cuda-test");
  Agent agent(dir.path());
  const std::string socketEnv = "VMCKPT_AGENT_SOCKET=" + dir.path() + "/agent.sock";
  {
    Workload plain(args);
    ASSERT_TRUE(plain.waitFor("round 5", Deadline::in(60s)));
    Json q = agent.request("quiesce", {{"deadline_ms", 30000}});
    ASSERT_EQ(q["ok"], false) << q.dump();
    EXPECT_NE(q.dump().find("CUDA_ERROR_NOT_SUPPORTED"), std::string::npos) << q.dump();
    EXPECT_EQ(plain.finish(Deadline::in(300s)), want);
  }
  {
    Workload refused(args, {"LD_PRELOAD=" + interposerLib(), socketEnv, "VMCKPT_CUDA_UVM=refuse"});
    ASSERT_TRUE(refused.waitFor("round 5", Deadline::in(60s)));
    Json q = agent.request("quiesce", {{"deadline_ms", 30000}});
    ASSERT_EQ(q["ok"], false) << q.dump();
    EXPECT_NE(q.dump().find("plugin uvm (pid " + std::to_string(refused.pid()) + ") failed PRECHECKPOINT: 4 managed "
                            "allocations (64 MiB) and VMCKPT_CUDA_UVM=refuse: not parked"),
              std::string::npos)
        << q.dump();
    EXPECT_EQ(refused.finish(Deadline::in(300s)), want);
  }
  Workload w(args, {"LD_PRELOAD=" + interposerLib(), socketEnv, "VMCKPT_CUDA_DEBUG=1"});
  ASSERT_TRUE(w.waitFor("ready", Deadline::in(60s)));
  std::mt19937 rng(std::random_device{}());
  std::uniform_int_distribution<int> gap(50, 400);
  for (int cycle = 0; cycle < 10; ++cycle) {
    std::this_thread::sleep_for(std::chrono::milliseconds(gap(rng)));
    Json q = agent.request("quiesce", {{"deadline_ms", 30000}});
    ASSERT_EQ(q["ok"], true) << "cycle " << cycle << ": " << q.dump();
    bool parked = false;
    for (const auto& p : q["result"]["plugins"])
      if (p["name"] == "uvm" && p["pid"] == w.pid() && p["result"] == "done") parked = true;
    EXPECT_TRUE(parked) << q.dump();
    EXPECT_EQ(cudaEntry(q)["result"], "done") << q.dump();
    EXPECT_TRUE(cuda::nvidiaFilesOf(w.pid()).empty());
    EXPECT_EQ(helper({"state", std::to_string(w.pid())}).out["processes"][0]["state"], "checkpointed");
    Json t = agent.request("thaw", {{"deadline_ms", 30000}});
    ASSERT_EQ(t["ok"], true) << "cycle " << cycle << ": " << t.dump();
  }
  EXPECT_EQ(w.finish(Deadline::in(300s)), want);
}
