// QMP client over a unix socket: greeting, capability negotiation, id-matched commands,
// an event queue, and fd passing (SCM_RIGHTS). Every wait has a deadline; unknown keys
// in QEMU's messages are ignored (the QMP compatibility rule).
#pragma once

#include <chrono>
#include <deque>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "common/deadline.hpp"
#include "common/error.hpp"
#include "common/unique_fd.hpp"

namespace vmckpt::qmp {

using Json = nlohmann::json;

struct Greeting {
  int major = 0, minor = 0, micro = 0;
  std::string package;
  std::vector<std::string> capabilities;
};

struct Event {
  std::string name;
  Json data = Json::object();
  // QEMU's timestamp of the event (host wall clock), in microseconds since the epoch.
  long long timestampUs = 0;
};

// A member of a message from QEMU, or `fallback` when the message is not an object, lacks
// the key, or has it with another type. QEMU's output is checked, never trusted: json's
// own value() throws on a type mismatch, and an exception there would end vmckpt with a
// guest possibly paused.
std::string stringField(const Json& j, std::string_view key, std::string fallback = {});
long long intField(const Json& j, std::string_view key, long long fallback = 0);

inline constexpr std::chrono::milliseconds kDefaultCommandTimeout{10000};
// A single QMP message larger than this is a protocol error (query-qmp-schema is ~200 KiB).
inline constexpr size_t kMaxMessageBytes = 8u << 20;
// Events kept while nobody waits for them; the oldest are dropped beyond this.
inline constexpr size_t kMaxQueuedEvents = 4096;

class Client {
 public:
  // Connects to QEMU's QMP socket, retrying while it does not exist yet or refuses,
  // reads the greeting and negotiates capabilities.
  static Result<Client> connect(const std::string& socketPath, Deadline deadline);
  // The same over an already connected stream socket (tests use a socketpair).
  static Result<Client> handshake(UniqueFd fd, Deadline deadline);

  Client(Client&&) noexcept = default;
  Client& operator=(Client&&) noexcept = default;

  // Runs a command and returns its "return" value. QMP errors come back as Errc::qmp
  // with QEMU's class and description; a reply not in time as Errc::timeout. `fds`
  // travel with the command (for getfd / add-fd).
  Result<Json> execute(std::string_view command, const Json& arguments = Json::object(),
                       Deadline deadline = Deadline::in(kDefaultCommandTimeout),
                       std::span<const int> fds = {});
  // Runs a command and returns the first `event` that arrives after it, without waiting
  // for the command's reply: QEMU may answer `cont` many milliseconds after the RESUME
  // event it sent when its vCPU thread keeps the main loop busy. An error reply fails.
  Result<Event> executeUntilEvent(std::string_view command, const Json& arguments, std::string_view event,
                                  Deadline deadline);

  // Returns the oldest queued event with that name (removing it), or waits for one.
  Result<Event> waitEvent(std::string_view name, Deadline deadline);
  Result<Event> waitEvent(const std::function<bool(const Event&)>& match, Deadline deadline);
  // Reads what has arrived without blocking and returns (and clears) the queued events.
  std::vector<Event> takeEvents();

  const Greeting& greeting() const { return greeting_; }
  int fd() const { return fd_.get(); }

 private:
  explicit Client(UniqueFd fd) : fd_(std::move(fd)) {}
  // Reads one complete message; Errc::timeout at the deadline.
  Result<Json> readMessage(Deadline deadline);
  Result<std::string> send(std::string_view command, const Json& arguments, Deadline deadline,
                           std::span<const int> fds = {});
  std::optional<Result<Json>> classify(const Json& msg, const std::string& id, std::string_view command);
  Status sendAll(const std::string& data, std::span<const int> fds, Deadline deadline);
  void queueEvent(const Json& msg);
  Status fillNonBlocking();

  UniqueFd fd_;
  std::string rbuf_;
  std::deque<Event> events_;
  Greeting greeting_;
  unsigned long long nextId_ = 1;
};

}  // namespace vmckpt::qmp
