// libvmckpt: turns one event from the agent into one call of the plugin's hook and the
// reply line. No I/O here (agent_connection.cpp does the socket).
#pragma once

#include <string>

#include "vmckpt/plugin.h"
#include "wire.hpp"

namespace vmckpt::plugin {

// The registered plugin, copied out of the caller's descriptor.
struct Registration {
  std::string name;
  vmckpt_hook_fn hook = nullptr;
  void* ctx = nullptr;
  unsigned apiVersion = VMCKPT_PLUGIN_API_VERSION;  // the descriptor's: 1 or 2
};

// Calls the hook for `event` and returns the reply line (with the event's seq). An event
// name this library does not know, and CONNECT for a plugin of api_version 1, are
// answered not_mine without calling the hook. A hook that may publish (hook_context:
// RESTART, RESUME with connect_follows, PRESUSPEND or PRECHECKPOINT with release) gets
// what it published into the reply as "data".
std::string dispatchEvent(const Registration& reg, const wire::EventMsg& event);

// Handles one item read from the agent: an event gets its reply line; anything else
// (errors, unknown types, oversized or broken lines) is ignored and gives "".
std::string handleAgentItem(const Registration& reg, const wire::LineBuffer::Item& item);

}  // namespace vmckpt::plugin
