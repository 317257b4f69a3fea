#include "process_table.hpp"

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace vmckpt::agent {

namespace {
std::string describe(int64_t pid, const std::string& plugin) {
  return "plugin " + plugin + " (pid " + std::to_string(pid) + ")";
}
}  // namespace

void ProcessTable::acceptAll(int listenFd) {
  for (;;) {
    UniqueFd fd(::accept4(listenFd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (!fd) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) log_.info(std::string("accept: ") + std::strerror(errno));
      return;
    }
    ucred cred{};
    socklen_t len = sizeof cred;
    if (::getsockopt(fd.get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
      log_.info(std::string("SO_PEERCRED: ") + std::strerror(errno));
      continue;
    }
    if (conns_.size() >= limits_.maxConnections) {
      std::string line = wire::encodeError("too many connections (" + std::to_string(limits_.maxConnections) + ")");
      (void)::send(fd.get(), line.data(), line.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      log_.info("refused pid " + std::to_string(cred.pid) + ": too many connections");
      continue;
    }
    auto c = std::make_unique<Conn>();
    c->id = nextId_++;
    c->fd = std::move(fd);
    c->pid = cred.pid;
    c->registerBy = Deadline::in(limits_.registerTimeout);
    log_.debug("connection from pid " + std::to_string(c->pid));
    conns_.emplace(c->id, std::move(c));
  }
}

void ProcessTable::addPollFds(std::vector<pollfd>& fds, std::vector<ConnId>& owners) const {
  for (const auto& [id, c] : conns_) {
    short ev = POLLIN;
    if (!c->out.empty()) ev |= POLLOUT;
    fds.push_back({c->fd.get(), ev, 0});
    owners.push_back(id);
  }
}

void ProcessTable::handle(ConnId id, short revents) {
  auto it = conns_.find(id);
  if (it == conns_.end()) return;
  Conn& c = *it->second;
  auto doomed = [&] { return std::find(doomed_.begin(), doomed_.end(), id) != doomed_.end(); };
  if (revents & POLLOUT) flush(c);
  if (!doomed() && (revents & (POLLIN | POLLHUP | POLLERR))) {
    char buf[16384];
    for (;;) {
      ssize_t n = ::recv(c.fd.get(), buf, sizeof buf, MSG_DONTWAIT);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      if (n <= 0) {
        drop(id, n == 0 ? "connection closed" : std::string("recv: ") + std::strerror(errno));
        break;
      }
      c.in.append(std::string_view(buf, static_cast<size_t>(n)));
      while (!doomed()) {
        auto item = c.in.next();
        if (!item) break;
        onLine(c, *item);
      }
      if (doomed()) break;
    }
  }
  finishDrops();
}

// Dropped connections go last, after everything they said has been handled.
void ProcessTable::finishDrops() {
  std::vector<ConnId> gone;
  gone.swap(doomed_);
  for (ConnId g : gone) {
    auto git = conns_.find(g);
    if (git == conns_.end()) continue;
    Conn& d = *git->second;
    auto goneAnswer = [&](const ProcessEvent& ev) {
      answers_.push_back({d.id, d.pid, d.plugin, ev, wire::Outcome::notMine, "process went away", true, {}});
    };
    if (d.inFlight) goneAnswer(*d.inFlight);
    for (const auto& ev : d.queued) goneAnswer(ev);
    conns_.erase(git);
  }
}

void ProcessTable::onLine(Conn& c, const wire::LineBuffer::Item& item) {
  if (item.kind == wire::LineBuffer::Kind::oversized) {
    queueOut(c, wire::encodeError("parse: line longer than " + std::to_string(wire::kMaxLineBytes) +
                                  " bytes discarded"));
    return;
  }
  if (item.text.find_first_not_of(" \t\r") == std::string::npos) return;  // blank: resync
  auto msg = wire::parseObject(item.text);
  if (!msg) {
    queueOut(c, wire::encodeError("parse: " + msg.error()));
    return;
  }
  std::string type = wire::messageType(*msg);

  if (!c.registered) {
    if (type != "register") {
      reject(c.id, "register first");
      return;
    }
    auto reg = wire::decodeRegister(*msg);
    if (!reg) {
      reject(c.id, "bad register: " + reg.error());
      return;
    }
    if (reg->apiVersion < wire::kMinApiVersion || reg->apiVersion > wire::kApiVersion) {
      reject(c.id, "api_version " + std::to_string(reg->apiVersion) + " is not supported (this agent speaks " +
                       std::to_string(wire::kMinApiVersion) + ".." + std::to_string(wire::kApiVersion) + ")");
      return;
    }
    if (!wire::validPluginName(reg->plugin)) {
      reject(c.id, "plugin name must be 1..64 bytes of A-Z a-z 0-9 _ . -");
      return;
    }
    c.registered = true;
    c.plugin = reg->plugin;
    c.apiVersion = reg->apiVersion;
    queueOut(c, wire::encodeRegistered(c.pid));
    log_.info(describe(c.pid, c.plugin) + " registered");
    return;
  }

  if (type == "reply") {
    auto reply = wire::decodeReply(*msg);
    if (!reply) {
      queueOut(c, wire::encodeError("bad reply: " + reply.error()));
      return;
    }
    if (!c.inFlight || c.inFlight->seq != reply->seq) {
      log_.debug(describe(c.pid, c.plugin) + " answered seq " + std::to_string(reply->seq) +
                 ", which it was not sent; ignored");
      return;
    }
    answers_.push_back({c.id, c.pid, c.plugin, std::move(*c.inFlight), reply->result, reply->reason, false,
                        std::move(reply->data)});
    c.inFlight.reset();
    if (!c.queued.empty()) {
      ProcessEvent next = std::move(c.queued.front());
      c.queued.pop_front();
      transmit(c, next);
    }
    return;
  }
  if (type == "register") {
    queueOut(c, wire::encodeError("already registered"));
    return;
  }
  // Other types are ignored (tolerant reader).
}

void ProcessTable::transmit(Conn& c, const ProcessEvent& ev) {
  c.inFlight = ev;
  wire::EventPayload payload{ev.deviceMap ? &*ev.deviceMap : nullptr, ev.connectFollows,
                             ev.peers ? &*ev.peers : nullptr, ev.release};
  queueOut(c, wire::encodeEvent(ev.seq, ev.kind, payload));
}

void ProcessTable::queueOut(Conn& c, std::string line) {
  if (c.out.size() + line.size() > limits_.maxOutputBytes) {
    drop(c.id, "it does not read its socket");
    return;
  }
  c.out += line;
  flush(c);
}

void ProcessTable::flush(Conn& c) {
  while (!c.out.empty()) {
    ssize_t n = ::send(c.fd.get(), c.out.data(), c.out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      c.out.erase(0, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    drop(c.id, std::string("send: ") + std::strerror(errno));
    return;
  }
}

void ProcessTable::drop(ConnId id, const std::string& why) {
  if (std::find(doomed_.begin(), doomed_.end(), id) != doomed_.end()) return;
  doomed_.push_back(id);
  auto it = conns_.find(id);
  if (it == conns_.end()) return;
  const Conn& c = *it->second;
  if (c.registered) log_.info(describe(c.pid, c.plugin) + " unregistered: " + why);
  else log_.debug("connection from pid " + std::to_string(c.pid) + " dropped: " + why);
}

void ProcessTable::reject(ConnId id, const std::string& message) {
  auto it = conns_.find(id);
  if (it == conns_.end()) return;
  std::string line = wire::encodeError(message);
  (void)::send(it->second->fd.get(), line.data(), line.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  log_.info("refused pid " + std::to_string(it->second->pid) + ": " + message);
  drop(id, message);
}

void ProcessTable::onTimer() {
  for (const auto& [id, c] : conns_)
    if (!c->registered && c->registerBy.expired()) drop(id, "it did not register in time");
  finishDrops();
}

std::optional<Deadline::Clock::time_point> ProcessTable::nextDeadline() const {
  std::optional<Deadline::Clock::time_point> next;
  for (const auto& [id, c] : conns_)
    if (!c->registered && (!next || c->registerBy.when() < *next)) next = c->registerBy.when();
  return next;
}

std::optional<uint64_t> ProcessTable::sendEvent(ConnId id, wire::EventKind kind, const wire::EventPayload& payload,
                                                uint64_t opId, bool* sentNow) {
  auto it = conns_.find(id);
  if (it == conns_.end() || !it->second->registered ||
      std::find(doomed_.begin(), doomed_.end(), id) != doomed_.end())
    return std::nullopt;
  Conn& c = *it->second;
  ProcessEvent ev;
  ev.seq = nextSeq_++;
  ev.kind = kind;
  if (payload.deviceMap) ev.deviceMap = *payload.deviceMap;
  ev.opId = opId;
  ev.connectFollows = payload.connectFollows;
  if (payload.peers) ev.peers = *payload.peers;
  ev.release = payload.release;
  uint64_t seq = ev.seq;
  bool now = !c.inFlight;
  if (now) {
    transmit(c, ev);
  } else if (c.queued.size() >= limits_.maxQueuedEvents) {
    // It has not answered one event while this many more piled up: it is stuck.
    c.queued.push_back(std::move(ev));
    drop(id, "it answers no events (" + std::to_string(c.queued.size()) + " queued)");
  } else {
    c.queued.push_back(std::move(ev));
  }
  if (sentNow) *sentNow = now;
  finishDrops();
  return seq;
}

std::vector<EventAnswer> ProcessTable::takeAnswers() {
  std::vector<EventAnswer> out;
  out.swap(answers_);
  return out;
}

std::vector<ProcessInfo> ProcessTable::registered() const {
  std::vector<ProcessInfo> out;
  for (const auto& [id, c] : conns_)
    if (c->registered) out.push_back({id, c->pid, c->plugin, c->apiVersion});
  return out;
}

size_t ProcessTable::registeredCount() const {
  size_t n = 0;
  for (const auto& [id, c] : conns_) n += c->registered ? 1 : 0;
  return n;
}

void ProcessTable::closeAll() { conns_.clear(); }

}  // namespace vmckpt::agent
