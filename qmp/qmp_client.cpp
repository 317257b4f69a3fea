#include "qmp/qmp_client.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cerrno>
#include <cstring>
#include <optional>
#include <thread>

#include "common/log.hpp"
#include "common/strings.hpp"

namespace vmckpt::qmp {
namespace {

constexpr std::string_view kIdPrefix = "vmckpt-";

Error closedError(bool midMessage) {
  return Error(Errc::protocol, midMessage ? "QEMU closed the QMP connection in the middle of a message"
                                          : "QEMU closed the QMP connection");
}

std::string idString(unsigned long long n) { return cat(kIdPrefix, n); }

}  // namespace

std::string stringField(const Json& j, std::string_view key, std::string fallback) {
  if (!j.is_object()) return fallback;
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : fallback;
}

long long intField(const Json& j, std::string_view key, long long fallback) {
  if (!j.is_object()) return fallback;
  auto it = j.find(key);
  if (it == j.end()) return fallback;
  if (it->is_number_integer()) return it->get<long long>();
  return fallback;
}

Result<Client> Client::connect(const std::string& socketPath, Deadline deadline) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socketPath.size() >= sizeof addr.sun_path)
    return fail(Errc::invalidArgument, cat("QMP socket path too long: ", socketPath));
  std::memcpy(addr.sun_path, socketPath.c_str(), socketPath.size() + 1);

  for (;;) {
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) return failErrno("socket", errno);
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0)
      return handshake(std::move(fd), deadline);
    int err = errno;
    bool retry = err == ENOENT || err == ECONNREFUSED || err == EAGAIN || err == EINTR;
    if (!retry) return failErrno(cat("connect ", socketPath), err);
    if (deadline.expired())
      return fail(Errc::timeout, cat("connect ", socketPath, ": ", std::strerror(err), " until the deadline"), err);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

Result<Client> Client::handshake(UniqueFd fd, Deadline deadline) {
  Client c(std::move(fd));
  auto greet = c.readMessage(deadline);
  if (!greet) return fail(greet.error().context("QMP greeting"));
  if (!greet->is_object() || !greet->contains("QMP") || !(*greet)["QMP"].is_object())
    return fail(Errc::protocol, cat("QMP greeting: unexpected message ", greet->dump().substr(0, 200)));
  const Json& q = (*greet)["QMP"];
  if (auto v = q.find("version"); v != q.end() && v->is_object()) {
    const Json& ver = *v;
    if (auto qv = ver.find("qemu"); qv != ver.end() && qv->is_object()) {
      c.greeting_.major = static_cast<int>(intField(*qv, "major"));
      c.greeting_.minor = static_cast<int>(intField(*qv, "minor"));
      c.greeting_.micro = static_cast<int>(intField(*qv, "micro"));
    }
    if (auto pkg = ver.find("package"); pkg != ver.end() && pkg->is_string())
      c.greeting_.package = pkg->get<std::string>();
  }
  if (auto caps = q.find("capabilities"); caps != q.end() && caps->is_array())
    for (const auto& cap : *caps)
      if (cap.is_string()) c.greeting_.capabilities.push_back(cap.get<std::string>());

  auto r = c.execute("qmp_capabilities", Json::object(), deadline);
  if (!r) return fail(r.error().context("qmp_capabilities"));
  return c;
}

Status Client::sendAll(const std::string& data, std::span<const int> fds, Deadline deadline) {
  size_t off = 0;
  bool fdsSent = fds.empty();
  while (off < data.size()) {
    pollfd p{fd_.get(), POLLOUT, 0};
    int pr = ::poll(&p, 1, deadline.pollTimeoutMs());
    if (pr < 0 && errno == EINTR) continue;
    if (pr < 0) return failErrno("poll", errno);
    if (pr == 0) return fail(Errc::timeout, "QMP send: timed out");

    iovec iov{const_cast<char*>(data.data() + off), data.size() - off};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    std::vector<char> control;
    if (!fdsSent) {
      // The fds ride on the first byte(s) of the command, as QEMU expects.
      control.resize(CMSG_SPACE(sizeof(int) * fds.size()));
      msg.msg_control = control.data();
      msg.msg_controllen = control.size();
      cmsghdr* cm = CMSG_FIRSTHDR(&msg);
      cm->cmsg_level = SOL_SOCKET;
      cm->cmsg_type = SCM_RIGHTS;
      cm->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
      std::memcpy(CMSG_DATA(cm), fds.data(), sizeof(int) * fds.size());
    }
    ssize_t n = ::sendmsg(fd_.get(), &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n < 0 && (errno == EPIPE || errno == ECONNRESET)) return fail(closedError(false));
    if (n < 0) return failErrno("QMP sendmsg", errno);
    fdsSent = true;
    off += static_cast<size_t>(n);
  }
  return {};
}

Result<Json> Client::readMessage(Deadline deadline) {
  for (;;) {
    size_t nl = rbuf_.find('\n');
    if (nl != std::string::npos) {
      std::string line = rbuf_.substr(0, nl);
      rbuf_.erase(0, nl + 1);
      std::string_view body = trim(line);
      if (body.empty()) continue;
      Json msg = Json::parse(body, nullptr, /*allow_exceptions=*/false);
      if (msg.is_discarded() || !msg.is_object())
        return fail(Errc::protocol, cat("QMP: malformed message from QEMU: ", std::string(body.substr(0, 200))));
      log::trace("qmp <- ", body.substr(0, 500));
      return msg;
    }
    if (rbuf_.size() > kMaxMessageBytes)
      return fail(Errc::protocol, cat("QMP: message larger than ", kMaxMessageBytes, " bytes"));

    pollfd p{fd_.get(), POLLIN, 0};
    int pr = ::poll(&p, 1, deadline.pollTimeoutMs());
    if (pr < 0 && errno == EINTR) continue;
    if (pr < 0) return failErrno("poll", errno);
    if (pr == 0) return fail(Errc::timeout, "no reply from QEMU before the deadline");
    char buf[65536];
    ssize_t n = ::recv(fd_.get(), buf, sizeof buf, 0);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n < 0 && errno == ECONNRESET) return fail(closedError(!trim(rbuf_).empty()));
    if (n < 0) return failErrno("QMP recv", errno);
    if (n == 0) return fail(closedError(!trim(rbuf_).empty()));
    rbuf_.append(buf, static_cast<size_t>(n));
  }
}

void Client::queueEvent(const Json& msg) {
  Event ev;
  ev.name = msg["event"].get<std::string>();
  if (auto d = msg.find("data"); d != msg.end()) ev.data = *d;
  if (auto ts = msg.find("timestamp"); ts != msg.end() && ts->is_object()) {
    // QEMU's clock, from an untrusted peer: out-of-range values mean "no timestamp"
    // (0), not an overflow. 10^12 s is some 31,700 years.
    const long long s = intField(*ts, "seconds"), us = intField(*ts, "microseconds");
    if (s >= 0 && s < 1000000000000LL && us >= 0 && us < 1000000) ev.timestampUs = s * 1000000LL + us;
  }
  log::debug("qmp event ", ev.name);
  if (events_.size() >= kMaxQueuedEvents) {
    log::warn("QMP event queue full; dropping ", events_.front().name);
    events_.pop_front();
  }
  events_.push_back(std::move(ev));
}

Result<std::string> Client::send(std::string_view command, const Json& arguments, Deadline deadline,
                                 std::span<const int> fds) {
  std::string id = idString(nextId_++);
  Json req = {{"execute", command}, {"id", id}};
  if (!arguments.is_null() && !(arguments.is_object() && arguments.empty())) req["arguments"] = arguments;
  std::string wire = req.dump() + "\n";
  log::trace("qmp -> ", wire.substr(0, 500));
  if (auto s = sendAll(wire, fds, deadline); !s) return fail(s.error().context(cat("qmp ", command)));
  return id;
}

// nullopt: not the reply to `id` (queued event, stale reply, other message); otherwise
// the reply's "return" or its error.
std::optional<Result<Json>> Client::classify(const Json& msg, const std::string& id, std::string_view command) {
  if (auto ev = msg.find("event"); ev != msg.end() && ev->is_string()) {
    queueEvent(msg);
    return std::nullopt;
  }
  if (!msg.contains("return") && !msg.contains("error")) {
    log::debug("qmp: ignoring message that is neither reply nor event");
    return std::nullopt;
  }
  // QEMU omits the id only when it could not parse our request at all; that can only
  // be the command now in flight (stale replies carry their own ids).
  if (auto rid = msg.find("id"); rid != msg.end()) {
    if (!rid->is_string() || rid->get<std::string>() != id) {
      log::debug("qmp: dropping reply with unknown id ", rid->dump());
      return std::nullopt;
    }
  }
  if (auto err = msg.find("error"); err != msg.end()) {
    std::string cls = "GenericError", desc = "unknown error";
    if (err->is_object()) {
      if (auto c = err->find("class"); c != err->end() && c->is_string()) cls = c->get<std::string>();
      if (auto d = err->find("desc"); d != err->end() && d->is_string()) desc = d->get<std::string>();
    }
    Error e(Errc::qmp, cat("qmp ", command, ": ", desc));
    e.withQmpClass(cls);
    return Result<Json>(fail(std::move(e)));
  }
  return Result<Json>(msg["return"]);
}

Result<Json> Client::execute(std::string_view command, const Json& arguments, Deadline deadline,
                             std::span<const int> fds) {
  auto id = send(command, arguments, deadline, fds);
  if (!id) return fail(id.error());
  for (;;) {
    auto msg = readMessage(deadline);
    if (!msg) return fail(msg.error().context(cat("qmp ", command)));
    if (auto reply = classify(*msg, *id, command)) return std::move(*reply);
  }
}

Result<Event> Client::executeUntilEvent(std::string_view command, const Json& arguments, std::string_view event,
                                        Deadline deadline) {
  size_t queued = events_.size();  // events from before the command cannot be its effect
  auto id = send(command, arguments, deadline);
  if (!id) return fail(id.error());
  for (;;) {
    for (auto it = events_.begin() + static_cast<std::ptrdiff_t>(std::min(queued, events_.size())); it != events_.end();
         ++it) {
      if (it->name == event) {
        Event e = std::move(*it);
        events_.erase(it);
        return e;
      }
    }
    auto msg = readMessage(deadline);
    if (!msg) {
      if (msg.error().code() == Errc::timeout)
        return fail(Errc::timeout, cat("qmp ", command, ": event ", event, " did not arrive before the deadline"));
      return fail(msg.error().context(cat("qmp ", command)));
    }
    if (auto reply = classify(*msg, *id, command); reply && !*reply) return fail(reply->error());
  }
}

Status Client::fillNonBlocking() {
  for (;;) {
    char buf[65536];
    ssize_t n = ::recv(fd_.get(), buf, sizeof buf, MSG_DONTWAIT);
    if (n > 0) {
      rbuf_.append(buf, static_cast<size_t>(n));
      if (rbuf_.size() > kMaxMessageBytes) return fail(Errc::protocol, "QMP: message too large");
      continue;
    }
    if (n == 0) return fail(closedError(false));
    if (errno == EINTR) continue;
    if (errno == EAGAIN) return {};
    return failErrno("QMP recv", errno);
  }
}

std::vector<Event> Client::takeEvents() {
  (void)fillNonBlocking();
  // Parse every complete line already buffered.
  while (rbuf_.find('\n') != std::string::npos) {
    auto msg = readMessage(Deadline::in(std::chrono::milliseconds(0)));
    if (!msg) break;
    if (auto ev = msg->find("event"); ev != msg->end() && ev->is_string()) queueEvent(*msg);
  }
  std::vector<Event> out(events_.begin(), events_.end());
  events_.clear();
  return out;
}

Result<Event> Client::waitEvent(std::string_view name, Deadline deadline) {
  std::string n(name);
  auto r = waitEvent([&](const Event& e) { return e.name == n; }, deadline);
  if (!r && r.error().code() == Errc::timeout)
    return fail(Errc::timeout, cat("QMP event ", name, " did not arrive before the deadline"));
  return r;
}

Result<Event> Client::waitEvent(const std::function<bool(const Event&)>& match, Deadline deadline) {
  for (;;) {
    for (auto it = events_.begin(); it != events_.end(); ++it) {
      if (match(*it)) {
        Event e = std::move(*it);
        events_.erase(it);
        return e;
      }
    }
    auto msg = readMessage(deadline);
    if (!msg) return fail(msg.error());
    if (auto ev = msg->find("event"); ev != msg->end() && ev->is_string()) queueEvent(*msg);
    else log::debug("qmp: dropping unsolicited reply while waiting for an event");
  }
}

}  // namespace vmckpt::qmp
