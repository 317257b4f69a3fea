// vmckpt-agent: requests from the host (virtio-serial side of PROTOCOL.md). Parsing and
// validating one line, and building the reply lines. Pure: no I/O, no agent state.
#pragma once

#include <chrono>
#include <cstdint>
#include <expected>
#include <optional>
#include <string>
#include <string_view>

#include "wire.hpp"

namespace vmckpt::agent {

using Json = nlohmann::json;

inline constexpr std::string_view kAgentVersion = VMCKPT_VERSION;
inline constexpr int64_t kMaxDeadlineMs = 600000;
inline constexpr size_t kMaxTokenBytes = 256;
// Compact JSON; leaves room for the RESTART event around it on the process channel.
inline constexpr size_t kMaxDeviceMapBytes = wire::kMaxLineBytes - 1024;

enum class ErrorCode { parse, unknownCommand, badArgs, wrongState, pluginFailed, deadline, internal };
std::string_view errorCodeName(ErrorCode code);  // "parse", "unknown_command", ...

enum class Command { sync, ping, info, quiesce, thaw, restored, status, connect, release };
std::string_view commandName(Command cmd);

struct HostRequest {
  uint64_t id = 0;
  Command cmd = Command::ping;
  std::string token;                          // sync
  std::chrono::milliseconds deadline{0};      // quiesce, release; thaw, restored, connect: 0 if not given
  Json deviceMap = Json::object();            // restored
  bool connectFollows = false;                // restored, thaw
  bool release = false;                       // quiesce: stop after PRESUSPEND (state drained)
  Json peers = Json::object();                // connect: plugin name -> array
};

// A line that gets an error reply at once, without touching agent state.
struct RejectedRequest {
  std::optional<uint64_t> id;  // null in the reply when the id could not be read
  ErrorCode code;
  std::string message;
};

// One framed item from the host: a request; nullopt for a blank line (the resync
// newline, which gets no reply); or a rejection.
std::expected<std::optional<HostRequest>, RejectedRequest> parseHostItem(
    const wire::LineBuffer::Item& item);

// Reply lines, at most wire::kMaxLineBytes long (a longer result becomes an internal error).
std::string okReply(uint64_t id, Json result);
// The ok reply line if it fits the line limit, else the size it would have.
std::expected<std::string, size_t> okReplyIfFits(uint64_t id, Json result);
std::string errorReply(std::optional<uint64_t> id, ErrorCode code, std::string_view message);
inline std::string errorReply(const RejectedRequest& r) { return errorReply(r.id, r.code, r.message); }

}  // namespace vmckpt::agent
