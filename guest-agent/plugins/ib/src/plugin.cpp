// The plugin's face to the agent: registration (on the first ibv_open_device, so a
// process that never opens a device never registers) and the checkpoint events.
//
//   PRESUSPEND     gate new posts and drain every send queue (drain.hpp)
//   PRECHECKPOINT  done; the device stays open (see below)
//   RESUME         reopen the gate
//   RESTART        alone (a restore of this guest by itself): reopen the gate; fail,
//                  saying so, when the device map names another device. In a group
//                  restore (CONNECT follows): rebuild on the device the map names, or
//                  on the same one, and publish the new ids (rebuild.hpp)
//   CONNECT        connect to the peers' new ids; the gate opens with the RESUME the
//                  host sends every member afterwards
//
// Not built yet: tearing the objects down before capture (PRECHECKPOINT leaves the
// device open). On soft-RoCE the device's state is kernel memory of the guest, which
// the snapshot captures with everything else, so the restored objects are sound; on
// hardware they would not be.
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>

#include "drain.hpp"
#include "gate.hpp"
#include "objects.hpp"
#include "rebuild.hpp"
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
  for (ShadowContext* c : objects().contexts)
    if (c->real != nullptr) names.emplace_back(ibv_get_device_name(c->real->device));
  return names;
}

// The device the host's map names for "ib" ("" when none), parsed defensively (the
// agent bounds the map; this reads one string).
std::string mappedDevice(const char* deviceMapJson) {
  if (deviceMapJson == nullptr) return "";
  auto map = nlohmann::json::parse(deviceMapJson, nullptr, false);
  if (map.is_object() && map.contains("ib") && map["ib"].is_string()) return map["ib"].get<std::string>();
  return "";
}

// Set by a RESTART that rebuilt: the CONNECT that follows has QPs to connect; then by
// that CONNECT: the RESUME that follows wakes the CQs' channels.
bool g_rebuilt = false;
bool g_connected = false;

vmckpt_result restart(const char* deviceMapJson, char* reason, size_t len) {
  const std::string wanted = mappedDevice(deviceMapJson);
  g_rebuilt = false;
  if (vmckpt_connect_follows() == 1) {
    const auto start = std::chrono::steady_clock::now();
    nlohmann::json ids;
    if (std::string e = rebuildLocal(wanted, ids); !e.empty()) {
      gate().open();  // the objects are gone: posts fail instead of hanging the application
      return failWith(reason, len, "RESTART: rebuild: " + e);
    }
    if (int rc = vmckpt_publish(ids.dump().c_str()); rc != 0) {
      gate().open();
      return failWith(reason, len, "RESTART: publishing the new ids failed (" + std::string(std::strerror(-rc)) +
                                       "; too many queue pairs or keys?)");
    }
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start);
    g_rebuilt = true;
    const auto names = openDevices();
    logLine("rebuilt on '%s' in %lld ms; waiting for the peers' ids", names.empty() ? "-" : names.front().c_str(),
            static_cast<long long>(ms.count()));
    return VMCKPT_DONE;
  }
  // Alone: posts resume on the objects captured with the guest (on rxe, kernel memory
  // restored with it); a gate left closed would hang the application.
  gate().open();
  if (!wanted.empty()) {
    for (const std::string& name : openDevices()) {
      if (name != wanted) {
        return failWith(reason, len,
                        "RESTART: the device map asks for '" + wanted + "' instead of '" + name +
                            "'; moving to another device needs its peers to rebuild too (restore --group), so "
                            "this process goes on with '" + name + "'");
      }
    }
  }
  return VMCKPT_DONE;
}

vmckpt_result connect(const char* peersJson, char* reason, size_t len) {
  if (!g_rebuilt) return VMCKPT_NOT_MINE;  // RESTART failed before tearing anything down
  g_rebuilt = false;
  g_connected = false;
  auto peers = nlohmann::json::parse(peersJson != nullptr ? peersJson : "", nullptr, false);
  if (std::string e = connectPeers(peers); !e.empty()) {
    gate().open();
    return failWith(reason, len, "CONNECT: " + e);
  }
  g_connected = true;
  logLine("connected to the peers' new ids; posts resume with the host's RESUME");
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
      if (g_connected) wakeArmedCqs();
      g_connected = false;
      gate().open();
      return VMCKPT_DONE;
    case VMCKPT_RESTART:
      return restart(deviceMapJson, reason, len);
    case VMCKPT_CONNECT:
      if (openDevices().empty()) return VMCKPT_NOT_MINE;
      return connect(deviceMapJson, reason, len);
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
