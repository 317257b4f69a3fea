#include "agent.hpp"

#include <signal.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace vmckpt::agent {

namespace {

using Clock = Deadline::Clock;

std::string errnoText(std::string_view what, int err) {
  return std::string(what) + ": " + std::strerror(err);
}

// mkdir -p for the socket's directory (0755).
bool makeParents(const std::string& path) {
  for (size_t p = path.find('/', 1); p != std::string::npos; p = path.find('/', p + 1)) {
    std::string dir = path.substr(0, p);
    if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) return false;
  }
  return true;
}

}  // namespace

Agent::Agent(AgentOptions options, const Logger& log)
    : options_(std::move(options)),
      log_(log),
      processes_(log, options_.processes),
      coordinator_(processes_, log, options_.coordinator),
      host_(options_.portKind, options_.portPath, log) {}

Agent::~Agent() {
  if (socketCreated_) (void)::unlink(options_.socketPath.c_str());
}

std::expected<void, std::string> Agent::setup() {
  // Signals arrive through the signalfd only; threads started later inherit the mask.
  sigset_t set;
  sigemptyset(&set);
  for (int s : {SIGTERM, SIGINT, SIGHUP, SIGIO}) sigaddset(&set, s);
  if (::sigprocmask(SIG_BLOCK, &set, nullptr) != 0) return std::unexpected(errnoText("sigprocmask", errno));
  signals_.reset(::signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC));
  if (!signals_) return std::unexpected(errnoText("signalfd", errno));
  ::signal(SIGPIPE, SIG_IGN);

  // The socket appears under its name only when it is ready: bound, mode 0666, listening.
  const std::string& path = options_.socketPath;
  std::string tmp = path + ".tmp";
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || tmp.size() >= sizeof addr.sun_path) return std::unexpected("socket path too long: " + path);
  if (!makeParents(path)) return std::unexpected(errnoText("mkdir for " + path, errno));
  std::memcpy(addr.sun_path, tmp.data(), tmp.size());
  listener_.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!listener_) return std::unexpected(errnoText("socket", errno));
  (void)::unlink(tmp.c_str());
  if (::bind(listener_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
    return std::unexpected(errnoText("bind " + tmp, errno));
  if (::chmod(tmp.c_str(), 0666) != 0) return std::unexpected(errnoText("chmod " + tmp, errno));
  if (::listen(listener_.get(), 64) != 0) return std::unexpected(errnoText("listen " + tmp, errno));
  if (::rename(tmp.c_str(), path.c_str()) != 0) return std::unexpected(errnoText("rename to " + path, errno));
  socketCreated_ = true;

  host_.start();
  log_.info("version " + std::string(kAgentVersion) + ", listening on " + path + ", host port " +
            options_.portPath + (coordinator_.fsfreezeEnabled() ? "" : ", fsfreeze off"));
  return {};
}

int Agent::run() {
  if (auto ok = setup(); !ok) {
    log_.info("error: " + ok.error());
    return 1;
  }
  std::vector<pollfd> fds;
  std::vector<ConnId> owners;
  for (;;) {
    fds.clear();
    owners.clear();
    fds.push_back({signals_.get(), POLLIN, 0});
    fds.push_back({listener_.get(), POLLIN, 0});
    fds.push_back(host_.pollEntry());
    fds.push_back({coordinator_.freezeFd(), POLLIN, 0});
    constexpr size_t kFixed = 4;
    processes_.addPollFds(fds, owners);

    std::optional<Clock::time_point> wake;
    for (auto t : {processes_.nextDeadline(), host_.nextWake(), coordinator_.nextDeadline()})
      if (t && (!wake || *t < *wake)) wake = t;
    int timeout = wake ? Deadline::at(*wake).pollTimeoutMs() : -1;

    int n = ::poll(fds.data(), fds.size(), timeout);
    if (n < 0 && errno != EINTR) {
      log_.info(errnoText("poll", errno));
      return 1;
    }

    if (n > 0 && (fds[0].revents & POLLIN)) {
      signalfd_siginfo si{};
      while (::read(signals_.get(), &si, sizeof si) == static_cast<ssize_t>(sizeof si)) {
        if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) {
          log_.info(std::string("exiting on ") + (si.ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT"));
          coordinator_.shutdown();
          processes_.closeAll();
          return 0;
        }
        if (si.ssi_signo == SIGIO) host_.onSigio();
      }
    }
    if (n > 0) {
      if (fds[1].revents & POLLIN) processes_.acceptAll(listener_.get());
      if (fds[2].fd >= 0) host_.onPoll(fds[2].revents);
      if (fds[3].fd >= 0 && (fds[3].revents & POLLIN)) coordinator_.onFreezeDone();
      for (size_t i = kFixed; i < fds.size(); ++i)
        if (fds[i].revents) processes_.handle(owners[i - kFixed], fds[i].revents);
    }
    processes_.onTimer();
    host_.onTimer();
    for (const auto& a : processes_.takeAnswers()) coordinator_.onAnswer(a);
    coordinator_.onTimer();
    if (auto r = coordinator_.takeReply()) host_.send(std::move(*r));
    handleHostItems();
  }
}

void Agent::handleHostItems() {
  while (!coordinator_.busy()) {
    auto item = host_.nextItem();
    if (!item) return;
    auto parsed = parseHostItem(*item);
    if (!parsed) {
      log_.debug("host: rejected: " + parsed.error().message);
      host_.send(errorReply(parsed.error()));
      continue;
    }
    if (!*parsed) continue;  // blank line (resync)
    handleRequest(**parsed);
    // Operations that finish at once (no processes, nothing to freeze) reply now.
    for (const auto& a : processes_.takeAnswers()) coordinator_.onAnswer(a);
    if (auto r = coordinator_.takeReply()) host_.send(std::move(*r));
  }
}

void Agent::handleRequest(const HostRequest& req) {
  log_.debug("host: " + std::string(commandName(req.cmd)) + " id " + std::to_string(req.id));
  switch (req.cmd) {
    case Command::sync: host_.send(okReply(req.id, {{"token", req.token}})); return;
    case Command::ping:
      host_.send(okReply(req.id, {{"version", kAgentVersion}, {"api_version", wire::kApiVersion}}));
      return;
    case Command::info: host_.send(okReply(req.id, info())); return;
    case Command::status:
      host_.send(okReply(req.id, {{"state", stateName(coordinator_.state())},
                                  {"processes", processes_.registeredCount()}}));
      return;
    case Command::quiesce:
    case Command::release:
    case Command::thaw:
    case Command::restored:
    case Command::connect: coordinator_.start(req); return;
  }
}

Json Agent::info() const {
  Json plugins = Json::array();
  if (coordinator_.fsfreezeEnabled()) plugins.push_back({{"name", "fsfreeze"}, {"builtin", true}});
  Json procs = Json::array();
  std::vector<std::string> names;
  for (const auto& p : processes_.registered()) {
    procs.push_back({{"pid", p.pid}, {"plugin", p.plugin}, {"api_version", p.apiVersion}});
    if (std::find(names.begin(), names.end(), p.plugin) == names.end()) names.push_back(p.plugin);
  }
  for (const auto& n : names) plugins.push_back({{"name", n}, {"builtin", false}});
  return {{"version", kAgentVersion},
          {"api_version", wire::kApiVersion},
          {"plugins", plugins},
          {"processes", procs},
          {"state", stateName(coordinator_.state())}};
}

}  // namespace vmckpt::agent
