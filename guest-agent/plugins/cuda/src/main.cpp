// vmckpt-cuda-ckpt: the CUDA helper of vmckpt-agent. The agent is a static binary and
// cannot dlopen libcuda; it runs this program, which can, around each quiesce and thaw.
// One JSON line on stdout, exit 0 when it did what was asked, 1 when not, 2 on usage.
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "checkpoint_ops.hpp"
#include "cuda_driver.hpp"
#include "gpu_uuid.hpp"
#include "nvidia_fds.hpp"

namespace {

using Json = nlohmann::json;
using namespace vmckpt::cuda;

const char* kUsage =
    "usage: vmckpt-cuda-ckpt COMMAND [options] [PID...]\n"
    "  checkpoint [--lock-timeout-ms N] PID...  lock and checkpoint: GPU memory into each process's\n"
    "                                            own memory, no /dev/nvidia* file left open\n"
    "  restore [--gpu same|none|GPU-UUID] [--checkpointed-on GPU-UUID] PID...\n"
    "                                            restore (onto the named GPU) and unlock\n"
    "  state PID...                              the driver's checkpoint state of each\n"
    "  gpus                                      this machine's GPU UUIDs\n"
    "  holders                                   processes holding /dev/nvidia* files\n"
    "Prints one JSON line; exit 0 done, 1 failed, 2 usage. Needs libcuda.so.1 of driver 12.8+.\n";

[[noreturn]] void usage(const std::string& why) {
  std::fprintf(stderr, "vmckpt-cuda-ckpt: %s\n%s", why.c_str(), kUsage);
  std::exit(2);
}

int done(Json j) {
  j["ok"] = true;
  std::printf("%s\n", j.dump().c_str());
  return 0;
}

int failed(const std::string& why) {
  std::printf("%s\n", Json({{"ok", false}, {"error", why}}).dump().c_str());
  return 1;
}

long number(const char* s, long lo, long hi, const char* what) {
  char* end = nullptr;
  errno = 0;
  long v = std::strtol(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi)
    usage(std::string(what) + " '" + s + "' is not a number in " + std::to_string(lo) + ".." + std::to_string(hi));
  return v;
}

Json timesJson(const ProcessTimes& t, bool restore) {
  Json j = {{"pid", t.pid}};
  if (restore) {
    j["restore_ms"] = t.restoreMs;
    j["unlock_ms"] = t.unlockMs;
  } else {
    j["lock_ms"] = t.lockMs;
    j["checkpoint_ms"] = t.checkpointMs;
  }
  return j;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) usage("no command");
  std::string_view cmd = argv[1];
  if (cmd == "-h" || cmd == "--help") {
    std::fputs(kUsage, stdout);
    return 0;
  }
  unsigned lockTimeoutMs = 10000;
  std::string gpu = "same";
  std::vector<GpuUuid> checkpointedOn;
  std::vector<pid_t> pids;
  for (int i = 2; i < argc; ++i) {
    std::string_view a = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) usage(std::string(a) + " needs a value");
      return argv[++i];
    };
    if (a == "--lock-timeout-ms" && cmd == "checkpoint") {
      lockTimeoutMs = static_cast<unsigned>(number(value(), 1, 3600000, "--lock-timeout-ms"));
    } else if (a == "--gpu" && cmd == "restore") {
      gpu = value();
    } else if (a == "--checkpointed-on" && cmd == "restore") {
      auto u = parseGpuUuid(value());
      if (!u) usage("--checkpointed-on wants a GPU UUID (GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)");
      checkpointedOn.push_back(*u);
    } else if (!a.empty() && a[0] != '-') {
      pids.push_back(static_cast<pid_t>(number(argv[i], 1, 4194304, "pid")));
    } else {
      usage("unknown option '" + std::string(a) + "' for " + std::string(cmd));
    }
  }
  if (cmd == "holders") {
    Json list = Json::array();
    for (const auto& h : findNvidiaHolders("/proc", getpid()))
      list.push_back({{"pid", h.pid}, {"comm", h.comm}, {"files", h.files}});
    return done({{"holders", list}});
  }
  if (cmd != "checkpoint" && cmd != "restore" && cmd != "state" && cmd != "gpus")
    usage("unknown command '" + std::string(cmd) + "'");
  if (cmd != "gpus" && pids.empty()) usage(std::string(cmd) + " needs at least one pid");
  auto target = parseGpuTarget(gpu);
  if (!target) usage(target.error().message());

  auto driver = Driver::load();
  if (!driver) return failed(driver.error().message());

  if (cmd == "gpus" || cmd == "checkpoint") {
    auto g = driver->gpus();
    if (!g) return failed(g.error().message());
    Json uuids = Json::array();
    for (const auto& u : *g) uuids.push_back(formatGpuUuid(u));
    if (cmd == "gpus") return done({{"gpus", uuids}, {"driver_version", driver->version()}});
    auto times = checkpointAll(*driver, pids, lockTimeoutMs);
    if (!times) return failed(times.error().message());
    Json list = Json::array();
    for (const auto& t : *times) list.push_back(timesJson(t, false));
    return done({{"processes", list}, {"gpus", uuids}, {"driver_version", driver->version()}});
  }
  if (cmd == "state") {
    Json list = Json::array();
    for (pid_t pid : pids) {
      CUprocessState s = CU_PROCESS_STATE_RUNNING;
      CUresult r = driver->state(pid, &s);
      list.push_back({{"pid", pid}, {"state", r == CUDA_SUCCESS ? std::string(stateName(s)) : driver->errorName(r)},
                      {"nvidia_files", nvidiaFilesOf(pid)}});
    }
    return done({{"processes", list}});
  }
  auto pairs = gpuPairs(checkpointedOn, *target);
  if (!pairs) return failed(pairs.error().message());
  auto out = restoreAll(*driver, pids, *pairs);
  if (!out.errors.empty()) {
    std::string why;
    for (size_t i = 0; i < out.errors.size(); ++i) why += (i ? "; " : "") + out.errors[i];
    return failed(why);
  }
  Json list = Json::array();
  for (const auto& t : out.done) list.push_back(timesJson(t, true));
  return done({{"processes", list}});
}
