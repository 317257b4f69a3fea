#include "vmm/fault_injection.hpp"

#include <signal.h>
#include <unistd.h>

#include <array>
#include <cstdlib>

#include "common/log.hpp"
#include "common/strings.hpp"

namespace vmckpt::vmm {
namespace {

constexpr std::array<std::string_view, 13> kPoints = {
    "before-quiesce", "after-quiesce", "after-stop",   "mid-devstate", "after-capture", "before-publish", "mid-restore",
    "mid-stream",     "mirrors-ready", "before-unplug", "mid-unplug",  "after-unplug",  "replug"};

const Result<std::optional<FaultSpec>>& fromEnvironment() {
  static const Result<std::optional<FaultSpec>> spec = [] {
    const char* v = std::getenv("VMCKPT_FAULT");
    return parseFaultSpec(v ? v : "");
  }();
  return spec;
}

}  // namespace

Result<std::optional<FaultSpec>> parseFaultSpec(std::string_view text) {
  text = trim(text);
  if (text.empty()) return std::optional<FaultSpec>();
  auto colon = text.find(':');
  if (colon == std::string_view::npos)
    return fail(Errc::invalidArgument, cat("VMCKPT_FAULT '", text, "' is not <point>:<action>"));
  std::string_view point = text.substr(0, colon), action = text.substr(colon + 1);
  bool known = false;
  for (auto p : kPoints) known = known || p == point;
  if (!known) return fail(Errc::invalidArgument, cat("VMCKPT_FAULT: unknown injection point '", point, "'"));
  FaultSpec f{std::string(point), FaultAction::error};
  if (action == "error") f.action = FaultAction::error;
  else if (action == "kill") f.action = FaultAction::kill;
  else if (action == "kill-qemu") f.action = FaultAction::killQemu;
  else return fail(Errc::invalidArgument, cat("VMCKPT_FAULT: unknown action '", action, "' (error, kill, kill-qemu)"));
  return std::optional<FaultSpec>(std::move(f));
}

Status faultPoint(std::string_view point, pid_t qemuPid) {
  const auto& spec = fromEnvironment();
  if (!spec) return fail(spec.error());
  if (!*spec || (*spec)->point != point) return {};
  switch ((*spec)->action) {
    case FaultAction::error:
      return fail(Errc::io, cat("injected fault at ", point, " (VMCKPT_FAULT)"));
    case FaultAction::kill:
      log::warn("VMCKPT_FAULT: killing vmckpt at ", point);
      ::kill(::getpid(), SIGKILL);
      ::pause();
      return {};
    case FaultAction::killQemu:
      log::warn("VMCKPT_FAULT: killing QEMU (pid ", qemuPid, ") at ", point);
      if (qemuPid > 0) ::kill(qemuPid, SIGKILL);
      return {};
  }
  return {};
}

}  // namespace vmckpt::vmm
