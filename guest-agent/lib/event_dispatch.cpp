#include "event_dispatch.hpp"

#include <array>
#include <cstring>

#include "hook_context.hpp"

namespace vmckpt::plugin {

std::string dispatchEvent(const Registration& reg, const wire::EventMsg& event) {
  auto kind = wire::eventFromName(event.event);
  if (!kind || (*kind == wire::EventKind::connect && reg.apiVersion < 2))
    return wire::encodeReply(event.seq, wire::Outcome::notMine, {});

  // RESTART gets the device map (an object), CONNECT the peers (an array), as text.
  std::string hookArg;
  const char* hookArgPtr = nullptr;
  if (*kind == wire::EventKind::restart || *kind == wire::EventKind::connect) {
    const auto& given = *kind == wire::EventKind::restart ? event.deviceMap : event.peers;
    hookArg = given ? wire::toLine(*given) : std::string(*kind == wire::EventKind::restart ? "{}\n" : "[]\n");
    hookArg.pop_back();  // the '\n' of toLine
    hookArgPtr = hookArg.c_str();
  }

  HookContext context = HookContext::forEvent(*kind, event);
  std::array<char, VMCKPT_REASON_MAX> reason{};
  vmckpt_result r;
  try {
    HookScope scope(context);
    r = reg.hook(reg.ctx, static_cast<vmckpt_event>(*kind), hookArgPtr, reason.data(), reason.size());
  } catch (...) {
    // A C++ hook that throws: the exception stops here, never in the agent's protocol.
    return wire::encodeReply(event.seq, wire::Outcome::failed, "the hook threw an exception");
  }
  reason.back() = '\0';
  const wire::Json* data = context.published ? &*context.published : nullptr;
  switch (r) {
    case VMCKPT_DONE: return wire::encodeReply(event.seq, wire::Outcome::done, {}, data);
    case VMCKPT_NOT_MINE: return wire::encodeReply(event.seq, wire::Outcome::notMine, {}, data);
    case VMCKPT_FAILED:
      return wire::encodeReply(event.seq, wire::Outcome::failed,
                               std::string_view(reason.data(), ::strnlen(reason.data(), reason.size())), data);
    case VMCKPT_RESULT_INT_RANGE_: break;
  }
  return wire::encodeReply(event.seq, wire::Outcome::failed,
                           "the hook returned an invalid result " + std::to_string(static_cast<int>(r)));
}

std::string handleAgentItem(const Registration& reg, const wire::LineBuffer::Item& item) {
  if (item.kind != wire::LineBuffer::Kind::line) return {};
  auto msg = wire::parseObject(item.text);
  if (!msg || wire::messageType(*msg) != "event") return {};
  auto event = wire::decodeEvent(*msg);
  if (!event) return {};
  return dispatchEvent(reg, *event);
}

}  // namespace vmckpt::plugin
