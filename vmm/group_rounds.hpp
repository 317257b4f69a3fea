// The agent rounds that reconnect the members of a group whose plugins rebuilt their
// device state (the ib plugin: new QP numbers, keys and GIDs), once every member runs:
//   1. the caller's first round to each member, with connect_follows: 'restored' after a
//      group restore, 'thaw' after a group snapshot (or its rollback) that released the
//      devices. The plugins rebuild and publish their new ids (objects the host relays
//      and never reads).
//   2. 'connect' to each, with everything published, merged.
//   3. 'thaw' to each: every process resumes its traffic only once all are connected.
// A member whose agent fails a round gets a note, and the rounds go on, so that no
// member is left with its traffic held.
#pragma once

#include <nlohmann/json.hpp>

#include <cstddef>
#include <functional>
#include <string>
#include <vector>

#include "common/error.hpp"

namespace vmckpt::vmm {

struct RoundMember {
  std::string vm;
  std::string socket;  // its agent's
  bool told = false;   // took round 1: rounds 2 and 3 are for it
  std::string note;    // the first round it failed, and why
  double agentMs = 0;  // its share of the rounds
};

struct RoundsOutcome {
  std::size_t publishedBytes = 0;  // what round 2 carried
  double ms = 0;                   // all three rounds
};

// Round 1 for one member: what its processes published, {"<plugin>": [object, ...]}.
using FirstRound = std::function<Result<nlohmann::json>(RoundMember&)>;

// Runs the three rounds over `members`: round 1 (`firstName`, for the notes) through
// `first`, which sets `told` once the member's agent was asked.
RoundsOutcome runGroupRounds(std::vector<RoundMember>& members, const char* firstName, const FirstRound& first);

}  // namespace vmckpt::vmm
