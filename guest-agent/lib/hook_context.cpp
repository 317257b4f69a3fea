#include "hook_context.hpp"

#include <cerrno>
#include <cstring>

namespace vmckpt::plugin {

namespace {
thread_local HookContext* tCurrentHook = nullptr;
}  // namespace

HookContext HookContext::forEvent(wire::EventKind kind, const wire::EventMsg& event) {
  HookContext ctx;
  ctx.connectFollows =
      event.connectFollows && (kind == wire::EventKind::restart || kind == wire::EventKind::resume);
  ctx.release =
      event.release && (kind == wire::EventKind::presuspend || kind == wire::EventKind::precheckpoint);
  ctx.mayPublish = wire::publishAllowed(kind, ctx.connectFollows, ctx.release);
  return ctx;
}

HookScope::HookScope(HookContext& ctx) : previous_(tCurrentHook) { tCurrentHook = &ctx; }

HookScope::~HookScope() { tCurrentHook = previous_; }

int connectFollows() { return tCurrentHook && tCurrentHook->connectFollows ? 1 : 0; }

int releaseRequested() { return tCurrentHook && tCurrentHook->release ? 1 : 0; }

int publish(const char* jsonObject) {
  if (!tCurrentHook || !tCurrentHook->mayPublish) return -EPERM;
  if (!jsonObject) return -EINVAL;
  // Bounded before parsing: a caller's unterminated buffer is read at most this far.
  size_t len = ::strnlen(jsonObject, wire::kMaxPublishBytes + 1);
  if (len > wire::kMaxPublishBytes) return -EINVAL;
  auto parsed = wire::parseObject(std::string_view(jsonObject, len));
  // Serialized again it may grow (1e5 is sent as 100000.0): the agent's bound is on that.
  if (!parsed || !wire::checkPublished(*parsed)) return -EINVAL;
  tCurrentHook->published = std::move(*parsed);
  return 0;
}

}  // namespace vmckpt::plugin
