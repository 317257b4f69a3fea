#include "host_request.hpp"

#include <array>
#include <utility>

namespace vmckpt::agent {

std::string_view errorCodeName(ErrorCode code) {
  switch (code) {
    case ErrorCode::parse: return "parse";
    case ErrorCode::unknownCommand: return "unknown_command";
    case ErrorCode::badArgs: return "bad_args";
    case ErrorCode::wrongState: return "wrong_state";
    case ErrorCode::pluginFailed: return "plugin_failed";
    case ErrorCode::deadline: return "deadline";
    case ErrorCode::internal: return "internal";
  }
  return "internal";
}

namespace {
constexpr std::array<std::pair<std::string_view, Command>, 9> kCommands = {{
    {"sync", Command::sync},
    {"ping", Command::ping},
    {"info", Command::info},
    {"quiesce", Command::quiesce},
    {"thaw", Command::thaw},
    {"restored", Command::restored},
    {"status", Command::status},
    {"connect", Command::connect},
    {"release", Command::release},
}};

bool blank(std::string_view s) {
  return s.find_first_not_of(" \t\r") == std::string_view::npos;
}
}  // namespace

std::string_view commandName(Command cmd) {
  for (const auto& [name, c] : kCommands)
    if (c == cmd) return name;
  return "?";
}

std::expected<std::optional<HostRequest>, RejectedRequest> parseHostItem(
    const wire::LineBuffer::Item& item) {
  using R = std::unexpected<RejectedRequest>;
  if (item.kind == wire::LineBuffer::Kind::oversized)
    return R({std::nullopt, ErrorCode::parse,
              "line longer than " + std::to_string(wire::kMaxLineBytes) + " bytes discarded"});
  if (blank(item.text)) return std::optional<HostRequest>();

  auto msg = wire::parseObject(item.text);
  if (!msg) return R({std::nullopt, ErrorCode::parse, msg.error()});

  auto idIt = msg->find("id");
  if (idIt == msg->end() || !idIt->is_number_unsigned())
    return R({std::nullopt, ErrorCode::parse, "request has no unsigned integer id"});
  HostRequest req;
  req.id = idIt->get<uint64_t>();

  auto cmdIt = msg->find("cmd");
  if (cmdIt == msg->end() || !cmdIt->is_string())
    return R({req.id, ErrorCode::parse, "request has no cmd string"});
  std::string cmd = cmdIt->get<std::string>();
  bool known = false;
  for (const auto& [name, c] : kCommands)
    if (name == cmd) req.cmd = c, known = true;
  if (!known)
    return R({req.id, ErrorCode::unknownCommand, "unknown command '" + wire::oneLine(cmd, 64) + "'"});

  Json args = Json::object();
  if (auto a = msg->find("args"); a != msg->end() && !a->is_null()) {
    if (!a->is_object()) return R({req.id, ErrorCode::badArgs, "args is not an object"});
    args = std::move(*a);
  }

  if (req.cmd == Command::sync) {
    auto t = args.find("token");
    if (t == args.end() || !t->is_string())
      return R({req.id, ErrorCode::badArgs, "sync needs a token string"});
    req.token = t->get<std::string>();
    if (req.token.size() > kMaxTokenBytes)
      return R({req.id, ErrorCode::badArgs, "token longer than " + std::to_string(kMaxTokenBytes) + " bytes"});
  }

  // deadline_ms: required for quiesce and release, which roll back when it passes;
  // optional for thaw, restored and connect, where it bounds the wait for the processes'
  // answers (the agent's default otherwise).
  bool deadlineRequired = req.cmd == Command::quiesce || req.cmd == Command::release;
  if (deadlineRequired || req.cmd == Command::thaw || req.cmd == Command::restored ||
      req.cmd == Command::connect) {
    auto d = args.find("deadline_ms");
    bool given = d != args.end() && !d->is_null();
    if (given || deadlineRequired) {
      // Non-negative JSON integers parse as unsigned; a negative one is out of range anyway.
      uint64_t ms = given && d->is_number_unsigned() ? d->get<uint64_t>() : 0;
      if (!given || !d->is_number_integer())
        return R({req.id, ErrorCode::badArgs,
                  std::string(commandName(req.cmd)) + " needs deadline_ms, an integer 1..600000"});
      if (ms < 1 || ms > static_cast<uint64_t>(kMaxDeadlineMs))
        return R({req.id, ErrorCode::badArgs, "deadline_ms must be 1..600000"});
      req.deadline = std::chrono::milliseconds(static_cast<int64_t>(ms));
    }
  }

  if (req.cmd == Command::restored) {
    auto m = args.find("device_map");
    if (m != args.end() && !m->is_null()) {
      if (!m->is_object()) return R({req.id, ErrorCode::badArgs, "device_map is not an object"});
      // It travels on in each RESTART event, which must fit a line too.
      if (wire::toLine(*m).size() > kMaxDeviceMapBytes)
        return R({req.id, ErrorCode::badArgs,
                  "device_map longer than " + std::to_string(kMaxDeviceMapBytes) + " bytes"});
      req.deviceMap = std::move(*m);
    }
  }

  // Optional flags, false when absent: connect_follows (restored, thaw), release (quiesce).
  if (req.cmd == Command::restored || req.cmd == Command::thaw) {
    auto f = wire::optionalFlag(args, "connect_follows");
    if (!f) return R({req.id, ErrorCode::badArgs, f.error()});
    req.connectFollows = *f;
  }
  if (req.cmd == Command::quiesce) {
    auto f = wire::optionalFlag(args, "release");
    if (!f) return R({req.id, ErrorCode::badArgs, f.error()});
    req.release = *f;
  }

  if (req.cmd == Command::connect) {
    auto p = args.find("peers");
    if (p == args.end() || !p->is_object())
      return R({req.id, ErrorCode::badArgs, "connect needs peers, an object of arrays by plugin name"});
    for (const auto& [name, list] : p->items()) {
      if (!list.is_array())
        return R({req.id, ErrorCode::badArgs, "peers." + wire::oneLine(name, 64) + " is not an array"});
      // Each list travels on in a CONNECT event, which must fit a line too.
      if (wire::toLine(list).size() > kMaxDeviceMapBytes)
        return R({req.id, ErrorCode::badArgs,
                  "peers." + wire::oneLine(name, 64) + " longer than " + std::to_string(kMaxDeviceMapBytes) +
                      " bytes"});
    }
    req.peers = std::move(*p);
  }
  return std::optional<HostRequest>(std::move(req));
}

std::expected<std::string, size_t> okReplyIfFits(uint64_t id, Json result) {
  std::string line = wire::toLine({{"id", id}, {"ok", true}, {"result", std::move(result)}});
  if (line.size() > wire::kMaxLineBytes) return std::unexpected(line.size());
  return line;
}

std::string okReply(uint64_t id, Json result) {
  auto line = okReplyIfFits(id, std::move(result));
  if (!line) return errorReply(id, ErrorCode::internal, "result longer than the line limit");
  return std::move(*line);
}

std::string errorReply(std::optional<uint64_t> id, ErrorCode code, std::string_view message) {
  Json j = {{"id", nullptr},
            {"ok", false},
            {"error", {{"code", errorCodeName(code)}, {"message", wire::oneLine(message, 4096)}}}};
  if (id) j["id"] = *id;
  return wire::toLine(j);
}

}  // namespace vmckpt::agent
