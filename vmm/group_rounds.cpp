#include "vmm/group_rounds.hpp"

#include "common/log.hpp"
#include "common/strings.hpp"
#include "vmm/agent/agent_client.hpp"

namespace vmckpt::vmm {
namespace {

using RoundClock = std::chrono::steady_clock;
using nlohmann::json;

// The agents' line limit bounds what 'connect' can carry.
constexpr std::size_t kMaxPublished = 60000;

double roundMsSince(RoundClock::time_point t0) {
  return std::chrono::duration<double, std::milli>(RoundClock::now() - t0).count();
}

void noteRound(RoundMember& m, const char* what, const Error& e) {
  if (!m.note.empty()) return;
  m.note = cat("the guest runs, but its agent did not take '", what, "': ", e.message());
  log::warn("VM ", m.vm, ": ", m.note);
}

}  // namespace

RoundsOutcome runGroupRounds(std::vector<RoundMember>& members, const char* firstName, const FirstRound& first) {
  const auto t0 = RoundClock::now();
  RoundsOutcome out;
  json published = json::object();
  for (auto& m : members) {
    const auto ta = RoundClock::now();
    auto got = first(m);
    m.agentMs += roundMsSince(ta);
    if (!got) {
      noteRound(m, firstName, got.error());
      continue;
    }
    for (auto& [plugin, objects] : got->items())
      if (objects.is_array())
        for (auto& o : objects) published[plugin].push_back(std::move(o));
  }
  const std::string merged = published.dump();
  out.publishedBytes = merged.size();
  auto eachTold = [&](const char* what, auto&& send) {
    for (auto& m : members) {
      if (!m.told) continue;
      const auto ta = RoundClock::now();
      if (Status s = send(m.socket); !s) noteRound(m, what, s.error());
      m.agentMs += roundMsSince(ta);
    }
  };
  eachTold("connect", [&](const std::string& socket) -> Status {
    if (merged.size() > kMaxPublished)
      return fail(Errc::invalidArgument, cat("the members published ", merged.size(), " bytes of ids, more than the ",
                                             kMaxPublished, " one agent message carries"));
    return agent::connectPeers(socket, published);
  });
  eachTold("thaw", [](const std::string& socket) { return agent::notifyThaw(socket); });
  out.ms = roundMsSince(t0);
  return out;
}

}  // namespace vmckpt::vmm
