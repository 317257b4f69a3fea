#include "event_dispatch.hpp"

#include <array>
#include <cstring>

namespace vmckpt::plugin {

std::string dispatchEvent(const Registration& reg, const wire::EventMsg& event) {
  auto kind = wire::eventFromName(event.event);
  if (!kind) return wire::encodeReply(event.seq, wire::Outcome::notMine, {});

  std::string deviceMap;
  const char* deviceMapArg = nullptr;
  if (*kind == wire::EventKind::restart) {
    deviceMap = event.deviceMap ? wire::toLine(*event.deviceMap) : std::string("{}\n");
    deviceMap.pop_back();  // the '\n' of toLine
    deviceMapArg = deviceMap.c_str();
  }

  std::array<char, VMCKPT_REASON_MAX> reason{};
  vmckpt_result r;
  try {
    r = reg.hook(reg.ctx, static_cast<vmckpt_event>(*kind), deviceMapArg, reason.data(), reason.size());
  } catch (...) {
    // A C++ hook that throws: the exception stops here, never in the agent's protocol.
    return wire::encodeReply(event.seq, wire::Outcome::failed, "the hook threw an exception");
  }
  reason.back() = '\0';
  switch (r) {
    case VMCKPT_DONE: return wire::encodeReply(event.seq, wire::Outcome::done, {});
    case VMCKPT_NOT_MINE: return wire::encodeReply(event.seq, wire::Outcome::notMine, {});
    case VMCKPT_FAILED:
      return wire::encodeReply(event.seq, wire::Outcome::failed,
                               std::string_view(reason.data(), ::strnlen(reason.data(), reason.size())));
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
