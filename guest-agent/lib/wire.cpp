#include "wire.hpp"

#include <algorithm>
#include <array>

namespace vmckpt::wire {

void LineBuffer::append(std::string_view bytes) {
  while (!bytes.empty()) {
    size_t nl = bytes.find('\n');
    if (discarding_) {
      if (nl == std::string_view::npos) return;
      discarding_ = false;
      bytes.remove_prefix(nl + 1);
      continue;
    }
    std::string_view chunk = nl == std::string_view::npos ? bytes : bytes.substr(0, nl);
    // A line of L bytes takes L + 1 with its '\n': too long once L reaches the limit.
    if (partial_.size() + chunk.size() >= max_) {
      ready_.push_back({Kind::oversized, {}});
      partial_.clear();
      if (nl == std::string_view::npos) {
        discarding_ = true;
        return;
      }
      bytes.remove_prefix(nl + 1);
      continue;
    }
    partial_.append(chunk);
    if (nl == std::string_view::npos) return;
    if (!partial_.empty() && partial_.back() == '\r') partial_.pop_back();
    ready_.push_back({Kind::line, std::move(partial_)});
    partial_.clear();
    bytes.remove_prefix(nl + 1);
  }
}

std::optional<LineBuffer::Item> LineBuffer::next() {
  if (ready_.empty()) return std::nullopt;
  Item item = std::move(ready_.front());
  ready_.pop_front();
  return item;
}

void LineBuffer::clear() {
  partial_.clear();
  ready_.clear();
  discarding_ = false;
}

std::string toLine(const Json& message) {
  std::string s = message.dump(-1, ' ', false, Json::error_handler_t::replace);
  s.push_back('\n');
  return s;
}

namespace {

// JSON nesting is capped before parsing: nlohmann's dump and copy recurse per level.
constexpr int kMaxNesting = 64;

int maxNesting(std::string_view text) {
  int depth = 0, deepest = 0;
  bool inString = false, escaped = false;
  for (char c : text) {
    if (inString) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') inString = false;
      continue;
    }
    if (c == '"') inString = true;
    else if (c == '{' || c == '[') deepest = std::max(deepest, ++depth);
    else if (c == '}' || c == ']') --depth;
  }
  return deepest;
}

}  // namespace

std::expected<Json, std::string> parseObject(std::string_view line) {
  if (maxNesting(line) > kMaxNesting)
    return std::unexpected("JSON nested deeper than " + std::to_string(kMaxNesting) + " levels");
  Json j;
  try {
    j = Json::parse(line);
  } catch (const Json::parse_error& e) {
    // "[json.exception.parse_error.101] parse error at ..." -> "parse error at ..."
    std::string what = e.what();
    if (auto p = what.find("] "); p != std::string::npos) what.erase(0, p + 2);
    return std::unexpected(oneLine(what, 200));
  }
  if (!j.is_object()) return std::unexpected(std::string("not a JSON object"));
  return j;
}

std::string oneLine(std::string_view text, size_t maxBytes) {
  std::string out;
  out.reserve(std::min(text.size(), maxBytes));
  for (unsigned char c : text) {
    if (out.size() >= maxBytes) break;
    out.push_back(c < 0x20 || c == 0x7f ? ' ' : static_cast<char>(c));
  }
  if (text.size() > maxBytes) {
    // Do not end inside a UTF-8 sequence: drop continuation bytes and their lead.
    size_t n = out.size();
    while (n > 0 && (static_cast<unsigned char>(out[n - 1]) & 0xC0) == 0x80) --n;
    if (n > 0 && (static_cast<unsigned char>(out[n - 1]) & 0x80)) --n;
    out.resize(n);
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

bool validPluginName(std::string_view name) {
  if (name.empty() || name.size() > kMaxPluginNameBytes) return false;
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == '-';
    if (!ok) return false;
  }
  return true;
}

namespace {
constexpr std::array<std::string_view, 5> kEventNames = {"PRESUSPEND", "PRECHECKPOINT", "RESUME",
                                                         "RESTART", "CONNECT"};
}

std::string_view eventName(EventKind kind) {
  int i = static_cast<int>(kind) - 1;
  if (i < 0 || static_cast<size_t>(i) >= kEventNames.size()) return "UNKNOWN";
  return kEventNames[static_cast<size_t>(i)];
}

std::optional<EventKind> eventFromName(std::string_view name) {
  for (size_t i = 0; i < kEventNames.size(); ++i)
    if (kEventNames[i] == name) return static_cast<EventKind>(i + 1);
  return std::nullopt;
}

std::string_view outcomeName(Outcome outcome) {
  switch (outcome) {
    case Outcome::done: return "done";
    case Outcome::failed: return "failed";
    case Outcome::notMine: return "not_mine";
  }
  return "failed";
}

std::optional<Outcome> outcomeFromName(std::string_view name) {
  if (name == "done") return Outcome::done;
  if (name == "failed") return Outcome::failed;
  if (name == "not_mine") return Outcome::notMine;
  return std::nullopt;
}

std::string encodeRegister(std::string_view plugin, int apiVersion) {
  return toLine({{"type", "register"}, {"plugin", plugin}, {"api_version", apiVersion}});
}

std::string encodeRegistered(int64_t pid) { return toLine({{"type", "registered"}, {"pid", pid}}); }

std::string encodeError(std::string_view message) {
  return toLine({{"type", "error"}, {"message", oneLine(message, 1024)}});
}

std::string encodeEvent(uint64_t seq, EventKind kind, const Json* deviceMap) {
  return encodeEvent(seq, kind, EventPayload{deviceMap, false, nullptr});
}

std::string encodeEvent(uint64_t seq, EventKind kind, const EventPayload& payload) {
  Json j = {{"type", "event"}, {"seq", seq}, {"event", eventName(kind)}};
  if (payload.deviceMap) j["device_map"] = *payload.deviceMap;
  if (payload.connectFollows) j["connect_follows"] = true;
  if (payload.peers) j["peers"] = *payload.peers;
  if (payload.release) j["release"] = true;
  return toLine(j);
}

std::string encodeReply(uint64_t seq, Outcome result, std::string_view reason, const Json* data) {
  Json j = {{"type", "reply"}, {"seq", seq}, {"result", outcomeName(result)}};
  if (!reason.empty()) j["reason"] = oneLine(reason);
  if (data) j["data"] = *data;
  return toLine(j);
}

bool publishAllowed(EventKind kind, bool connectFollows, bool release) {
  return kind == EventKind::restart || (kind == EventKind::resume && connectFollows) ||
         ((kind == EventKind::presuspend || kind == EventKind::precheckpoint) && release);
}

std::expected<size_t, std::string> checkPublished(const Json& data) {
  if (!data.is_object()) return std::unexpected(std::string("published data is not a JSON object"));
  size_t n = data.dump(-1, ' ', false, Json::error_handler_t::replace).size();
  if (n > kMaxPublishBytes)
    return std::unexpected("published data is " + std::to_string(n) + " bytes, more than " +
                           std::to_string(kMaxPublishBytes));
  return n;
}

std::expected<bool, std::string> optionalFlag(const Json& object, const std::string& key) {
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) return false;
  if (!it->is_boolean()) return std::unexpected(key + " is not a boolean");
  return it->get<bool>();
}

std::string messageType(const Json& message) {
  auto it = message.find("type");
  if (it == message.end() || !it->is_string()) return {};
  return it->get<std::string>();
}

namespace {

std::expected<uint64_t, std::string> seqOf(const Json& message) {
  auto it = message.find("seq");
  if (it == message.end() || !it->is_number_unsigned())
    return std::unexpected(std::string("seq missing or not an unsigned integer"));
  return it->get<uint64_t>();
}

}  // namespace

std::expected<RegisterMsg, std::string> decodeRegister(const Json& message) {
  RegisterMsg m;
  auto p = message.find("plugin");
  if (p == message.end() || !p->is_string())
    return std::unexpected(std::string("plugin missing or not a string"));
  m.plugin = p->get<std::string>();
  auto v = message.find("api_version");
  if (v == message.end() || !v->is_number_integer())
    return std::unexpected(std::string("api_version missing or not an integer"));
  m.apiVersion = v->is_number_unsigned() && v->get<uint64_t>() > INT64_MAX ? -1 : v->get<int64_t>();
  return m;
}

std::expected<EventMsg, std::string> decodeEvent(const Json& message) {
  EventMsg m;
  auto seq = seqOf(message);
  if (!seq) return std::unexpected(seq.error());
  m.seq = *seq;
  auto e = message.find("event");
  if (e == message.end() || !e->is_string())
    return std::unexpected(std::string("event missing or not a string"));
  m.event = e->get<std::string>();
  if (auto d = message.find("device_map"); d != message.end()) {
    if (!d->is_object()) return std::unexpected(std::string("device_map is not an object"));
    m.deviceMap = *d;
  }
  auto follows = optionalFlag(message, "connect_follows");
  if (!follows) return std::unexpected(follows.error());
  m.connectFollows = *follows;
  auto release = optionalFlag(message, "release");
  if (!release) return std::unexpected(release.error());
  m.release = *release;
  if (auto p = message.find("peers"); p != message.end()) {
    if (!p->is_array()) return std::unexpected(std::string("peers is not an array"));
    m.peers = *p;
  }
  return m;
}

std::expected<ReplyMsg, std::string> decodeReply(const Json& message) {
  ReplyMsg m;
  auto seq = seqOf(message);
  if (!seq) return std::unexpected(seq.error());
  m.seq = *seq;
  auto r = message.find("result");
  if (r == message.end() || !r->is_string())
    return std::unexpected(std::string("result missing or not a string"));
  auto outcome = outcomeFromName(r->get<std::string>());
  if (!outcome) return std::unexpected("unknown result '" + oneLine(r->get<std::string>(), 32) + "'");
  m.result = *outcome;
  if (auto why = message.find("reason"); why != message.end() && why->is_string())
    m.reason = oneLine(why->get<std::string>());
  if (auto d = message.find("data"); d != message.end() && !d->is_null()) m.data = *d;
  return m;
}

}  // namespace vmckpt::wire
