// vmckpt-ib-workload: a verbs correctness workload for guests that get checkpointed.
//
// CRIU zdtm shape: set up RDMA state with every peer, run lockstep iterations during which
// the guests may be checkpointed and restored, verify every byte that crossed the wire, and
// end with exactly "ibtest: PASS" or "ibtest: FAIL <reason>".
//
// One thread per TCP connection; all share one device context and one PD. Per connection:
// a completion channel (--poll events), one CQ, one RC QP, one UD QP, an address handle and
// an MR per buffer. Iteration k, symmetric on both sides:
//   1. RC SEND of --size bytes, pattern (seed, sender side, k)
//   2. RDMA WRITE_WITH_IMM of --size bytes into the peer's write target, imm = k
//   3. RDMA READ of a k-dependent window of the peer's static read source
//   4. UD SEND of 256 bytes through the AH, stop-and-wait with UD acks and retransmission
// TCP carries only the setup exchange, a ready barrier and the final done handshake.
//
// Only public libibverbs API is used, and every id a verbs call returns (QPN, rkey, lkey,
// GID, LID) is passed along opaquely, so an LD_PRELOAD interposer may present virtual ids.
//
// Build: g++ -std=c++23 -O2 ib_workload.cpp verbs_util.cpp -o vmckpt-ib-workload -libverbs -pthread

#include <arpa/inet.h>
#include <fcntl.h>
#include <infiniband/verbs.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdarg>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <exception>
#include <expected>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "verbs_util.hpp"

namespace {

using namespace std::chrono_literals;
using namespace vmckpt::ibw;

constexpr const char* kProg = "vmckpt-ib-workload";
constexpr uint32_t kMaxSize = 1u << 20;
constexpr int kRcRecvDepth = 4;  // a peer has at most 2 receive-consuming messages in flight
constexpr int kUdRecvDepth = 8;
constexpr int kUdSendSlots = 8;   // data, retransmits and acks in flight on the UD send queue
constexpr int kRcSendDepth = 8;   // only one RC operation is ever outstanding
constexpr int kCqDepth = 64;      // > RC send + RC recv + UD send + UD recv outstanding
constexpr size_t kGrhBytes = 40;  // every UD receive buffer starts with room for the GRH
constexpr size_t kUdDataBytes = 256;
constexpr size_t kUdHeaderBytes = 16;
constexpr size_t kUdRecvSlotBytes = kGrhBytes + kUdDataBytes;
constexpr auto kUdRetransmit = 300ms;
constexpr auto kNoProgressLimit = 60s;

constexpr uint32_t kInfoMagic = 0x4b574256;   // "VBWK"
constexpr uint32_t kReadyMagic = 0x59445256;  // "VRDY"
constexpr uint32_t kDoneMagic = 0x454e4456;   // "VDNE"
constexpr uint32_t kUdMagic = 0x44554256;     // "VBUD"
constexpr uint16_t kWireVersion = 1;
constexpr size_t kInfoBytes = 96;
constexpr size_t kDoneBytes = 24;

// ---------------------------------------------------------------------------------------
// Output and failure bookkeeping

std::atomic<bool> gStop{false};  // set by a signal or by the first failing connection
std::atomic<int> gSignal{0};
std::mutex gFailMu;
std::string gFirstFailure;  // guarded by gFailMu

__attribute__((format(printf, 1, 2))) void say(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  std::string s = vformat(fmt, ap);
  va_end(ap);
  writeLine(STDOUT_FILENO, "ibtest: " + s);
}

// Records a failure (the first one becomes the FAIL reason) and stops all connections.
void recordFailure(const std::string& reason) {
  writeLine(STDERR_FILENO, std::string(kProg) + ": " + reason);
  {
    std::lock_guard lock(gFailMu);
    if (gFirstFailure.empty()) gFirstFailure = reason;
  }
  gStop.store(true);
}

void onSignal(int sig) {
  gSignal.store(sig);
  gStop.store(true);
}

// ---------------------------------------------------------------------------------------
// Options

enum class PollMode { kEvents, kBusy };

struct Options {
  std::optional<uint16_t> listenPort;
  uint32_t peers = 1;
  bool peersGiven = false;
  std::vector<std::string> connect;  // HOST:PORT
  std::string dev;
  std::optional<uint32_t> gidIndex;
  uint32_t iters = 200;
  uint32_t size = 4096;
  uint32_t intervalMs = 0;
  uint32_t retryCnt = 7;
  uint32_t timeout = 14;
  uint32_t rnrRetry = 7;
  PollMode poll = PollMode::kEvents;
  uint32_t report = 10;
  bool help = false;
};

constexpr const char* kUsage =
    "usage: vmckpt-ib-workload [--listen PORT [--peers N]] [--connect HOST:PORT]... [options]\n"
    "\n"
    "RDMA correctness workload: per connection, lockstep iterations of RC SEND, RDMA\n"
    "WRITE_WITH_IMM, RDMA READ and a UD exchange, every byte verified. Ends with\n"
    "\"ibtest: PASS\" (exit 0) or \"ibtest: FAIL <reason>\" (exit 1).\n"
    "\n"
    "  --listen PORT       accept --peers TCP connections on PORT\n"
    "  --peers N           connections to accept with --listen (default 1)\n"
    "  --connect HOST:PORT connect to a listening peer (repeatable)\n"
    "  --dev NAME          RDMA device (default: the first one)\n"
    "  --gid-index N       GID index (default: the first IPv4-mapped GID of port 1)\n"
    "  --iters N           iterations per connection (default 200)\n"
    "  --size BYTES        RC message size, 1..1048576 (default 4096)\n"
    "  --interval-ms N     sleep between iterations (default 0)\n"
    "  --retry-cnt N       RC QP retry_cnt, 0..7 (default 7)\n"
    "  --timeout N         RC QP local ack timeout exponent, 0..31 (default 14)\n"
    "  --rnr-retry N       RC QP rnr_retry, 0..7 (default 7)\n"
    "  --poll events|busy  wait on a completion channel or spin on the CQ (default events)\n"
    "  --report N          print progress every N iterations, 0 = never (default 10)\n"
    "  --help              show this help\n"
    "\n"
    "Both ends of a connection must use the same --size and --iters.\n";

std::expected<Options, std::string> parseOptions(int argc, char** argv) {
  Options o;
  ArgReader args(argc, argv);
  while (args.next()) {
    const std::string_view name = args.name();
#define NUMBER(field, min, max)                \
  do {                                         \
    auto n = args.number(min, max);            \
    if (!n) return std::unexpected(n.error()); \
    field = static_cast<decltype(field)>(*n);  \
  } while (0)
    if (name == "--listen") {
      uint16_t port = 0;
      NUMBER(port, 1, 65535);
      o.listenPort = port;
    } else if (name == "--peers") {
      NUMBER(o.peers, 1, 1024);
      o.peersGiven = true;
    } else if (name == "--connect") {
      const auto v = args.value();
      if (!v || v->empty()) return std::unexpected(std::string("--connect needs HOST:PORT"));
      if (!isHostPort(*v))
        return std::unexpected(
            format("--connect: '%.*s' is not HOST:PORT", int(v->size()), v->data()));
      o.connect.emplace_back(*v);
    } else if (name == "--dev") {
      const auto v = args.value();
      if (!v || v->empty()) return std::unexpected(std::string("--dev needs a device name"));
      o.dev = *v;
    } else if (name == "--gid-index") {
      uint32_t g = 0;
      NUMBER(g, 0, 65535);
      o.gidIndex = g;
    } else if (name == "--iters") {
      NUMBER(o.iters, 1, UINT32_MAX);
    } else if (name == "--size") {
      NUMBER(o.size, 1, kMaxSize);
    } else if (name == "--interval-ms") {
      NUMBER(o.intervalMs, 0, 3'600'000);
    } else if (name == "--retry-cnt") {
      NUMBER(o.retryCnt, 0, 7);
    } else if (name == "--timeout") {
      NUMBER(o.timeout, 0, 31);
    } else if (name == "--rnr-retry") {
      NUMBER(o.rnrRetry, 0, 7);
    } else if (name == "--poll") {
      const auto v = args.value();
      if (v == "events")
        o.poll = PollMode::kEvents;
      else if (v == "busy")
        o.poll = PollMode::kBusy;
      else
        return std::unexpected(std::string("--poll takes events or busy"));
    } else if (name == "--report") {
      NUMBER(o.report, 0, UINT32_MAX);
    } else {
      return std::unexpected(format("unknown option '%.*s'", int(name.size()), name.data()));
    }
#undef NUMBER
  }
  if (!args.error().empty()) return std::unexpected(args.error());
  o.help = args.helpAsked();
  if (o.help) return o;
  if (o.peersGiven && !o.listenPort) return std::unexpected(std::string("--peers needs --listen"));
  if (!o.listenPort && o.connect.empty())
    return std::unexpected(std::string("need --listen PORT or --connect HOST:PORT"));
  return o;
}

// ---------------------------------------------------------------------------------------
// Data patterns: every byte is a pure function of (key, absolute position), so any window of
// a buffer can be regenerated and checked on its own.

enum class Stream : uint64_t { kSend = 1, kWrite = 2, kReadSource = 3, kUd = 4 };

uint64_t mix64(uint64_t x) {  // splitmix64
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

uint64_t patternKey(uint64_t seed, int side, Stream stream, uint64_t k) {
  return mix64(mix64(mix64(seed) ^ k) ^ (static_cast<uint64_t>(stream) << 1 | uint64_t(side)));
}

void fillPattern(uint8_t* dst, size_t len, uint64_t key, size_t pos0) {
  for (size_t i = 0; i < len;) {
    const size_t pos = pos0 + i;
    const uint64_t word = mix64(key + pos / 8);
    for (size_t b = pos % 8; b < 8 && i < len; ++b, ++i) dst[i] = uint8_t(word >> (8 * b));
  }
}

struct Mismatch {
  size_t offset;
  uint8_t expected;
  uint8_t got;
};

std::optional<Mismatch> checkPattern(const uint8_t* got, size_t len, uint64_t key, size_t pos0) {
  for (size_t i = 0; i < len;) {
    const size_t pos = pos0 + i;
    const uint64_t word = mix64(key + pos / 8);
    for (size_t b = pos % 8; b < 8 && i < len; ++b, ++i)
      if (got[i] != uint8_t(word >> (8 * b))) return Mismatch{i, uint8_t(word >> (8 * b)), got[i]};
  }
  return std::nullopt;
}

// What each side tells the other at setup. Ids are whatever the verbs calls returned.
struct PeerInfo {
  uint16_t side = 0;  // 0: accepted the TCP connection, 1: connected
  uint32_t rcQpn = 0, rcPsn = 0, udQpn = 0, qkey = 0;
  uint16_t lid = 0;
  uint8_t mtu = 0;  // enum ibv_mtu
  ibv_gid gid{};
  uint32_t writeRkey = 0;  // RDMA WRITE target of the sender
  uint64_t writeAddr = 0;
  uint32_t writeLen = 0;
  uint32_t readRkey = 0;  // RDMA READ source of the sender
  uint64_t readAddr = 0;
  uint32_t readLen = 0;
  uint32_t size = 0, iters = 0;  // must match on both ends: the iterations run in lockstep
  uint64_t seed = 0;
};

std::array<uint8_t, kInfoBytes> encodeInfo(const PeerInfo& in) {
  std::array<uint8_t, kInfoBytes> out{};
  WireWriter w(out.data());
  w.u32(kInfoMagic);
  w.u16(kWireVersion);
  w.u16(in.side);
  w.u32(in.rcQpn);
  w.u32(in.rcPsn);
  w.u32(in.udQpn);
  w.u32(in.qkey);
  w.u16(in.lid);
  w.u8(in.mtu);
  w.u8(0);
  w.bytes(in.gid.raw, sizeof in.gid.raw);
  w.u32(in.writeRkey);
  w.u64(in.writeAddr);
  w.u32(in.writeLen);
  w.u32(in.readRkey);
  w.u64(in.readAddr);
  w.u32(in.readLen);
  w.u32(in.size);
  w.u32(in.iters);
  w.u64(in.seed);
  w.u32(0);
  if (w.size() != kInfoBytes) std::abort();  // our bug
  return out;
}

std::expected<PeerInfo, std::string> decodeInfo(const std::array<uint8_t, kInfoBytes>& raw) {
  WireReader r(raw.data());
  if (const uint32_t magic = r.u32(); magic != kInfoMagic)
    return std::unexpected(
        format("bad setup magic 0x%08x (not a vmckpt-ib-workload peer?)", magic));
  if (const uint16_t version = r.u16(); version != kWireVersion)
    return std::unexpected(
        format("peer speaks setup version %u, we speak %u", version, kWireVersion));
  PeerInfo in;
  in.side = r.u16();
  in.rcQpn = r.u32();
  in.rcPsn = r.u32();
  in.udQpn = r.u32();
  in.qkey = r.u32();
  in.lid = r.u16();
  in.mtu = r.u8();
  (void)r.u8();
  r.bytes(in.gid.raw, sizeof in.gid.raw);
  in.writeRkey = r.u32();
  in.writeAddr = r.u64();
  in.writeLen = r.u32();
  in.readRkey = r.u32();
  in.readAddr = r.u64();
  in.readLen = r.u32();
  in.size = r.u32();
  in.iters = r.u32();
  in.seed = r.u64();
  return in;
}

// ---------------------------------------------------------------------------------------
// Device

Result<std::unique_ptr<Device>> openDevice(const Options& opt) {
  auto dev = std::make_unique<Device>();
  TRY(openContext(*dev, opt.dev));
  const auto pa = queryPort(*dev);
  if (!pa) return std::unexpected(pa.error());
  if (opt.size > pa->max_msg_sz)
    return failure(format("--size %u exceeds the port's max_msg_sz %u", opt.size, pa->max_msg_sz));
  TRY(selectGid(*dev, *pa, opt.gidIndex));
  TRY(allocPd(*dev));
  return dev;
}

// ---------------------------------------------------------------------------------------
// One connection

// The kind of work request in a wr_id (makeWrId); the index is an iteration or a buffer slot.
enum class WrKind : uint8_t { kRcSend = 1, kRcWrite, kRcRead, kRcRecv, kUdSend, kUdRecv };
const char* wrKindName(WrKind k) {
  switch (k) {
    case WrKind::kRcSend: return "SEND";
    case WrKind::kRcWrite: return "RDMA_WRITE";
    case WrKind::kRcRead: return "RDMA_READ";
    case WrKind::kRcRecv: return "RECV";
    case WrKind::kUdSend: return "UD SEND";
    case WrKind::kUdRecv: return "UD RECV";
  }
  return "unknown";
}

enum class UdType : uint16_t { kData = 1, kAck = 2 };

class Connection {
 public:
  Connection(const Options& opt, const Device& dev, int index, int side, UniqueFd sock)
      : opt_(opt),
        dev_(dev),
        index_(index),
        side_(side),
        peerSide_(1 - side),
        sock_(std::move(sock)) {}

  // The whole life of the connection: setup, iterations, done handshake.
  Result<> run();

 private:
  enum class Phase { kSetup, kRun, kDone };

  Result<> createResources();
  Result<> toInit();
  Result<> exchange();
  Result<> toRts();
  Result<> readyBarrier();
  Result<> iteration(uint64_t k);
  Result<> finish();

  Result<QpPtr> createQp(ibv_qp_type type, uint32_t sendDepth, uint32_t recvDepth,
                         const char* what);
  Result<> modifyQp(ibv_qp* qp, ibv_qp_attr& attr, int mask, const char* what);
  Result<> postRc(WrKind kind, ibv_wr_opcode op, const Buffer& src, const ibv_mr& mr,
                  uint64_t remoteAddr, uint32_t rkey, uint32_t immBe);
  Result<> postRcRecv(uint64_t slot);
  Result<> postUdRecv(uint64_t slot);
  Result<> postUdSend(int slot, size_t len);
  std::optional<int> freeUdSlot() const;
  Result<> sendUdData(int slot);
  Result<> serviceUd();

  Result<> pump(Clock::duration maxWait);
  Result<> drain(bool& got);
  Result<> noteSocket(short revents);
  Result<> handle(const ibv_wc& wc);
  Result<> onRcSendSide(const ibv_wc& wc, WrKind kind, uint64_t index);
  Result<> onRcRecv(const ibv_wc& wc, uint64_t slot);
  Result<> onUdRecv(const ibv_wc& wc, uint64_t slot);
  template <typename Done>
  Result<> waitFor(const char* what, Done done);
  Result<> idle(Clock::duration d);
  Clock::duration nextWait() const;

  Result<> verify(const char* what, const uint8_t* got, size_t len, uint64_t key, size_t pos0);
  uint64_t key(int side, Stream s, uint64_t k) const { return patternKey(seed_, side, s, k); }
  size_t readOffset(uint64_t k) const {
    return size_t((k * 7919 + 13) % (uint64_t(opt_.size) + 1));
  }
  __attribute__((format(printf, 2, 3))) std::unexpected<Failure> fail(const char* fmt, ...) const;

  const Options& opt_;
  const Device& dev_;
  const int index_;
  const int side_;
  const int peerSide_;
  UniqueFd sock_;
  Phase phase_ = Phase::kSetup;
  uint64_t iter_ = 0;
  uint64_t seed_ = 0;
  PeerInfo local_{}, peer_{};

  // Verbs objects in creation order, so members are destroyed in the reverse, required
  // order: QPs, AH, MRs (before their memory), CQ, completion channel. The PD and the
  // context belong to the Device and outlive every connection.
  ChannelPtr channel_;
  CqPtr cq_;
  Buffer sendSrc_, writeSrc_, writeTarget_, readSource_, readDst_, rcRecv_, udRecv_, udSend_;
  MrPtr sendSrcMr_, writeSrcMr_, writeTargetMr_, readSourceMr_, readDstMr_, rcRecvMr_, udRecvMr_,
      udSendMr_;
  AhPtr ah_;
  QpPtr rcQp_, udQp_;

  // Protocol state, touched only by this connection's thread.
  bool rcOpPending_ = false;  // the one outstanding RC SEND / WRITE / READ
  WrKind rcOpKind_ = WrKind::kRcSend;
  uint64_t sendsVerified_ = 0;   // peer SENDs received and checked
  uint64_t writesVerified_ = 0;  // peer WRITE_WITH_IMMs received and checked
  uint64_t udRxNext_ = 0;        // next UD data sequence expected from the peer
  uint64_t udTxSeq_ = 0;         // our UD data sequence awaiting its ack
  bool udAwaitingAck_ = false;
  Clock::time_point udLastTx_{};
  std::deque<uint64_t> acksOwed_;
  std::array<bool, kUdSendSlots> udSlotBusy_{};
  Clock::time_point progressAt_{};
  short sockEvents_ = POLLRDHUP;  // what pump() watches the TCP socket for
  short sockRevents_ = 0;         // what it saw last time
  Clock::time_point sockCheckedAt_{};

  uint64_t itersDone_ = 0, bytesChecked_ = 0, udRetransmits_ = 0, udDuplicates_ = 0;
};

std::unexpected<Failure> Connection::fail(const char* fmt, ...) const {
  va_list ap;
  va_start(ap, fmt);
  std::string msg = vformat(fmt, ap);
  va_end(ap);
  switch (phase_) {
    case Phase::kSetup: return failure(format("conn %d setup: %s", index_, msg.c_str()));
    case Phase::kRun:
      return failure(format("conn %d iter %llu: %s", index_, static_cast<unsigned long long>(iter_),
                            msg.c_str()));
    case Phase::kDone: break;
  }
  return failure(format("conn %d done: %s", index_, msg.c_str()));
}

Result<> Connection::run() {
  TRY(createResources());
  TRY(toInit());
  TRY(exchange());
  TRY(toRts());
  TRY(readyBarrier());
  phase_ = Phase::kRun;
  for (uint64_t k = 0; k < opt_.iters; ++k) {
    TRY(iteration(k));
    itersDone_ = k + 1;
    if (opt_.report && itersDone_ % opt_.report == 0)
      say("conn %d iter %llu", index_, static_cast<unsigned long long>(itersDone_));
    if (opt_.intervalMs && itersDone_ < opt_.iters)
      TRY(idle(std::chrono::milliseconds(opt_.intervalMs)));
  }
  phase_ = Phase::kDone;
  TRY(finish());
  say("conn %d done %llu iterations, %llu bytes checked, %llu ud retransmits", index_,
      static_cast<unsigned long long>(itersDone_), static_cast<unsigned long long>(bytesChecked_),
      static_cast<unsigned long long>(udRetransmits_));
  return {};
}

// --- setup ------------------------------------------------------------------------------

Result<QpPtr> Connection::createQp(ibv_qp_type type, uint32_t sendDepth, uint32_t recvDepth,
                                   const char* what) {
  ibv_qp_init_attr init = qpInitAttr(cq_.get(), type, sendDepth, recvDepth, true);
  QpPtr qp(ibv_create_qp(dev_.pd.get(), &init));
  if (!qp) return fail("ibv_create_qp %s: %s", what, errnoText(errno).c_str());
  return qp;
}

Result<> Connection::modifyQp(ibv_qp* qp, ibv_qp_attr& attr, int mask, const char* what) {
  if (const int rc = ibv_modify_qp(qp, &attr, mask); rc != 0)
    return fail("ibv_modify_qp %s: %s", what, errnoText(rc > 0 ? rc : errno).c_str());
  return {};
}

Result<> Connection::createResources() {
  if (opt_.poll == PollMode::kEvents) {
    channel_.reset(ibv_create_comp_channel(dev_.ctx.get()));
    if (!channel_) return fail("ibv_create_comp_channel: %s", errnoText(errno).c_str());
    // pump() polls the fd first; non-blocking keeps a spurious wakeup from hanging in
    // ibv_get_cq_event.
    const int flags = ::fcntl(channel_->fd, F_GETFL);
    if (flags < 0 || ::fcntl(channel_->fd, F_SETFL, flags | O_NONBLOCK) != 0)
      return fail("fcntl completion channel O_NONBLOCK: %s", errnoText(errno).c_str());
  }
  cq_.reset(ibv_create_cq(dev_.ctx.get(), kCqDepth, nullptr, channel_.get(), 0));
  if (!cq_) return fail("ibv_create_cq: %s", errnoText(errno).c_str());
  if (channel_) {
    if (const int rc = ibv_req_notify_cq(cq_.get(), 0); rc != 0)
      return fail("ibv_req_notify_cq: %s", errnoText(rc).c_str());
  }

  const size_t size = opt_.size;
  const BufferSpec specs[] = {
      {&sendSrc_, &sendSrcMr_, size, 0, "send source"},
      {&writeSrc_, &writeSrcMr_, size, 0, "write source"},
      {&writeTarget_, &writeTargetMr_, size, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE,
       "write target"},
      {&readSource_, &readSourceMr_, 2 * size, IBV_ACCESS_REMOTE_READ, "read source"},
      {&readDst_, &readDstMr_, size, IBV_ACCESS_LOCAL_WRITE, "read destination"},
      {&rcRecv_, &rcRecvMr_, kRcRecvDepth * size, IBV_ACCESS_LOCAL_WRITE, "RC receive ring"},
      {&udRecv_, &udRecvMr_, kUdRecvDepth * kUdRecvSlotBytes, IBV_ACCESS_LOCAL_WRITE,
       "UD receive ring"},
      {&udSend_, &udSendMr_, kUdSendSlots * kUdDataBytes, 0, "UD send slots"},
  };
  if (auto r = createRegistered(dev_.pd.get(), specs); !r)
    return fail("%s", r.error().reason.c_str());

  auto rc = createQp(IBV_QPT_RC, kRcSendDepth, kRcRecvDepth, "RC");
  if (!rc) return std::unexpected(rc.error());
  rcQp_ = std::move(*rc);
  auto ud = createQp(IBV_QPT_UD, kUdSendSlots, kUdRecvDepth, "UD");
  if (!ud) return std::unexpected(ud.error());
  udQp_ = std::move(*ud);

  std::random_device rd;
  auto rand64 = [&] { return uint64_t(rd()) << 32 | rd(); };
  local_.side = uint16_t(side_);
  local_.rcQpn = rcQp_->qp_num;
  local_.rcPsn = uint32_t(rand64() & 0xffffff);  // PSNs are 24 bits
  local_.udQpn = udQp_->qp_num;
  local_.qkey = uint32_t(rand64() & 0x7fffffff);  // high bit set would be a controlled qkey
  local_.lid = dev_.lid;
  local_.mtu = uint8_t(dev_.mtu);
  local_.gid = dev_.gid;
  local_.writeRkey = writeTargetMr_->rkey;
  local_.writeAddr = reinterpret_cast<uintptr_t>(writeTarget_.data());
  local_.writeLen = uint32_t(writeTarget_.size());
  local_.readRkey = readSourceMr_->rkey;
  local_.readAddr = reinterpret_cast<uintptr_t>(readSource_.data());
  local_.readLen = uint32_t(readSource_.size());
  local_.size = opt_.size;
  local_.iters = opt_.iters;
  local_.seed = rand64();
  return {};
}

// Both QPs to INIT and every receive posted, before the peer learns our QPNs.
Result<> Connection::toInit() {
  ibv_qp_attr a = rcInitAttr(
      dev_.port, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ);
  TRY(modifyQp(rcQp_.get(), a, kRcInitMask, "RC RESET->INIT"));
  ibv_qp_attr u{};
  u.qp_state = IBV_QPS_INIT;
  u.pkey_index = 0;
  u.port_num = dev_.port;
  u.qkey = local_.qkey;
  TRY(modifyQp(udQp_.get(), u, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_QKEY,
               "UD RESET->INIT"));
  for (int i = 0; i < kRcRecvDepth; ++i) TRY(postRcRecv(uint64_t(i)));
  for (int i = 0; i < kUdRecvDepth; ++i) TRY(postUdRecv(uint64_t(i)));
  return {};
}

Result<> Connection::exchange() {
  const auto out = encodeInfo(local_);
  if (auto r = sendAll(sock_.get(), out.data(), out.size()); !r)
    return fail("%s", r.error().reason.c_str());
  std::array<uint8_t, kInfoBytes> in{};
  if (auto r = recvAll(sock_.get(), in.data(), in.size(), Clock::now() + kSetupTimeout,
                       "setup message", gStop);
      !r)
    return r.error().stopped ? stopped() : fail("%s", r.error().reason.c_str());
  auto decoded = decodeInfo(in);
  if (!decoded) return fail("%s", decoded.error().c_str());
  peer_ = *decoded;
  if (peer_.side != peerSide_)
    return fail("peer claims side %u, expected %d", peer_.side, peerSide_);
  if (peer_.size != opt_.size || peer_.iters != opt_.iters)
    return fail("peer runs --size %u --iters %u, we run --size %u --iters %u", peer_.size,
                peer_.iters, opt_.size, opt_.iters);
  if (peer_.writeLen < opt_.size || peer_.readLen < 2 * opt_.size)
    return fail("peer buffers too small (write %u, read %u bytes)", peer_.writeLen, peer_.readLen);
  if (peer_.mtu < IBV_MTU_256 || peer_.mtu > IBV_MTU_4096)
    return fail("peer sent bad MTU %u", peer_.mtu);
  if (peer_.rcPsn > 0xffffff) return fail("peer sent a PSN wider than 24 bits");

  // Both sides contribute; both derive the same connection seed.
  const uint64_t acceptorSeed = side_ == 0 ? local_.seed : peer_.seed;
  const uint64_t connectorSeed = side_ == 0 ? peer_.seed : local_.seed;
  seed_ = mix64(acceptorSeed ^ mix64(connectorSeed));
  fillPattern(readSource_.data(), readSource_.size(), key(side_, Stream::kReadSource, 0), 0);
  return {};
}

Result<> Connection::toRts() {
  ibv_ah_attr ah = roceAhAttr(dev_, peer_.gid, peer_.lid);
  ibv_qp_attr a = rcRtrAttr(ah, dev_.mtu, peer_.mtu, peer_.rcQpn, peer_.rcPsn);
  TRY(modifyQp(rcQp_.get(), a, kRcRtrMask, "RC INIT->RTR"));
  a = rcRtsAttr(local_.rcPsn, uint8_t(opt_.timeout), uint8_t(opt_.retryCnt),
                uint8_t(opt_.rnrRetry));
  TRY(modifyQp(rcQp_.get(), a, kRcRtsMask, "RC RTR->RTS"));

  ibv_qp_attr u{};
  u.qp_state = IBV_QPS_RTR;
  TRY(modifyQp(udQp_.get(), u, IBV_QP_STATE, "UD INIT->RTR"));
  u = ibv_qp_attr{};
  u.qp_state = IBV_QPS_RTS;
  u.sq_psn = 0;
  TRY(modifyQp(udQp_.get(), u, IBV_QP_STATE | IBV_QP_SQ_PSN, "UD RTR->RTS"));

  ah_.reset(ibv_create_ah(dev_.pd.get(), &ah));
  if (!ah_) return fail("ibv_create_ah: %s", errnoText(errno).c_str());
  return {};
}

// Neither side sends until both QPs of both sides are in RTS: a packet that reaches a QP
// still in INIT is dropped and would cost an RC retry (or a UD retransmit) for nothing.
Result<> Connection::readyBarrier() {
  uint8_t out[8];
  WireWriter w(out);
  w.u32(kReadyMagic);
  w.u32(uint32_t(index_));
  if (auto r = sendAll(sock_.get(), out, sizeof out); !r)
    return fail("%s", r.error().reason.c_str());
  uint8_t in[8];
  if (auto r = recvAll(sock_.get(), in, sizeof in, Clock::now() + kSetupTimeout, "ready message",
                       gStop);
      !r)
    return r.error().stopped ? stopped() : fail("%s", r.error().reason.c_str());
  WireReader rd(in);
  if (const uint32_t magic = rd.u32(); magic != kReadyMagic)
    return fail("bad ready magic 0x%08x", magic);
  return {};
}

// --- posting ----------------------------------------------------------------------------

Result<> Connection::postRc(WrKind kind, ibv_wr_opcode op, const Buffer& src, const ibv_mr& mr,
                            uint64_t remoteAddr, uint32_t rkey, uint32_t immBe) {
  ibv_sge sge{};
  sge.addr = reinterpret_cast<uintptr_t>(src.data());
  sge.length = opt_.size;
  sge.lkey = mr.lkey;
  ibv_send_wr wr{};
  wr.wr_id = makeWrId(kind, iter_);
  wr.sg_list = &sge;
  wr.num_sge = 1;
  wr.opcode = op;
  wr.send_flags = IBV_SEND_SIGNALED;
  if (op == IBV_WR_RDMA_WRITE_WITH_IMM) wr.imm_data = immBe;
  if (op != IBV_WR_SEND) {
    wr.wr.rdma.remote_addr = remoteAddr;
    wr.wr.rdma.rkey = rkey;
  }
  ibv_send_wr* bad = nullptr;
  if (const int rc = ibv_post_send(rcQp_.get(), &wr, &bad); rc != 0)
    return fail("ibv_post_send %s: %s", wrKindName(kind), errnoText(rc).c_str());
  rcOpPending_ = true;
  rcOpKind_ = kind;
  return {};
}

Result<> Connection::postRcRecv(uint64_t slot) {
  if (const int rc = postRecv(rcQp_.get(), rcRecv_.data() + slot * opt_.size, opt_.size,
                              rcRecvMr_->lkey, makeWrId(WrKind::kRcRecv, slot));
      rc != 0)
    return fail("ibv_post_recv RC: %s", errnoText(rc).c_str());
  return {};
}

Result<> Connection::postUdRecv(uint64_t slot) {
  // GRH + payload
  if (const int rc = postRecv(udQp_.get(), udRecv_.data() + slot * kUdRecvSlotBytes,
                              kUdRecvSlotBytes, udRecvMr_->lkey, makeWrId(WrKind::kUdRecv, slot));
      rc != 0)
    return fail("ibv_post_recv UD: %s", errnoText(rc).c_str());
  return {};
}

std::optional<int> Connection::freeUdSlot() const {
  for (int i = 0; i < kUdSendSlots; ++i)
    if (!udSlotBusy_[size_t(i)]) return i;
  return std::nullopt;
}

// A slot's memory stays untouched until its send completes: the HCA may read it until then.
Result<> Connection::postUdSend(int slot, size_t len) {
  ibv_sge sge{};
  sge.addr = reinterpret_cast<uintptr_t>(udSend_.data() + size_t(slot) * kUdDataBytes);
  sge.length = uint32_t(len);
  sge.lkey = udSendMr_->lkey;
  ibv_send_wr wr{};
  wr.wr_id = makeWrId(WrKind::kUdSend, uint64_t(slot));
  wr.sg_list = &sge;
  wr.num_sge = 1;
  wr.opcode = IBV_WR_SEND;
  wr.send_flags = IBV_SEND_SIGNALED;
  wr.wr.ud.ah = ah_.get();
  wr.wr.ud.remote_qpn = peer_.udQpn;
  wr.wr.ud.remote_qkey = peer_.qkey;
  ibv_send_wr* bad = nullptr;
  if (const int rc = ibv_post_send(udQp_.get(), &wr, &bad); rc != 0)
    return fail("ibv_post_send UD: %s", errnoText(rc).c_str());
  udSlotBusy_[size_t(slot)] = true;
  return {};
}

// UD message: magic, type, pad, sequence, connection tag; data messages add a pattern.
void writeUdHeader(uint8_t* p, UdType type, uint64_t seq, uint64_t seed) {
  WireWriter w(p);
  w.u32(kUdMagic);
  w.u16(uint16_t(type));
  w.u16(0);
  w.u32(uint32_t(seq));
  w.u32(uint32_t(seed));
}

Result<> Connection::sendUdData(int slot) {
  uint8_t* p = udSend_.data() + size_t(slot) * kUdDataBytes;
  writeUdHeader(p, UdType::kData, udTxSeq_, seed_);
  fillPattern(p + kUdHeaderBytes, kUdDataBytes - kUdHeaderBytes, key(side_, Stream::kUd, udTxSeq_),
              0);
  TRY(postUdSend(slot, kUdDataBytes));
  udLastTx_ = Clock::now();
  return {};
}

// Retransmits our unacked UD data when it is due and sends the acks we owe.
Result<> Connection::serviceUd() {
  if (udAwaitingAck_ && Clock::now() - udLastTx_ >= kUdRetransmit) {
    if (const auto slot = freeUdSlot()) {
      TRY(sendUdData(*slot));
      ++udRetransmits_;
    }
  }
  while (!acksOwed_.empty()) {
    const auto slot = freeUdSlot();
    if (!slot) break;  // the next call sends the rest
    writeUdHeader(udSend_.data() + size_t(*slot) * kUdDataBytes, UdType::kAck, acksOwed_.front(),
                  seed_);
    TRY(postUdSend(*slot, kUdHeaderBytes));
    acksOwed_.pop_front();
  }
  return {};
}

// --- completions --------------------------------------------------------------------------

Result<> Connection::noteSocket(short revents) {
  sockRevents_ = revents;
  sockCheckedAt_ = Clock::now();
  // A peer closes its end only after the done handshake, or when it failed or was killed;
  // noticing it here turns a 60 s stall into an immediate, named failure.
  if (phase_ == Phase::kRun && (revents & (POLLRDHUP | POLLHUP | POLLERR)))
    return fail("peer closed the TCP connection (it failed or exited)");
  return {};
}

Result<> Connection::drain(bool& got) {
  std::array<ibv_wc, 16> wcs;
  for (;;) {
    const int n = ibv_poll_cq(cq_.get(), int(wcs.size()), wcs.data());
    if (n < 0) return fail("ibv_poll_cq failed (%d)", n);
    for (int i = 0; i < n; ++i) TRY(handle(wcs[size_t(i)]));
    if (n > 0) got = true;
    if (n < int(wcs.size())) return {};
  }
}

// Handles whatever completions are ready, waiting up to maxWait for the first one.
Result<> Connection::pump(Clock::duration maxWait) {
  bool got = false;
  TRY(drain(got));
  if (got) return {};

  if (opt_.poll == PollMode::kBusy) {
    const auto deadline = Clock::now() + maxWait;
    for (unsigned spin = 1;; ++spin) {
      TRY(drain(got));
      if (got) break;
      if (spin % 256 == 0 && (gStop.load() || Clock::now() >= deadline)) break;
    }
    if (Clock::now() - sockCheckedAt_ >= kSlice) {
      pollfd pfd{sock_.get(), sockEvents_, 0};
      if (::poll(&pfd, 1, 0) >= 0) TRY(noteSocket(pfd.revents));
    }
    return {};
  }

  // Event mode. Invariant: the CQ is armed, or an event for it is waiting on the channel.
  // We arm right after consuming each event and drain after arming, so no completion can
  // slip in unnoticed between the drain and the poll.
  pollfd fds[2] = {{channel_->fd, POLLIN, 0}, {sock_.get(), sockEvents_, 0}};
  const auto ms = std::chrono::ceil<std::chrono::milliseconds>(maxWait).count();
  const int r = ::poll(fds, 2, int(std::max<int64_t>(ms, 1)));
  if (r < 0) {
    if (errno == EINTR) return {};
    return fail("poll completion channel: %s", errnoText(errno).c_str());
  }
  TRY(noteSocket(fds[1].revents));
  if (fds[0].revents & POLLIN) {
    ibv_cq* evCq = nullptr;
    void* evCtx = nullptr;
    if (ibv_get_cq_event(channel_.get(), &evCq, &evCtx) != 0) {
      if (errno == EAGAIN || errno == EINTR) return {};
      return fail("ibv_get_cq_event: %s", errnoText(errno).c_str());
    }
    ibv_ack_cq_events(evCq, 1);  // every event acked at once: ibv_destroy_cq waits for that
    if (evCq != cq_.get())
      return fail("ibv_get_cq_event returned CQ %p, ours is %p", static_cast<void*>(evCq),
                  static_cast<void*>(cq_.get()));
    if (const int rc = ibv_req_notify_cq(cq_.get(), 0); rc != 0)
      return fail("ibv_req_notify_cq: %s", errnoText(rc).c_str());
    TRY(drain(got));
  }
  return {};
}

Result<> Connection::handle(const ibv_wc& wc) {
  const auto kind = wrKind<WrKind>(wc.wr_id);
  const uint64_t index = wrIndex(wc.wr_id);
  if (wc.status != IBV_WC_SUCCESS) return fail("%s", wcErrorText(wc, wrKindName(kind)).c_str());
  switch (kind) {
    case WrKind::kRcSend:
    case WrKind::kRcWrite:
    case WrKind::kRcRead: return onRcSendSide(wc, kind, index);
    case WrKind::kRcRecv: return onRcRecv(wc, index);
    case WrKind::kUdRecv: return onUdRecv(wc, index);
    case WrKind::kUdSend:
      if (index >= kUdSendSlots || wc.opcode != IBV_WC_SEND)
        return fail("bad UD SEND completion (opcode %d, wr_id 0x%llx)", int(wc.opcode),
                    static_cast<unsigned long long>(wc.wr_id));
      udSlotBusy_[index] = false;
      return {};
  }
  return fail("completion with unknown wr_id 0x%llx (opcode %d)",
              static_cast<unsigned long long>(wc.wr_id), int(wc.opcode));
}

Result<> Connection::verify(const char* what, const uint8_t* got, size_t len, uint64_t k,
                            size_t pos0) {
  if (const auto m = checkPattern(got, len, k, pos0))
    return fail("%s mismatch at offset %zu of %zu: expected 0x%02x, got 0x%02x", what, m->offset,
                len, m->expected, m->got);
  bytesChecked_ += len;
  return {};
}

Result<> Connection::onRcSendSide(const ibv_wc& wc, WrKind kind, uint64_t index) {
  if (!rcOpPending_ || kind != rcOpKind_ || index != iter_)
    return fail("unexpected %s completion (wr_id 0x%llx)", wrKindName(kind),
                static_cast<unsigned long long>(wc.wr_id));
  // The initiator's completion for WRITE_WITH_IMM is IBV_WC_RDMA_WRITE.
  const ibv_wc_opcode want = kind == WrKind::kRcSend    ? IBV_WC_SEND
                             : kind == WrKind::kRcWrite ? IBV_WC_RDMA_WRITE
                                                        : IBV_WC_RDMA_READ;
  if (wc.opcode != want)
    return fail("%s completion with opcode %d, expected %d", wrKindName(kind), int(wc.opcode),
                int(want));
  rcOpPending_ = false;
  progressAt_ = Clock::now();
  if (kind == WrKind::kRcRead)
    return verify("RDMA_READ data", readDst_.data(), opt_.size,
                  key(peerSide_, Stream::kReadSource, 0), readOffset(iter_));
  return {};
}

Result<> Connection::onRcRecv(const ibv_wc& wc, uint64_t slot) {
  if (slot >= kRcRecvDepth)
    return fail("RC receive completion for unknown slot %llu",
                static_cast<unsigned long long>(slot));
  const uint8_t* buf = rcRecv_.data() + slot * opt_.size;
  if (wc.opcode == IBV_WC_RECV) {
    // RC delivers in order: the n-th SEND we receive is the peer's SEND n. It may be one
    // ahead of us (see iteration()), never more.
    const uint64_t j = sendsVerified_;
    if (j >= opt_.iters || j > iter_ + 1)
      return fail("peer's SEND %llu arrived in iteration %llu", static_cast<unsigned long long>(j),
                  static_cast<unsigned long long>(iter_));
    if (wc.wc_flags & IBV_WC_WITH_IMM)
      return fail("peer's SEND %llu carries immediate data", static_cast<unsigned long long>(j));
    if (wc.byte_len != opt_.size)
      return fail("peer's SEND %llu has byte_len %u, expected %u",
                  static_cast<unsigned long long>(j), wc.byte_len, opt_.size);
    TRY(verify("SEND payload", buf, opt_.size, key(peerSide_, Stream::kSend, j), 0));
    ++sendsVerified_;
  } else if (wc.opcode == IBV_WC_RECV_RDMA_WITH_IMM) {
    const uint64_t j = writesVerified_;
    if (j >= opt_.iters || j > iter_)
      return fail("peer's RDMA_WRITE_WITH_IMM %llu arrived in iteration %llu",
                  static_cast<unsigned long long>(j), static_cast<unsigned long long>(iter_));
    if (!(wc.wc_flags & IBV_WC_WITH_IMM))
      return fail("RECV_RDMA_WITH_IMM completion without IBV_WC_WITH_IMM");
    if (wc.imm_data != htonl(uint32_t(j)))
      return fail("RDMA_WRITE_WITH_IMM imm_data %u, expected %u", ntohl(wc.imm_data), uint32_t(j));
    if (wc.byte_len != opt_.size)
      return fail("RDMA_WRITE_WITH_IMM byte_len %u, expected %u", wc.byte_len, opt_.size);
    TRY(verify("RDMA_WRITE target", writeTarget_.data(), opt_.size,
               key(peerSide_, Stream::kWrite, j), 0));
    ++writesVerified_;
  } else {
    return fail("RC receive completion with unexpected opcode %d", int(wc.opcode));
  }
  progressAt_ = Clock::now();
  return postRcRecv(slot);
}

Result<> Connection::onUdRecv(const ibv_wc& wc, uint64_t slot) {
  if (slot >= kUdRecvDepth)
    return fail("UD receive completion for unknown slot %llu",
                static_cast<unsigned long long>(slot));
  // The first 40 bytes of a UD receive buffer are reserved for the GRH; byte_len counts them
  // when one was present (always on RoCE).
  const uint8_t* msg = udRecv_.data() + slot * kUdRecvSlotBytes + kGrhBytes;
  const bool grh = wc.wc_flags & IBV_WC_GRH;
  if (grh && wc.byte_len < kGrhBytes)
    return fail("UD receive byte_len %u is shorter than the GRH", wc.byte_len);
  const size_t len = grh ? wc.byte_len - kGrhBytes : wc.byte_len;
  if (len < kUdHeaderBytes) return fail("UD message of %zu bytes", len);
  WireReader r(msg);
  const uint32_t magic = r.u32();
  const auto type = static_cast<UdType>(r.u16());
  (void)r.u16();
  const uint32_t seq32 = r.u32();
  const uint32_t tag = r.u32();
  if (magic != kUdMagic || tag != uint32_t(seed_))
    return fail("UD message not from this connection's peer (magic 0x%08x, tag 0x%08x)", magic,
                tag);
  // Sequences fit 32 bits (--iters is 32-bit); widen against what we expect.
  const uint64_t seq = seq32;

  if (type == UdType::kData) {
    if (len != kUdDataBytes)
      return fail("UD data message of %zu bytes, expected %zu", len, kUdDataBytes);
    if (seq == udRxNext_) {
      TRY(verify("UD payload", msg + kUdHeaderBytes, kUdDataBytes - kUdHeaderBytes,
                 key(peerSide_, Stream::kUd, seq), 0));
      ++udRxNext_;
      progressAt_ = Clock::now();
    } else if (seq < udRxNext_) {
      ++udDuplicates_;  // our ack got lost or was late: ack again
    } else {
      return fail("UD data %llu from the future (expected %llu)",
                  static_cast<unsigned long long>(seq), static_cast<unsigned long long>(udRxNext_));
    }
    acksOwed_.push_back(seq);
  } else if (type == UdType::kAck) {
    if (len != kUdHeaderBytes)
      return fail("UD ack of %zu bytes, expected %zu", len, kUdHeaderBytes);
    if (udAwaitingAck_ && seq == udTxSeq_) {
      udAwaitingAck_ = false;
      progressAt_ = Clock::now();
    }  // else: a late duplicate ack for an earlier message
  } else {
    return fail("UD message of unknown type %u", unsigned(type));
  }
  return postUdRecv(slot);
}

Clock::duration Connection::nextWait() const {
  if (!udAwaitingAck_) return kSlice;
  const auto due = udLastTx_ + kUdRetransmit - Clock::now();
  return std::clamp<Clock::duration>(due, 1ms, kSlice);
}

// Runs the completion loop (UD retransmits and acks included) until done() holds.
template <typename Done>
Result<> Connection::waitFor(const char* what, Done done) {
  progressAt_ = Clock::now();
  for (;;) {
    TRY(serviceUd());
    if (done()) return {};
    if (gStop.load()) return stopped();
    if (Clock::now() - progressAt_ > kNoProgressLimit)
      return fail("no progress for %lld s waiting for %s",
                  static_cast<long long>(kNoProgressLimit / 1s), what);
    TRY(pump(nextWait()));
  }
}

// --interval-ms: keeps answering the peer's UD retransmits while idle.
Result<> Connection::idle(Clock::duration d) {
  const auto until = Clock::now() + d;
  for (auto now = Clock::now(); now < until; now = Clock::now()) {
    if (gStop.load()) return stopped();
    TRY(serviceUd());
    TRY(pump(std::min<Clock::duration>(until - now, kSlice)));
  }
  return {};
}

// --- the iteration -----------------------------------------------------------------------

// Why the buffers can be reused without a data race:
//  * Write target: the peer posts WRITE k+1 only after it received our SEND k+1 (its step 2
//    of k+1 follows its step 1 of k+1, which waits for that SEND). We post SEND k+1 only
//    after step 2 of k, which completes when we have verified the peer's WRITE k (we verify
//    inside the completion handler, before anything else is posted). So WRITE k+1 cannot
//    land in the target before we are done reading WRITE k.
//  * RC receive ring: the peer posts SEND k+1 only after finishing its step 4 of k, which
//    needs our UD data k, which we send only after consuming its SEND k and WRITE k. So at
//    most two receive-consuming messages (SEND k+1, WRITE k+1) are ever unconsumed, and
//    the peer's SEND k+1 may arrive while we still wait in step 4 of k (when its ack to us
//    was lost). Each receive is reposted as soon as it is handled; depth 4 > 2.
//  * Our send sources and read destination: reused only after their completion.
//  * UD: stop-and-wait; duplicates are re-acked in every phase, including the done
//    handshake, because the peer may still retransmit its last message after we finished.
Result<> Connection::iteration(uint64_t k) {
  iter_ = k;

  // 1. RC SEND.
  fillPattern(sendSrc_.data(), opt_.size, key(side_, Stream::kSend, k), 0);
  TRY(postRc(WrKind::kRcSend, IBV_WR_SEND, sendSrc_, *sendSrcMr_, 0, 0, 0));
  TRY(waitFor("the SEND exchange", [&] { return !rcOpPending_ && sendsVerified_ > k; }));

  // 2. RDMA WRITE_WITH_IMM into the peer's write target.
  fillPattern(writeSrc_.data(), opt_.size, key(side_, Stream::kWrite, k), 0);
  TRY(postRc(WrKind::kRcWrite, IBV_WR_RDMA_WRITE_WITH_IMM, writeSrc_, *writeSrcMr_, peer_.writeAddr,
             peer_.writeRkey, htonl(uint32_t(k))));
  TRY(waitFor("the RDMA_WRITE_WITH_IMM exchange",
              [&] { return !rcOpPending_ && writesVerified_ > k; }));

  // 3. RDMA READ of a window of the peer's static read source; cleared first so that a READ
  //    which lands nothing cannot pass on the previous iteration's data.
  std::memset(readDst_.data(), 0, opt_.size);
  TRY(postRc(WrKind::kRcRead, IBV_WR_RDMA_READ, readDst_, *readDstMr_,
             peer_.readAddr + readOffset(k), peer_.readRkey, 0));
  TRY(waitFor("the RDMA_READ", [&] { return !rcOpPending_; }));

  // 4. UD stop-and-wait: done when the peer acked our data k and we have its data k.
  TRY(waitFor("a free UD send slot", [&] { return freeUdSlot().has_value(); }));
  udTxSeq_ = k;
  udAwaitingAck_ = true;
  TRY(sendUdData(*freeUdSlot()));
  TRY(waitFor("the UD exchange", [&] { return !udAwaitingAck_ && udRxNext_ > k; }));
  return {};
}

// Done handshake: tell the peer we finished, keep answering its UD retransmits until it
// says the same. After that neither side sends anything on the QPs.
Result<> Connection::finish() {
  uint8_t out[kDoneBytes];
  WireWriter w(out);
  w.u32(kDoneMagic);
  w.u16(kWireVersion);
  w.u16(0);
  w.u64(itersDone_);
  w.u64(bytesChecked_);
  if (auto r = sendAll(sock_.get(), out, sizeof out); !r)
    return fail("%s", r.error().reason.c_str());

  sockEvents_ = POLLIN | POLLRDHUP;
  uint8_t in[kDoneBytes];
  size_t got = 0;
  progressAt_ = Clock::now();
  while (got < kDoneBytes) {
    if (gStop.load()) return stopped();
    if (Clock::now() - progressAt_ > kNoProgressLimit)
      return fail("no done message from the peer within %lld s",
                  static_cast<long long>(kNoProgressLimit / 1s));
    TRY(serviceUd());
    sockRevents_ = 0;
    TRY(pump(kSlice));
    if (!(sockRevents_ & (POLLIN | POLLRDHUP | POLLHUP | POLLERR))) continue;
    const ssize_t n = ::recv(sock_.get(), in + got, kDoneBytes - got, MSG_DONTWAIT);
    if (n == 0) return fail("peer closed the TCP connection before its done message");
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      return fail("recv done message: %s", errnoText(errno).c_str());
    }
    got += size_t(n);
  }
  WireReader r(in);
  const uint32_t magic = r.u32();
  const uint16_t version = r.u16();
  const uint16_t status = r.u16();
  const uint64_t peerIters = r.u64();
  if (magic != kDoneMagic || version != kWireVersion)
    return fail("bad done message (magic 0x%08x)", magic);
  if (status != 0 || peerIters != opt_.iters)
    return fail("peer finished %llu of %u iterations", static_cast<unsigned long long>(peerIters),
                opt_.iters);
  return {};
}

// ---------------------------------------------------------------------------------------

void connectionThread(const Options& opt, const Device& dev, int index, int side, UniqueFd sock) {
  try {
    Connection conn(opt, dev, index, side, std::move(sock));
    if (auto r = conn.run(); !r && !r.error().stopped) recordFailure(r.error().reason);
    // conn's destructor releases its verbs objects here, on its own thread.
  } catch (const std::exception& e) {
    recordFailure(format("conn %d: %s", index, e.what()));
  }
}

int runWorkload(const Options& opt) {
  std::vector<std::thread> threads;
  {
    auto dev = openDevice(opt);
    if (!dev) {
      recordFailure(dev.error().reason);
    } else {
      const size_t conns = opt.connect.size() + (opt.listenPort ? opt.peers : 0);
      say("device %s port %u gid %s conns %zu", (*dev)->name.c_str(), (*dev)->port,
          gidText((*dev)->gid).c_str(), conns);
      const auto deadline = Clock::now() + kSetupTimeout;
      const Device& d = **dev;
      int index = 0;
      // Listen before connecting, so that two instances connecting to each other both
      // find a listener (the kernel completes the handshake before we accept()).
      UniqueFd lfd;
      if (opt.listenPort) {
        auto l = listenOn(*opt.listenPort, 64);
        if (!l)
          recordFailure(l.error().reason);
        else
          lfd = std::move(*l);
      }
      for (const std::string& hp : opt.connect) {
        if (gStop.load()) break;
        auto fd = connectTo(hp, deadline, gStop);
        if (!fd) {
          if (!fd.error().stopped)
            recordFailure(format("conn %d setup: %s", index, fd.error().reason.c_str()));
          break;
        }
        threads.emplace_back(connectionThread, std::cref(opt), std::cref(d), index++, 1,
                             std::move(*fd));
      }
      for (uint32_t i = 0; lfd.get() >= 0 && i < opt.peers && !gStop.load(); ++i) {
        auto fd = acceptOne(lfd.get(), deadline, "timed out waiting for a peer to connect", gStop);
        if (!fd) {
          if (!fd.error().stopped)
            recordFailure(format("conn %d setup: %s", index, fd.error().reason.c_str()));
          break;
        }
        threads.emplace_back(connectionThread, std::cref(opt), std::cref(d), index++, 0,
                             std::move(*fd));
      }
      lfd.reset();
      for (auto& t : threads) t.join();
    }
    // dev goes here: PD, then the device context, after every connection released its objects.
  }

  std::string reason;
  {
    std::lock_guard lock(gFailMu);
    reason = gFirstFailure;
  }
  if (reason.empty() && gSignal.load() != 0)
    reason = gSignal.load() == SIGTERM ? "terminated by SIGTERM" : "interrupted by SIGINT";
  if (!reason.empty()) {
    say("FAIL %s", reason.c_str());
    return 1;
  }
  say("PASS");
  return 0;
}

}  // namespace

// A verbs object that cannot be destroyed fails the run.
void vmckpt::ibw::onCleanupFailure(const std::string& what) { recordFailure("cleanup: " + what); }

int main(int argc, char** argv) {
  const auto opt = parseOptions(argc, argv);
  if (const auto code = exitForCommandLine(opt, kProg, kUsage)) return *code;
  installSignalHandlers(onSignal);
  return runWorkload(*opt);
}
