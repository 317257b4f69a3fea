// The host's reading of the agent protocol (guest-agent/PROTOCOL.md): pure functions
// over bytes, no I/O. Everything here sees guest-controlled data, so it is bounded and
// never throws; it is the libFuzzer target's entry point (tests/fuzz). It avoids
// common/error.hpp so that clang 14 (no std::expected) can build the fuzzer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

namespace vmckpt::vmm::agent {

// One line, newline included; the agent keeps to the same cap.
inline constexpr std::size_t kMaxLineBytes = 65536;

struct AgentReply {
  std::optional<std::uint64_t> id;  // empty for `"id": null` (the agent's parse errors)
  bool ok = false;
  nlohmann::json result = nlohmann::json::object();
  std::string errorCode;
  std::string errorMessage;  // one line, at most 512 characters, control characters removed
};

struct ParseOutcome {
  bool valid = false;
  std::string problem;  // why not, when not valid
  AgentReply reply;
};

// Parses one line (without its newline) from the agent.
ParseOutcome parseAgentLine(std::string_view line);

// A request line, newline included.
std::string encodeRequest(std::uint64_t id, std::string_view cmd, const nlohmann::json& args);

// Cuts a byte stream into lines. A line longer than kMaxLineBytes is not kept: it is
// reported once through overlong() and skipped up to its newline.
class LineSplitter {
 public:
  void feed(std::string_view bytes);
  // The next complete line, without its newline.
  std::optional<std::string> next();
  // Number of overlong lines seen since the last call (resets the count).
  std::size_t takeOverlong();

 private:
  std::string buf_;
  std::size_t scanned_ = 0;     // bytes of buf_ known to hold no newline
  bool skipping_ = false;       // inside an overlong line
  std::size_t overlong_ = 0;
};

}  // namespace vmckpt::vmm::agent
