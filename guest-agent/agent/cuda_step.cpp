#include "cuda_step.hpp"

#include <unistd.h>

#include <algorithm>

#include "common/child_process.hpp"
#include "nvidia_fds.hpp"

namespace vmckpt::agent {

namespace {

std::string defaultHelper() {
  char buf[4096];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  std::string self = n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
  auto slash = self.rfind('/');
  return (slash == std::string::npos ? std::string(".") : self.substr(0, slash)) + "/vmckpt-cuda-ckpt";
}

std::string pidList(const std::vector<pid_t>& pids) {
  std::string s;
  for (size_t i = 0; i < pids.size(); ++i) s += (i ? " " : "") + std::to_string(pids[i]);
  return s;
}

// The helper's own error line, or what went wrong running it.
std::string firstLine(const std::string& s) {
  auto nl = s.find('\n');
  return nl == std::string::npos ? s : s.substr(0, nl);
}

}  // namespace

CudaStep::CudaStep(CudaConfig config) : config_(std::move(config)) {
  if (config_.helper.empty()) config_.helper = defaultHelper();
}

std::expected<wire::Json, std::string> CudaStep::runHelper(std::vector<std::string> args, Deadline d) const {
  args.insert(args.begin(), config_.helper);
  auto out = runCommand(args, d, std::nullopt, {}, 1 << 20);
  if (!out) return std::unexpected(config_.helper + ": " + out.error().message());
  auto j = wire::Json::parse(firstLine(out->out), nullptr, false);
  if (!j.is_object() || !j.contains("ok"))
    return std::unexpected(config_.helper + " (" + out->status.describe() + "): " +
                           firstLine(out->err.empty() ? out->out : out->err));
  if (j["ok"] != true) {
    auto e = j.find("error");
    return std::unexpected(e != j.end() && e->is_string() ? e->get<std::string>() : std::string("failed"));
  }
  return j;
}

std::expected<wire::Json, std::string> CudaStep::checkpoint(Deadline d) {
  wire::Json entry = {{"name", "cuda"}, {"pid", 0}, {"result", "not_mine"}};
  if (holding())
    return std::unexpected("CUDA processes " + pidList(pids_) + " are still checkpointed: an earlier restore failed");
  // Without the NVIDIA driver's control device nobody can hold one of its files: a guest
  // without a GPU skips the walk over every process's fds on each quiesce.
  if (!config_.enabled || ::access("/dev/nvidiactl", F_OK) != 0) return entry;
  auto holders = cuda::findNvidiaHolders(config_.procRoot, ::getpid());
  if (holders.empty()) return entry;
  std::vector<pid_t> pids;
  for (const auto& h : holders) pids.push_back(h.pid);
  if (::access(config_.helper.c_str(), X_OK) != 0)
    return std::unexpected(std::to_string(holders.size()) + " processes hold NVIDIA device files (" +
                           cuda::describeHolder(holders[0]) + (holders.size() > 1 ? ", ..." : "") +
                           ") but the CUDA helper " + config_.helper + " is not installed");
  auto budget = std::chrono::duration_cast<std::chrono::milliseconds>(d.remaining());
  auto lockMs = std::clamp<long long>(std::min(budget, config_.lockTimeout).count(), 1, 3600000);
  std::vector<std::string> args = {"checkpoint", "--lock-timeout-ms", std::to_string(lockMs)};
  for (pid_t p : pids) args.push_back(std::to_string(p));
  // The helper gets the deadline plus the time a checkpoint of big GPU memories takes:
  // once locked, cutting it short would leave processes half checkpointed.
  auto r = runHelper(std::move(args), Deadline::in(budget + std::chrono::seconds(60)));
  if (!r) return std::unexpected(r.error());
  pids_ = pids;
  gpus_.clear();
  if (auto g = r->find("gpus"); g != r->end() && g->is_array())
    for (const auto& u : *g)
      if (u.is_string()) gpus_.push_back(u.get<std::string>());
  entry["result"] = "done";
  entry["processes"] = (*r)["processes"];
  return entry;
}

std::expected<wire::Json, std::string> CudaStep::restore(const std::string& deviceGpu, Deadline d) {
  wire::Json entry = {{"name", "cuda"}, {"pid", 0}, {"result", "not_mine"}};
  if (!holding()) return entry;
  std::vector<std::string> args = {"restore", "--gpu", deviceGpu.empty() ? std::string("same") : deviceGpu};
  for (const auto& g : gpus_) {
    args.push_back("--checkpointed-on");
    args.push_back(g);
  }
  for (pid_t p : pids_) args.push_back(std::to_string(p));
  auto r = runHelper(std::move(args), d);
  if (!r) return std::unexpected("restoring CUDA processes " + pidList(pids_) + ": " + r.error());
  pids_.clear();
  entry["result"] = "done";
  entry["processes"] = (*r)["processes"];
  return entry;
}

}  // namespace vmckpt::agent
