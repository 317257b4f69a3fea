// The plugin's face to the agent: registration (on the first ibv_open_device, so a
// process that never opens a device never registers) and the checkpoint events.
//
//   PRESUSPEND     gate new posts and drain every send queue (drain.hpp)
//   PRECHECKPOINT  when the host asks for a release (a group snapshot; it sends this
//                  once every member drained): destroy every object, close the device
//                  (release.hpp), fail if any /dev/infiniband fd is still open, and
//                  publish {"released":true}
//   RESUME         with connect_follows (a group's first round, after its snapshot or a
//                  rolled-back one): rebuild on the same device and publish the new ids;
//                  plain: after CONNECT, wake the armed CQs; after a release the host
//                  did not follow with its rounds, rebuild against the peers' ids as
//                  known; then reopen the gate
//   RESTART        alone (a restore of this guest by itself): reopen the gate; fail,
//                  saying so, when the device map names another device or the snapshot
//                  was released (then it rebuilds as a plain RESUME does). In a group
//                  restore (CONNECT follows): rebuild on the device the map names, or on
//                  the same one, and publish the new ids (rebuild.hpp)
//   CONNECT        connect to the peers' new ids; the gate opens with the RESUME the
//                  host sends every member afterwards
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
#include "release.hpp"
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

// Whether this process opened a device (open now, or released before capture).
bool hasDevice() {
  std::lock_guard lock(objects().mutex);
  return !objects().contexts.empty();
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

long long msSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start).count();
}

// The first round of a group (restore, or a snapshot's resume): rebuild on `device` (""
// for the same one) and publish the new ids; the gate stays closed for CONNECT.
vmckpt_result rebuildForGroup(const char* event, const std::string& device, char* reason, size_t len) {
  const auto start = std::chrono::steady_clock::now();
  nlohmann::json ids;
  if (std::string e = rebuildLocal(device, ids); !e.empty()) {
    gate().open();  // the objects are gone: posts fail instead of hanging the application
    return failWith(reason, len, std::string(event) + ": rebuild: " + e);
  }
  if (int rc = vmckpt_publish(ids.dump().c_str()); rc != 0) {
    gate().open();
    return failWith(reason, len, std::string(event) + ": publishing the new ids failed (" +
                                     std::strerror(-rc) + "; too many queue pairs or keys?)");
  }
  g_rebuilt = true;
  const auto names = openDevices();
  logLine("rebuilt on '%s' in %lld ms; waiting for the peers' ids", names.empty() ? "-" : names.front().c_str(),
          msSince(start));
  return VMCKPT_DONE;
}

// Released, and no group round follows: rebuild and reach the peers at the ids known
// before the release (those that did not rebuild); the gate opens either way.
std::string rebuildAlone(const std::string& device) {
  nlohmann::json unused;
  std::string e = rebuildLocal(device, unused);
  if (e.empty()) e = reconnectKnownPeers();
  gate().open();
  return e;
}

vmckpt_result restart(const char* deviceMapJson, char* reason, size_t len) {
  const std::string wanted = mappedDevice(deviceMapJson);
  g_rebuilt = false;
  if (vmckpt_connect_follows() == 1) return rebuildForGroup("RESTART", wanted, reason, len);
  if (objects().released.load()) {
    std::string e = rebuildAlone(wanted);
    return failWith(reason, len, "RESTART: the snapshot was taken with the device released (a group snapshot); " +
                                     (e.empty() ? std::string("rebuilt, but peers that rebuilt too are unreachable")
                                                : "rebuild: " + e) +
                                     "; restore the group together (restore --group)");
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

vmckpt_result presuspend(char* reason, size_t len) {
  const auto start = std::chrono::steady_clock::now();
  std::string failure = drainSendQueues(drainLimit());
  if (!failure.empty()) return failWith(reason, len, "PRESUSPEND: " + failure);
  logLine("drained in %lld ms; posts are held until the guest runs again%s", msSince(start),
          vmckpt_release_requested() == 1 ? "; the device closes once the group drained" : "");
  return VMCKPT_DONE;
}

// After the host's barrier (every member of the group drained, so no peer still needs
// our queues): close the device; no /dev/infiniband fd may stay open.
vmckpt_result precheckpoint(char* reason, size_t len) {
  if (vmckpt_release_requested() != 1) return gate().closed() ? VMCKPT_DONE : VMCKPT_NOT_MINE;
  const auto start = std::chrono::steady_clock::now();
  const auto names = openDevices();
  if (std::string e = releaseDevice(); !e.empty()) return failWith(reason, len, "PRECHECKPOINT: release: " + e);
  if (std::string fd = deviceFdStillOpen(); !fd.empty())
    return failWith(reason, len, "PRECHECKPOINT: " + fd + " is still open after the release");
  (void)vmckpt_publish(R"({"released":true})");
  logLine("released '%s' in %lld ms: no /dev/infiniband fd open; the group's reconnect rebuilds it",
          names.empty() ? "-" : names.front().c_str(), msSince(start));
  return VMCKPT_DONE;
}

vmckpt_result resume(char* reason, size_t len) {
  if (vmckpt_connect_follows() == 1) {
    g_rebuilt = false;
    g_connected = false;
    // Not released (a member rolled back before its release, or never asked): its peers
    // rebuild, so it does too; drained first when its traffic runs.
    if (!objects().released.load() && !gate().closed())
      if (std::string e = drainSendQueues(drainLimit()); !e.empty()) return failWith(reason, len, "RESUME: " + e);
    return rebuildForGroup("RESUME", "", reason, len);
  }
  if (g_connected) wakeArmedCqs();
  g_connected = false;
  if (objects().released.load()) {
    if (std::string e = rebuildAlone(""); !e.empty()) return failWith(reason, len, "RESUME after a release: " + e);
    logLine("rebuilt after a release without the group's reconnect; peers that rebuilt too are unreachable");
    return VMCKPT_DONE;
  }
  gate().open();
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
    case VMCKPT_PRESUSPEND:
      return hasDevice() ? presuspend(reason, len) : VMCKPT_NOT_MINE;
    case VMCKPT_PRECHECKPOINT:
      return hasDevice() ? precheckpoint(reason, len) : VMCKPT_NOT_MINE;
    case VMCKPT_RESUME:
      return hasDevice() ? resume(reason, len) : VMCKPT_NOT_MINE;
    case VMCKPT_RESTART:
      return restart(deviceMapJson, reason, len);
    case VMCKPT_CONNECT:
      return hasDevice() ? connect(deviceMapJson, reason, len) : VMCKPT_NOT_MINE;
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
