// libvmckpt: the state of the RESTART hook running on this thread, which the C functions
// callable from inside it (vmckpt_publish, vmckpt_connect_follows) read and write.
#pragma once

#include <optional>

#include "wire.hpp"

namespace vmckpt::plugin {

struct RestartContext {
  bool connectFollows = false;
  std::optional<wire::Json> published;  // set by vmckpt_publish; the last call wins
};

// Makes ctx the current RESTART context of this thread while it lives (around one hook
// call).
class RestartScope {
 public:
  explicit RestartScope(RestartContext& ctx);
  ~RestartScope();
  RestartScope(const RestartScope&) = delete;
  RestartScope& operator=(const RestartScope&) = delete;

 private:
  RestartContext* previous_;
};

// vmckpt_connect_follows: 1 inside a RESTART hook of a group restore, else 0.
int connectFollows();
// vmckpt_publish: 0, -EINVAL (NULL, not a JSON object, too long), -EPERM (not inside a
// RESTART hook).
int publish(const char* jsonObject);

}  // namespace vmckpt::plugin
