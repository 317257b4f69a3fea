#include "vmm/agent/agent_protocol.hpp"

namespace vmckpt::vmm::agent {
namespace {

constexpr std::size_t kMaxMessageChars = 512;

// One printable line of bounded length from a guest-supplied string.
std::string cleanText(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (out.size() >= kMaxMessageChars) break;
    out += (c < 0x20 || c == 0x7f) ? '?' : static_cast<char>(c);
  }
  return out;
}

}  // namespace

ParseOutcome parseAgentLine(std::string_view line) {
  ParseOutcome out;
  if (line.size() >= kMaxLineBytes) {
    out.problem = "line longer than 64 KiB";
    return out;
  }
  nlohmann::json j = nlohmann::json::parse(line.begin(), line.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    out.problem = "not valid JSON";
    return out;
  }
  if (!j.is_object()) {
    out.problem = "not a JSON object";
    return out;
  }
  auto id = j.find("id");
  if (id == j.end()) {
    out.problem = "no id";
    return out;
  }
  if (id->is_number_unsigned()) out.reply.id = id->get<std::uint64_t>();
  else if (id->is_number_integer() && id->get<std::int64_t>() >= 0) out.reply.id = static_cast<std::uint64_t>(id->get<std::int64_t>());
  else if (!id->is_null()) {
    out.problem = "id is not an unsigned integer";
    return out;
  }
  auto ok = j.find("ok");
  if (ok == j.end() || !ok->is_boolean()) {
    out.problem = "no boolean ok";
    return out;
  }
  out.reply.ok = ok->get<bool>();
  if (out.reply.ok) {
    auto r = j.find("result");
    if (r != j.end()) {
      if (!r->is_object()) {
        out.problem = "result is not an object";
        return out;
      }
      out.reply.result = *r;
    }
  } else {
    auto e = j.find("error");
    if (e == j.end() || !e->is_object()) {
      out.problem = "ok is false but there is no error object";
      return out;
    }
    auto code = e->find("code");
    auto msg = e->find("message");
    out.reply.errorCode = code != e->end() && code->is_string() ? cleanText(code->get<std::string>()) : "unknown";
    out.reply.errorMessage = msg != e->end() && msg->is_string() ? cleanText(msg->get<std::string>()) : "no message";
  }
  out.valid = true;
  return out;
}

std::string encodeRequest(std::uint64_t id, std::string_view cmd, const nlohmann::json& args) {
  nlohmann::json j = {{"id", id}, {"cmd", cmd}};
  if (!args.is_null() && !(args.is_object() && args.empty())) j["args"] = args;
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

void LineSplitter::feed(std::string_view bytes) { buf_.append(bytes.data(), bytes.size()); }

std::optional<std::string> LineSplitter::next() {
  for (;;) {
    std::size_t nl = buf_.find('\n', scanned_);
    if (nl == std::string::npos) {
      scanned_ = buf_.size();
      if (!skipping_ && buf_.size() >= kMaxLineBytes) {
        skipping_ = true;
        ++overlong_;
      }
      if (skipping_) {  // drop what we have of the overlong line; keep looking for its end
        buf_.clear();
        scanned_ = 0;
      }
      return std::nullopt;
    }
    std::string line = buf_.substr(0, nl);
    buf_.erase(0, nl + 1);
    scanned_ = 0;
    if (skipping_) {  // the tail of an overlong line
      skipping_ = false;
      continue;
    }
    if (line.size() + 1 > kMaxLineBytes) {
      ++overlong_;
      continue;
    }
    if (!line.empty() && line.back() == '\r') line.pop_back();
    return line;
  }
}

std::size_t LineSplitter::takeOverlong() {
  std::size_t n = overlong_;
  overlong_ = 0;
  return n;
}

}  // namespace vmckpt::vmm::agent
