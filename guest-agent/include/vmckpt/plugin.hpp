// C++ face of the vmckpt guest plugin API. Header-only over the C ABI in plugin.h, so
// a plugin built with any C++ compiler links against libvmckpt without C++ ABI ties.
//
//   class MyPlugin : public vmckpt::Plugin {
//     vmckpt::EventResult onPrecheckpoint() override { save(); return vmckpt::EventResult::done(); }
//   };
//   MyPlugin p;
//   if (int rc = vmckpt::registerPlugin(p, "mine"); rc != 0) { /* -errno */ }
//   ...
//   vmckpt::unregisterPlugin();
#pragma once

#include <cstring>
#include <exception>
#include <string>
#include <string_view>

#include "vmckpt/plugin.h"

namespace vmckpt {

// What a handler returns: the result and, for failed, a one-line reason.
struct EventResult {
  vmckpt_result result = VMCKPT_DONE;
  std::string reason;

  static EventResult done() { return {VMCKPT_DONE, {}}; }
  static EventResult notMine() { return {VMCKPT_NOT_MINE, {}}; }
  static EventResult failed(std::string why) { return {VMCKPT_FAILED, std::move(why)}; }
};

// Base class of a plugin: every handler defaults to done, so a plugin overrides only
// what it needs. Handlers run on libvmckpt's thread, one at a time.
class Plugin {
 public:
  virtual ~Plugin() = default;

  virtual EventResult onPresuspend() { return EventResult::done(); }
  virtual EventResult onPrecheckpoint() { return EventResult::done(); }
  virtual EventResult onResume() { return EventResult::done(); }
  // deviceMapJson: the host's device map, a JSON object (may be "{}").
  virtual EventResult onRestart(std::string_view deviceMapJson) {
    (void)deviceMapJson;
    return EventResult::done();
  }
  // Group restore or snapshot only, after every member handled RESTART or RESUME.
  // peersJson: a JSON array of the objects the members published under this plugin's
  // name (may be "[]").
  virtual EventResult onConnect(std::string_view peersJson) {
    (void)peersJson;
    return EventResult::done();
  }

  // The C hook: dispatches to the handlers. An exception from a handler is a failure
  // with its what() as the reason; it never crosses into C.
  static vmckpt_result hook(void* ctx, vmckpt_event ev, const char* deviceMapJson, char* reason,
                            size_t reasonLen) {
    auto* self = static_cast<Plugin*>(ctx);
    EventResult r;
    try {
      switch (ev) {
        case VMCKPT_PRESUSPEND: r = self->onPresuspend(); break;
        case VMCKPT_PRECHECKPOINT: r = self->onPrecheckpoint(); break;
        case VMCKPT_RESUME: r = self->onResume(); break;
        case VMCKPT_RESTART: r = self->onRestart(deviceMapJson ? deviceMapJson : "{}"); break;
        case VMCKPT_CONNECT: r = self->onConnect(deviceMapJson ? deviceMapJson : "[]"); break;
        default: return VMCKPT_NOT_MINE;
      }
    } catch (const std::exception& e) {
      r = EventResult::failed(e.what());
    } catch (...) {
      r = EventResult::failed("unknown exception");
    }
    if (r.result == VMCKPT_FAILED && reason && reasonLen > 0) {
      size_t n = r.reason.size() < reasonLen - 1 ? r.reason.size() : reasonLen - 1;
      std::memcpy(reason, r.reason.data(), n);
      reason[n] = '\0';
    }
    return r.result;
  }
};

// Registers `plugin` under `name` through vmckpt_register. Returns 0 or -errno (see
// plugin.h). `plugin` must outlive the registration.
inline int registerPlugin(Plugin& plugin, const std::string& name) {
  vmckpt_plugin_descriptor d{};
  d.api_version = VMCKPT_PLUGIN_API_VERSION;
  d.name = name.c_str();
  d.hook = &Plugin::hook;
  d.ctx = &plugin;
  return vmckpt_register(&d);
}

inline void unregisterPlugin() { vmckpt_unregister(); }

// Inside onRestart, onResume when connectFollows(), or onPresuspend or onPrecheckpoint
// when releaseRequested(): attaches a JSON object to this process's reply (see
// vmckpt_publish).
// Returns 0 or -errno.
inline int publish(std::string_view jsonObject) {
  return vmckpt_publish(std::string(jsonObject).c_str());
}

// Inside onRestart or onResume: true when this is part of a group restore or snapshot
// and onConnect follows.
inline bool connectFollows() { return vmckpt_connect_follows() != 0; }

// Inside onPresuspend (drain, keep the devices open) or onPrecheckpoint (close them now):
// true when the host asks the plugin to close its devices before the capture (see
// vmckpt_release_requested).
inline bool releaseRequested() { return vmckpt_release_requested() != 0; }

}  // namespace vmckpt
