#include "hook_context.hpp"

#include <cerrno>
#include <cstring>

namespace vmckpt::plugin {

namespace {
thread_local RestartContext* tCurrentRestart = nullptr;
}  // namespace

RestartScope::RestartScope(RestartContext& ctx) : previous_(tCurrentRestart) { tCurrentRestart = &ctx; }

RestartScope::~RestartScope() { tCurrentRestart = previous_; }

int connectFollows() { return tCurrentRestart && tCurrentRestart->connectFollows ? 1 : 0; }

int publish(const char* jsonObject) {
  if (!tCurrentRestart) return -EPERM;
  if (!jsonObject) return -EINVAL;
  // Bounded before parsing: a caller's unterminated buffer is read at most this far.
  size_t len = ::strnlen(jsonObject, wire::kMaxPublishBytes + 1);
  if (len > wire::kMaxPublishBytes) return -EINVAL;
  auto parsed = wire::parseObject(std::string_view(jsonObject, len));
  // Serialized again it may grow (1e5 is sent as 100000.0): the agent's bound is on that.
  if (!parsed || !wire::checkPublished(*parsed)) return -EINVAL;
  tCurrentRestart->published = std::move(*parsed);
  return 0;
}

}  // namespace vmckpt::plugin
