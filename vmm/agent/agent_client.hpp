// The host's connection to the guest agent, through QEMU's chardev socket for the
// virtio-serial port org.vmckpt.agent.0. The guest is untrusted: every read is bounded
// in size, count and time, and anything off-protocol ends the call with a clear error.
#pragma once

#include <chrono>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "common/deadline.hpp"
#include "common/error.hpp"
#include "common/unique_fd.hpp"
#include "vmm/agent/agent_protocol.hpp"

namespace vmckpt::vmm::agent {

// What one call may read before the agent counts as flooding the channel.
inline constexpr std::size_t kMaxBytesPerCall = 4u << 20;
inline constexpr std::size_t kMaxLinesPerCall = 1024;

class Client {
 public:
  // Connects and resynchronizes (a bare newline, then `sync` with a random token; lines
  // before the token's reply are stale and dropped). Errc::timeout when no agent answers.
  static Result<Client> connect(const std::string& socketPath, Deadline deadline);
  // Over an already connected socket (tests use a socketpair).
  static Result<Client> handshake(UniqueFd fd, Deadline deadline);

  // Runs a command; its result object, or the agent's error as Errc::processFailed
  // ("agent: <code>: <message>").
  Result<nlohmann::json> call(std::string_view cmd, const nlohmann::json& args, Deadline deadline);

 private:
  explicit Client(UniqueFd fd) : fd_(std::move(fd)) {}
  Status send(const std::string& line, Deadline deadline);
  // The next line, within the call's budgets.
  Result<std::string> readLine(Deadline deadline, std::size_t& bytes, std::size_t& lines);

  UniqueFd fd_;
  LineSplitter split_;
  std::uint64_t nextId_ = 1;
};

// Tells the agent behind `socketPath` that the VM was restored: it thaws filesystems
// frozen in the snapshot and sends RESTART (with `deviceMap`) to its plugins.
// `connectTimeout` bounds how long to wait for an agent to answer at all.
Status notifyRestored(const std::string& socketPath, const nlohmann::json& deviceMap,
                      std::chrono::milliseconds connectTimeout);

// The three rounds of a group restore (restore --group; vmm/group_rounds.hpp), once every
// member runs:
//  1. restoredForGroup: 'restored' with connect_follows; the plugins rebuild and may
//     publish ids. Returns {"<plugin>": [object, ...]}: what this guest's processes
//     published (objects only; the host relays them and never interprets them).
//  2. connectPeers: 'connect' with every member's published objects merged.
//  3. notifyThaw: 'thaw', so every process resumes only once all members are connected.
Result<nlohmann::json> restoredForGroup(const std::string& socketPath, const nlohmann::json& deviceMap,
                                        std::chrono::milliseconds connectTimeout);
Status connectPeers(const std::string& socketPath, const nlohmann::json& peers);
// Round 1 after a group snapshot (or its rollback) whose plugins released their devices:
// 'thaw' with connect_follows; the plugins rebuild on the same devices and publish, as
// restoredForGroup returns.
Result<nlohmann::json> thawForGroup(const std::string& socketPath);
Status notifyThaw(const std::string& socketPath);

}  // namespace vmckpt::vmm::agent
