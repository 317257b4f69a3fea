// Wire format shared by vmckpt-agent and libvmckpt (guest-agent/PROTOCOL.md): bounded
// newline-delimited framing, and the messages of the agent <-> process channel.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <expected>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace vmckpt::wire {

using Json = nlohmann::json;

// Longest line on either channel, including its '\n'.
inline constexpr size_t kMaxLineBytes = 65536;
// The api_version this side speaks, and the oldest one it still accepts.
inline constexpr int kApiVersion = 2;
inline constexpr int kMinApiVersion = 1;
inline constexpr size_t kMaxPluginNameBytes = 64;
inline constexpr size_t kMaxReasonBytes = 511;
// Longest object a process may publish in an event reply, serialized compact
// (VMCKPT_PUBLISH_MAX).
inline constexpr size_t kMaxPublishBytes = 32768;

// Splits a byte stream into lines. A line longer than the limit is reported once, as
// soon as it is known to be too long, and the rest of it up to the next '\n' is dropped.
class LineBuffer {
 public:
  explicit LineBuffer(size_t maxLineBytes = kMaxLineBytes) : max_(maxLineBytes) {}

  enum class Kind { line, oversized };
  struct Item {
    Kind kind;
    std::string text;  // the line without '\n' (and without a trailing '\r')
  };

  void append(std::string_view bytes);
  // The next complete line or oversize report, in stream order.
  std::optional<Item> next();
  // Forgets any partial line (the peer reconnected).
  void clear();
  // Bytes held that do not form a complete line yet.
  size_t buffered() const { return partial_.size(); }
  // Complete items not taken with next() yet.
  size_t ready() const { return ready_.size(); }

 private:
  size_t max_;
  std::string partial_;      // the line being received, without its '\n'
  std::deque<Item> ready_;
  bool discarding_ = false;  // inside an oversized line: drop up to the next '\n'
};

// Serializes one message as a line: compact JSON, invalid UTF-8 replaced, plus '\n'.
std::string toLine(const Json& message);
// Parses a line as a JSON object; the error is one phrase.
std::expected<Json, std::string> parseObject(std::string_view line);

// Keeps a human string to one printable line of at most maxBytes bytes.
std::string oneLine(std::string_view text, size_t maxBytes = kMaxReasonBytes);
// Plugin names: 1..64 bytes of A-Z a-z 0-9 _ . -
bool validPluginName(std::string_view name);

// --- agent <-> process channel ---------------------------------------------------------

// connect: api_version 2 only.
enum class EventKind { presuspend = 1, precheckpoint = 2, resume = 3, restart = 4, connect = 5 };
std::string_view eventName(EventKind kind);
std::optional<EventKind> eventFromName(std::string_view name);

enum class Outcome { done, failed, notMine };
std::string_view outcomeName(Outcome outcome);  // "done", "failed", "not_mine"
std::optional<Outcome> outcomeFromName(std::string_view name);

struct RegisterMsg {
  std::string plugin;
  int64_t apiVersion = 0;
};
struct EventMsg {
  uint64_t seq = 0;
  std::string event;                 // as sent; eventFromName() may not know it
  std::optional<Json> deviceMap;     // RESTART only
  bool connectFollows = false;       // RESTART, RESUME
  std::optional<Json> peers;         // CONNECT only: an array
  bool release = false;              // PRESUSPEND, PRECHECKPOINT
};
struct ReplyMsg {
  uint64_t seq = 0;
  Outcome result = Outcome::done;
  std::string reason;
  std::optional<Json> data;  // as sent: publishAllowed() and checkPublished() say whether it counts
};

// What goes into an event besides its seq and kind.
struct EventPayload {
  const Json* deviceMap = nullptr;  // RESTART
  bool connectFollows = false;      // RESTART, RESUME
  const Json* peers = nullptr;      // CONNECT
  bool release = false;             // PRESUSPEND, PRECHECKPOINT
};

// Whether a process may publish data in its reply to this event: RESTART, RESUME with
// connect_follows, PRESUSPEND or PRECHECKPOINT with release. Data in any other reply is
// ignored.
bool publishAllowed(EventKind kind, bool connectFollows, bool release);

std::string encodeRegister(std::string_view plugin, int apiVersion = kApiVersion);
std::string encodeRegistered(int64_t pid);
std::string encodeError(std::string_view message);
std::string encodeEvent(uint64_t seq, EventKind kind, const Json* deviceMap);
std::string encodeEvent(uint64_t seq, EventKind kind, const EventPayload& payload);
std::string encodeReply(uint64_t seq, Outcome result, std::string_view reason, const Json* data = nullptr);

// Published data must be a JSON object of at most kMaxPublishBytes serialized compact.
// Returns its size, or why it is refused (one phrase).
std::expected<size_t, std::string> checkPublished(const Json& data);

// An optional boolean member: false when absent or null, else it must be a boolean (the
// error is one phrase).
std::expected<bool, std::string> optionalFlag(const Json& object, const std::string& key);

// The "type" of a message from the process channel ("" when missing or not a string).
std::string messageType(const Json& message);
std::expected<RegisterMsg, std::string> decodeRegister(const Json& message);
std::expected<EventMsg, std::string> decodeEvent(const Json& message);
std::expected<ReplyMsg, std::string> decodeReply(const Json& message);

}  // namespace vmckpt::wire
