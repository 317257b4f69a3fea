// The plugin's face to the agent: registration (on the first ibv_open_device, so a
// process that never opens a device never registers) and the checkpoint events.
//
//   PRESUSPEND     gate new posts and drain every send queue (drain.hpp)
//   PRECHECKPOINT  done; the device stays open (see below)
//   RESUME         reopen the gate
//   RESTART        reopen the gate; fail (saying so) when the device map names another device
//
// What is not built yet: tearing the device objects down before capture and rebuilding
// them after a restore (another device, new ids, the job-wide key-value exchange). On
// soft-RoCE the device's state is kernel memory of the guest, which the snapshot
// captures with everything else, so a drained process continues correctly without a
// rebuild; a RESTART whose device map names another device fails with that reason,
// and the process goes on with the device it has.
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>

#include "drain.hpp"
#include "gate.hpp"
#include "objects.hpp"
#include "vmckpt/plugin.h"

namespace vmckpt::ib {
namespace {

std::chrono::milliseconds drainLimit() {
  const char* v = std::getenv("VMCKPT_IB_DRAIN_TIMEOUT_MS");
  const long ms = v != nullptr ? std::atol(v) : 0;
  return std::chrono::milliseconds(ms > 0 && ms <= 600000 ? ms : 4000);
}

vmckpt_result failWith(char* reason, size_t len, const std::string& why) {
  std::snprintf(reason, len, "ib: %s", why.c_str());
  logLine("%s", why.c_str());
  return VMCKPT_FAILED;
}

// The device names this process has open (from the shadow contexts).
std::vector<std::string> openDevices() {
  std::lock_guard lock(objects().mutex);
  std::vector<std::string> names;
  for (ShadowContext* c : objects().contexts) names.emplace_back(ibv_get_device_name(c->real->device));
  return names;
}

vmckpt_result restart(const char* deviceMapJson, char* reason, size_t len) {
  std::string wanted;
  if (deviceMapJson != nullptr) {
    // The agent forwards the host's map; it is bounded there, and parsed defensively here.
    auto map = nlohmann::json::parse(deviceMapJson, nullptr, false);
    if (map.is_object() && map.contains("ib") && map["ib"].is_string()) wanted = map["ib"].get<std::string>();
  }
  // Posts resume either way: the objects are the ones captured with the guest (on rxe,
  // kernel memory restored with it), and a gate left closed would hang the application.
  gate().open();
  if (!wanted.empty()) {
    for (const std::string& name : openDevices()) {
      if (name != wanted) {
        return failWith(reason, len,
                        "RESTART: the device map asks for '" + wanted + "' instead of '" + name +
                            "'; rebuilding verbs objects on another device is not implemented yet, so this "
                            "process goes on with '" + name + "'");
      }
    }
  }
  return VMCKPT_DONE;
}

vmckpt_result hook(void*, vmckpt_event ev, const char* deviceMapJson, char* reason, size_t len) {
  switch (ev) {
    case VMCKPT_PRESUSPEND: {
      if (openDevices().empty()) return VMCKPT_NOT_MINE;
      const auto start = std::chrono::steady_clock::now();
      std::string failure = drainSendQueues(drainLimit());
      if (!failure.empty()) return failWith(reason, len, "PRESUSPEND: " + failure);
      const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start);
      logLine("drained in %lld ms; posts are held until the guest runs again", static_cast<long long>(ms.count()));
      return VMCKPT_DONE;
    }
    case VMCKPT_PRECHECKPOINT:
      return gate().closed() ? VMCKPT_DONE : VMCKPT_NOT_MINE;
    case VMCKPT_RESUME:
      gate().open();
      return VMCKPT_DONE;
    case VMCKPT_RESTART:
      return restart(deviceMapJson, reason, len);
    default:
      return VMCKPT_NOT_MINE;
  }
}

}  // namespace

void registerWithAgent() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (std::getenv("VMCKPT_IB_NO_AGENT") != nullptr) return;
    const char* path = std::getenv("VMCKPT_AGENT_SOCKET");
    if (path == nullptr) path = VMCKPT_AGENT_SOCKET_DEFAULT;
    if (::access(path, F_OK) != 0) {
      logLine("no agent at %s: this process cannot be checkpointed consistently", path);
      return;
    }
    static const vmckpt_plugin_descriptor desc = {VMCKPT_PLUGIN_API_VERSION, "ib", hook, nullptr};
    if (int rc = vmckpt_register(&desc); rc < 0)
      logLine("could not register with the agent at %s (error %d): this process cannot be checkpointed consistently",
              path, -rc);
  });
}

}  // namespace vmckpt::ib
