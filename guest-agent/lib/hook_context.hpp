// libvmckpt: the state of the hook running on this thread, which the C functions callable
// from inside it (vmckpt_publish, vmckpt_connect_follows, vmckpt_release_requested) read
// and write.
#pragma once

#include <optional>

#include "wire.hpp"

namespace vmckpt::plugin {

struct HookContext {
  bool connectFollows = false;  // a RESTART or RESUME that CONNECT follows
  bool release = false;         // a PRESUSPEND or PRECHECKPOINT of a quiesce with release
  bool mayPublish = false;      // wire::publishAllowed for this event
  std::optional<wire::Json> published;  // set by vmckpt_publish; the last call wins

  // The context of one call of the hook for `kind`; the flags hold only in the events
  // that carry them.
  static HookContext forEvent(wire::EventKind kind, const wire::EventMsg& event);
};

// Makes ctx the current hook context of this thread while it lives (around one hook
// call).
class HookScope {
 public:
  explicit HookScope(HookContext& ctx);
  ~HookScope();
  HookScope(const HookScope&) = delete;
  HookScope& operator=(const HookScope&) = delete;

 private:
  HookContext* previous_;
};

// vmckpt_connect_follows: 1 inside a RESTART or RESUME hook that CONNECT follows, else 0.
int connectFollows();
// vmckpt_release_requested: 1 inside a PRESUSPEND or PRECHECKPOINT hook of a quiesce with
// release, else 0.
int releaseRequested();
// vmckpt_publish: 0, -EINVAL (NULL, not a JSON object, too long), -EPERM (not inside a
// hook that may publish).
int publish(const char* jsonObject);

}  // namespace vmckpt::plugin
