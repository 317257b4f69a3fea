// vmckpt-agent: the processes connected to the agent socket. Each connection is a small
// state machine: unregistered (must send "register" before its deadline) -> registered;
// events go out one at a time per process (later ones wait in a queue) and each reply
// is matched to its event by seq. A connection that closes is unregistered, and its
// unanswered events count as not_mine.
#pragma once

#include <poll.h>
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/deadline.hpp"
#include "common/unique_fd.hpp"
#include "log.hpp"
#include "wire.hpp"

namespace vmckpt::agent {

using ConnId = uint64_t;

struct ProcessEvent {
  uint64_t seq = 0;
  wire::EventKind kind = wire::EventKind::resume;
  std::optional<wire::Json> deviceMap;  // RESTART
  uint64_t opId = 0;  // the agent operation that sent it
  bool connectFollows = false;          // RESTART, RESUME
  std::optional<wire::Json> peers;      // CONNECT
  bool release = false;                 // PRESUSPEND, PRECHECKPOINT
};

// The answer to an event: a reply, or not_mine because the process went away.
struct EventAnswer {
  ConnId conn = 0;
  int64_t pid = 0;
  std::string plugin;
  ProcessEvent event;
  wire::Outcome outcome = wire::Outcome::notMine;
  std::string reason;
  bool gone = false;
  std::optional<wire::Json> data;  // as the process sent it, unchecked
};

struct ProcessInfo {
  ConnId conn = 0;
  int64_t pid = 0;
  std::string plugin;
  int64_t apiVersion = 0;
};

class ProcessTable {
 public:
  struct Limits {
    size_t maxConnections = 256;
    std::chrono::milliseconds registerTimeout{5000};
    size_t maxOutputBytes = 1u << 20;  // a process that stops reading is dropped
    size_t maxQueuedEvents = 64;       // ... and one that stops answering
  };

  ProcessTable(const Logger& log, Limits limits) : log_(log), limits_(limits) {}

  // Accepts every pending connection on the listening socket.
  void acceptAll(int listenFd);
  // Appends this table's pollfds; owners[i] says which connection each belongs to.
  void addPollFds(std::vector<pollfd>& fds, std::vector<ConnId>& owners) const;
  void handle(ConnId conn, short revents);
  // Drops connections that did not register in time.
  void onTimer();
  std::optional<Deadline::Clock::time_point> nextDeadline() const;

  // Sends (or queues behind the event in flight) an event to a registered process.
  // Returns its seq, or nullopt when there is no such process; *sentNow says whether
  // it went out at once rather than waiting behind an unanswered one.
  std::optional<uint64_t> sendEvent(ConnId conn, wire::EventKind kind, const wire::EventPayload& payload,
                                    uint64_t opId, bool* sentNow = nullptr);
  // Answers collected since the last call, in arrival order.
  std::vector<EventAnswer> takeAnswers();

  std::vector<ProcessInfo> registered() const;
  size_t registeredCount() const;
  void closeAll();

 private:
  struct Conn {
    ConnId id = 0;
    UniqueFd fd;
    int64_t pid = 0;
    bool registered = false;
    std::string plugin;
    int64_t apiVersion = 0;
    Deadline registerBy = Deadline::in(std::chrono::milliseconds(0));
    wire::LineBuffer in;
    std::string out;
    std::optional<ProcessEvent> inFlight;
    std::deque<ProcessEvent> queued;
  };

  void onLine(Conn& c, const wire::LineBuffer::Item& item);
  void transmit(Conn& c, const ProcessEvent& ev);
  // Queues a line and writes what the socket takes; over the limit, drops the process.
  void queueOut(Conn& c, std::string line);
  void flush(Conn& c);
  // Marks a connection to be closed; finishDrops() closes it and answers its events.
  void drop(ConnId id, const std::string& why);
  void finishDrops();
  // Sends an error line best-effort and drops the connection.
  void reject(ConnId id, const std::string& message);

  const Logger& log_;
  Limits limits_;
  std::map<ConnId, std::unique_ptr<Conn>> conns_;
  std::vector<ConnId> doomed_;  // dropped after the current I/O step
  std::vector<EventAnswer> answers_;
  ConnId nextId_ = 1;
  uint64_t nextSeq_ = 1;
};

}  // namespace vmckpt::agent
