#include "vmm/agent/agent_client.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cerrno>
#include <cstring>
#include <random>

#include "common/log.hpp"
#include "common/strings.hpp"

namespace vmckpt::vmm::agent {
namespace {

Error agentError(std::string msg) { return Error(Errc::protocol, cat("agent: ", msg)); }

}  // namespace

Result<Client> Client::connect(const std::string& socketPath, Deadline deadline) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return failErrno("socket", errno);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socketPath.size() >= sizeof addr.sun_path) return fail(Errc::invalidArgument, cat("agent socket path too long: ", socketPath));
  std::memcpy(addr.sun_path, socketPath.c_str(), socketPath.size() + 1);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    int err = errno;
    if (err == ENOENT || err == ECONNREFUSED)
      return fail(Errc::unsupported, cat("no agent channel (", socketPath, ": ", std::strerror(err), ")"), err);
    return failErrno(cat("connect ", socketPath), err);
  }
  return handshake(std::move(fd), deadline);
}

Result<Client> Client::handshake(UniqueFd fd, Deadline deadline) {
  Client c(std::move(fd));
  std::random_device rd;
  char token[17];
  std::snprintf(token, sizeof token, "%08x%08x", rd(), rd());
  std::uint64_t id = c.nextId_++;
  // The bare newline ends whatever partial line the agent may hold.
  VMCKPT_TRY(c.send("\n" + encodeRequest(id, "sync", {{"token", token}}), deadline));
  std::size_t bytes = 0, lines = 0;
  for (;;) {
    auto line = c.readLine(deadline, bytes, lines);
    if (!line) {
      if (line.error().code() == Errc::timeout)
        return fail(Errc::timeout, "the guest agent did not answer (not running in the guest?)");
      return fail(line.error());
    }
    ParseOutcome p = parseAgentLine(*line);
    // Before the token's reply everything is stale: drop it (within the budgets).
    if (p.valid && p.reply.id == id && p.reply.ok && p.reply.result.value("token", "") == token) return c;
    log::debug("agent: dropping stale line during resync");
  }
}

Status Client::send(const std::string& data, Deadline deadline) {
  std::size_t off = 0;
  while (off < data.size()) {
    pollfd p{fd_.get(), POLLOUT, 0};
    int r = ::poll(&p, 1, deadline.pollTimeoutMs());
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return failErrno("poll", errno);
    if (r == 0) return fail(Errc::timeout, "agent: the channel took no data before the deadline (guest not reading)");
    ssize_t n = ::send(fd_.get(), data.data() + off, data.size() - off, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n < 0) return failErrno("agent: send", errno);
    off += static_cast<std::size_t>(n);
  }
  return {};
}

Result<std::string> Client::readLine(Deadline deadline, std::size_t& bytes, std::size_t& lines) {
  for (;;) {
    if (auto line = split_.next()) {
      if (++lines > kMaxLinesPerCall) return fail(agentError(cat("flooded the channel (more than ", kMaxLinesPerCall, " lines)")));
      return *line;
    }
    if (split_.takeOverlong() > 0) return fail(agentError("sent a line longer than 64 KiB"));
    pollfd p{fd_.get(), POLLIN, 0};
    int r = ::poll(&p, 1, deadline.pollTimeoutMs());
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return failErrno("poll", errno);
    if (r == 0) return fail(Errc::timeout, "agent: no reply before the deadline");
    char buf[16384];
    ssize_t n = ::recv(fd_.get(), buf, sizeof buf, 0);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n < 0) return failErrno("agent: recv", errno);
    if (n == 0) return fail(agentError("the channel closed"));
    bytes += static_cast<std::size_t>(n);
    if (bytes > kMaxBytesPerCall) return fail(agentError(cat("flooded the channel (more than ", kMaxBytesPerCall >> 20, " MiB)")));
    split_.feed(std::string_view(buf, static_cast<std::size_t>(n)));
  }
}

Result<nlohmann::json> Client::call(std::string_view cmd, const nlohmann::json& args, Deadline deadline) {
  std::uint64_t id = nextId_++;
  if (auto s = send(encodeRequest(id, cmd, args), deadline); !s) return fail(s.error().context(cat("agent ", cmd)));
  std::size_t bytes = 0, lines = 0;
  for (;;) {
    auto line = readLine(deadline, bytes, lines);
    if (!line) return fail(line.error().context(cat("agent ", cmd)));
    ParseOutcome p = parseAgentLine(*line);
    if (!p.valid) return fail(agentError(cat(cmd, ": invalid reply (", p.problem, ")")));
    if (!p.reply.id) {  // the agent could not parse our request
      return fail(agentError(cat(cmd, ": ", p.reply.errorCode, ": ", p.reply.errorMessage)));
    }
    if (*p.reply.id != id) return fail(agentError(cat(cmd, ": reply with unknown id ", *p.reply.id)));
    if (!p.reply.ok)
      return fail(Errc::processFailed, cat("agent ", cmd, ": ", p.reply.errorCode, ": ", p.reply.errorMessage));
    return p.reply.result;
  }
}

namespace {

// What a reply's plugins[] published: {"<plugin>": [object, ...]}. The reply is at most
// one 64 KiB line (readLine bounds it); only well-formed objects are kept.
nlohmann::json publishedIn(const nlohmann::json& reply) {
  nlohmann::json out = nlohmann::json::object();
  auto plugins = reply.find("plugins");
  if (plugins == reply.end() || !plugins->is_array()) return out;
  for (const auto& p : *plugins) {
    if (!p.is_object()) continue;
    auto name = p.find("name");
    auto data = p.find("data");
    if (name == p.end() || !name->is_string() || data == p.end() || !data->is_object()) continue;
    out[name->get<std::string>()].push_back(*data);
  }
  return out;
}

// One command on a connection of its own: the agent gets `deadline` (deadline_ms) for
// its processes, the host waits that plus a little for the reply.
Result<nlohmann::json> callOnce(const std::string& socketPath, std::string_view cmd, nlohmann::json args,
                                std::chrono::milliseconds deadline,
                                std::chrono::milliseconds connectTimeout = std::chrono::seconds(10)) {
  auto c = Client::connect(socketPath, Deadline::in(connectTimeout));
  if (!c) return fail(c.error());
  args["deadline_ms"] = deadline.count();
  return c->call(cmd, args, Deadline::in(deadline + std::chrono::seconds(2)));
}

}  // namespace

using std::chrono::milliseconds;

Status notifyRestored(const std::string& socketPath, const nlohmann::json& deviceMap, milliseconds connectTimeout) {
  auto r = callOnce(socketPath, "restored", {{"device_map", deviceMap}}, milliseconds(10000), connectTimeout);
  if (!r) return fail(r.error());
  return {};
}

Result<nlohmann::json> restoredForGroup(const std::string& socketPath, const nlohmann::json& deviceMap,
                                        milliseconds connectTimeout) {
  auto r = callOnce(socketPath, "restored", {{"device_map", deviceMap}, {"connect_follows", true}},
                    milliseconds(20000), connectTimeout);
  if (!r) return fail(r.error());
  return publishedIn(*r);
}

Result<nlohmann::json> thawForGroup(const std::string& socketPath) {
  auto r = callOnce(socketPath, "thaw", {{"connect_follows", true}}, milliseconds(20000));
  if (!r) return fail(r.error());
  return publishedIn(*r);
}

Status connectPeers(const std::string& socketPath, const nlohmann::json& peers) {
  auto r = callOnce(socketPath, "connect", {{"peers", peers}}, milliseconds(20000));
  if (!r) return fail(r.error());
  return {};
}

Status notifyThaw(const std::string& socketPath) {
  auto r = callOnce(socketPath, "thaw", nlohmann::json::object(), milliseconds(10000));
  if (!r) return fail(r.error());
  return {};
}

}  // namespace vmckpt::vmm::agent
