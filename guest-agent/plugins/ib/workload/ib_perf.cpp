// vmckpt-ib-perf: verbs latency and bandwidth, to measure what the interposer costs.
//
// In the spirit of perftest's ib_send_lat and ib_write_bw (our own code):
//   lat  RC SEND/RECV ping-pong; the client times each round trip with CLOCK_MONOTONIC and
//        reports one-way latency (rtt / 2): median, p99, min and average, in microseconds.
//   bw   the client keeps --window RDMA WRITEs to the server's buffer outstanding and reports
//        MB/s (10^6 bytes/s) and messages/s; after each size it sends a SEND_WITH_IMM that
//        the server waits for.
// The server takes test, sizes, iterations, warmup and window from the client. Completions
// are busy-polled. TCP carries only the setup exchange, a ready barrier and a final bye.
//
// Only public libibverbs API is used, and every id a verbs call returns is passed along
// opaquely, so an LD_PRELOAD interposer may present virtual ids.
//
// Build: g++ -std=c++23 -O2 ib_perf.cpp verbs_util.cpp -o vmckpt-ib-perf -libverbs -pthread

#include <arpa/inet.h>
#include <infiniband/verbs.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <expected>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "verbs_util.hpp"

namespace {

namespace ibw = vmckpt::ibw;
using namespace std::chrono_literals;
using ibw::ArgReader;
using ibw::BufferSpec;
using ibw::Clock;
using ibw::CqPtr;
using ibw::errnoText;
using ibw::format;
using ibw::kPort;
using ibw::kSetupTimeout;
using ibw::MrPtr;
using ibw::QpPtr;
using ibw::UniqueFd;
using ibw::vformat;
using ibw::WireReader;
using ibw::WireWriter;
using ibw::writeLine;

constexpr const char* kProg = "vmckpt-ib-perf";
constexpr uint32_t kMaxSize = 8u << 20;
constexpr size_t kMaxSizes = 16;
constexpr uint32_t kMaxWindow = 4096;
constexpr int kRecvDepth = 4;       // ping-pong has one message in flight per direction
constexpr size_t kNotifyBytes = 8;  // bw: end-of-size SEND_WITH_IMM payload
constexpr auto kStallLimit = 30s;  // no completion at all for this long: the peer is gone

constexpr uint32_t kInfoMagic = 0x50574256;   // "VBWP"
constexpr uint32_t kReadyMagic = 0x59445256;  // "VRDY"
constexpr uint32_t kByeMagic = 0x45594256;    // "VBYE"
constexpr uint16_t kWireVersion = 1;
constexpr size_t kInfoBytes = 136;

// ---------------------------------------------------------------------------------------
// Errors and output

std::atomic<bool> gInterrupted{false};  // by SIGTERM or SIGINT

void onSignal(int) { gInterrupted.store(true); }

using Error = std::string;  // one line: the failing call and the errno text
template <typename T = void>
using Result = std::expected<T, Error>;

__attribute__((format(printf, 1, 2))) std::unexpected<Error> fail(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  std::string s = vformat(fmt, ap);
  va_end(ap);
  return std::unexpected(std::move(s));
}

// A shared helper's result in this program's terms: only a signal stops its waits here.
template <typename T>
Result<T> adopt(ibw::Result<T> r) {
  if (!r)
    return std::unexpected(r.error().stopped ? Error("interrupted by a signal")
                                             : std::move(r.error().reason));
  if constexpr (std::is_void_v<T>)
    return {};
  else
    return std::move(*r);
}

std::string firstCleanupError;  // a failing destroy makes the run fail

// ---------------------------------------------------------------------------------------
// Options

enum class Test : uint32_t { kLat = 0, kBw = 1 };

struct Options {
  std::optional<uint16_t> serverPort;
  std::string client;  // HOST:PORT
  std::string dev;
  std::optional<uint32_t> gidIndex;
  Test test = Test::kLat;
  std::vector<uint32_t> sizes{8};
  uint32_t iters = 0;  // 0: the test's default
  uint32_t warmup = 100;
  uint32_t window = 16;
  bool json = false;
  bool help = false;
  // Which run parameters were given: a server checks them against the client's.
  bool testGiven = false, sizesGiven = false, itersGiven = false, warmupGiven = false,
       windowGiven = false;
};

constexpr const char* kUsage =
    "usage: vmckpt-ib-perf --server PORT [--dev NAME] [--gid-index N]\n"
    "       vmckpt-ib-perf --client HOST:PORT [--test lat|bw] [--size N[,N...]] [options]\n"
    "\n"
    "RDMA latency (RC SEND/RECV ping-pong) and bandwidth (RDMA WRITE) between two hosts.\n"
    "The client reports; the server takes the run parameters from the client (when given\n"
    "them too, they must match).\n"
    "\n"
    "  --server PORT        wait for one client on PORT\n"
    "  --client HOST:PORT   connect to a server\n"
    "  --dev NAME           RDMA device (default: the first one)\n"
    "  --gid-index N        GID index (default: the first IPv4-mapped GID of port 1)\n"
    "  --test lat|bw        latency or bandwidth (default lat)\n"
    "  --size N[,N...]      message sizes in bytes (',' or ':' between), up to 16, each 1..8388608 (default 8)\n"
    "  --iters N            measured iterations per size (default 1000 lat, 2000 bw)\n"
    "  --warmup N           unmeasured iterations before them (default 100)\n"
    "  --window N           bw: RDMA WRITEs kept outstanding, 1..4096 (default 16)\n"
    "  --poll busy          completions are always busy-polled (the only mode)\n"
    "  --json               one JSON object per size and line instead of text\n"
    "  --help               show this help\n";

std::expected<Options, std::string> parseOptions(int argc, char** argv) {
  Options o;
  ArgReader args(argc, argv);
  while (args.next()) {
    const std::string_view name = args.name();
    if (name == "--server") {
      const auto n = args.number(1, 65535);
      if (!n) return std::unexpected(n.error());
      o.serverPort = uint16_t(*n);
    } else if (name == "--client") {
      const auto v = args.requireValue();
      if (!v) return std::unexpected(v.error());
      if (!ibw::isHostPort(*v))
        return std::unexpected(
            format("--client: '%.*s' is not HOST:PORT", int(v->size()), v->data()));
      o.client = *v;
    } else if (name == "--dev") {
      const auto v = args.requireValue();
      if (!v) return std::unexpected(v.error());
      if (v->empty()) return std::unexpected(std::string("--dev needs a device name"));
      o.dev = *v;
    } else if (name == "--gid-index") {
      const auto n = args.number(0, 65535);
      if (!n) return std::unexpected(n.error());
      o.gidIndex = uint32_t(*n);
    } else if (name == "--test") {
      const auto v = args.requireValue();
      if (!v) return std::unexpected(v.error());
      if (*v == "lat")
        o.test = Test::kLat;
      else if (*v == "bw")
        o.test = Test::kBw;
      else
        return std::unexpected(std::string("--test takes lat or bw"));
      o.testGiven = true;
    } else if (name == "--size") {
      const auto v = args.requireValue();
      if (!v) return std::unexpected(v.error());
      o.sizes.clear();
      std::string_view rest = *v;
      for (;;) {
        // ',' or ':' between sizes (':' where commas are taken, as on a kernel command line)
        const auto comma = rest.find_first_of(",:");
        const std::string_view item = rest.substr(0, comma);
        const auto n = ibw::parseUint(item, 1, kMaxSize);
        if (!n)
          return std::unexpected(format("--size: '%.*s' is not a size in 1..%u", int(item.size()),
                                        item.data(), kMaxSize));
        o.sizes.push_back(uint32_t(*n));
        if (comma == std::string_view::npos) break;
        rest = rest.substr(comma + 1);
      }
      if (o.sizes.size() > kMaxSizes)
        return std::unexpected(format("--size: at most %zu sizes", kMaxSizes));
      o.sizesGiven = true;
    } else if (name == "--iters") {
      const auto n = args.number(1, UINT32_MAX);
      if (!n) return std::unexpected(n.error());
      o.iters = uint32_t(*n);
      o.itersGiven = true;
    } else if (name == "--warmup") {
      const auto n = args.number(0, UINT32_MAX);
      if (!n) return std::unexpected(n.error());
      o.warmup = uint32_t(*n);
      o.warmupGiven = true;
    } else if (name == "--window") {
      const auto n = args.number(1, kMaxWindow);
      if (!n) return std::unexpected(n.error());
      o.window = uint32_t(*n);
      o.windowGiven = true;
    } else if (name == "--poll") {
      const auto v = args.requireValue();
      if (!v) return std::unexpected(v.error());
      if (*v != "busy")
        return std::unexpected(std::string("--poll: only busy polling is supported"));
    } else if (name == "--json") {
      if (args.hasInlineValue()) return std::unexpected(std::string("--json takes no value"));
      o.json = true;
    } else {
      return std::unexpected(format("unknown option '%.*s'", int(name.size()), name.data()));
    }
  }
  if (!args.error().empty()) return std::unexpected(args.error());
  o.help = args.helpAsked();
  if (o.help) return o;
  if (o.serverPort.has_value() == !o.client.empty())
    return std::unexpected(std::string("need exactly one of --server PORT and --client HOST:PORT"));
  if (o.iters == 0) o.iters = o.test == Test::kLat ? 1000 : 2000;
  return o;
}

// ---------------------------------------------------------------------------------------
// Wire format (little-endian: ibw::WireWriter, ibw::WireReader)

// Setup message, both ways. The run parameters are the client's; the server echoes them.
struct PerfInfo {
  uint16_t role = 0;  // 0 server, 1 client
  Test test = Test::kLat;
  uint32_t iters = 0, warmup = 0, window = 0;
  std::vector<uint32_t> sizes;
  uint32_t qpn = 0, psn = 0;
  uint16_t lid = 0;
  uint8_t mtu = 0;
  uint8_t mismatch = 0;  // server to client: the parameters it was given that differ (kMismatch*)
  ibv_gid gid{};
  uint32_t rkey = 0;  // the sender's data buffer: the bw client writes into the server's
  uint64_t addr = 0;
  uint32_t len = 0;
};

std::array<uint8_t, kInfoBytes> encodeInfo(const PerfInfo& in) {
  std::array<uint8_t, kInfoBytes> out{};
  WireWriter w(out.data());
  w.u32(kInfoMagic);
  w.u16(kWireVersion);
  w.u16(in.role);
  w.u32(uint32_t(in.test));
  w.u32(in.iters);
  w.u32(in.warmup);
  w.u32(in.window);
  w.u32(uint32_t(in.sizes.size()));
  for (size_t i = 0; i < kMaxSizes; ++i) w.u32(i < in.sizes.size() ? in.sizes[i] : 0);
  w.u32(in.qpn);
  w.u32(in.psn);
  w.u16(in.lid);
  w.u8(in.mtu);
  w.u8(in.mismatch);
  w.bytes(in.gid.raw, sizeof in.gid.raw);
  w.u32(in.rkey);
  w.u64(in.addr);
  w.u32(in.len);
  if (w.size() != kInfoBytes) std::abort();  // our bug
  return out;
}

Result<PerfInfo> decodeInfo(const std::array<uint8_t, kInfoBytes>& raw) {
  WireReader r(raw.data());
  if (const uint32_t magic = r.u32(); magic != kInfoMagic)
    return fail("bad setup magic 0x%08x (not a vmckpt-ib-perf peer?)", magic);
  if (const uint16_t version = r.u16(); version != kWireVersion)
    return fail("peer speaks setup version %u, we speak %u", version, kWireVersion);
  PerfInfo in;
  in.role = r.u16();
  const uint32_t test = r.u32();
  if (test > uint32_t(Test::kBw)) return fail("peer sent unknown test %u", test);
  in.test = Test(test);
  in.iters = r.u32();
  in.warmup = r.u32();
  in.window = r.u32();
  const uint32_t nsizes = r.u32();
  if (nsizes == 0 || nsizes > kMaxSizes) return fail("peer sent %u sizes", nsizes);
  for (size_t i = 0; i < kMaxSizes; ++i) {
    const uint32_t s = r.u32();
    if (i < nsizes) {
      if (s == 0 || s > kMaxSize) return fail("peer sent size %u", s);
      in.sizes.push_back(s);
    }
  }
  if (in.iters == 0 || in.window == 0 || in.window > kMaxWindow)
    return fail("peer sent iters %u window %u", in.iters, in.window);
  in.qpn = r.u32();
  in.psn = r.u32();
  if (in.psn > 0xffffff) return fail("peer sent a PSN wider than 24 bits");
  in.lid = r.u16();
  in.mtu = r.u8();
  in.mismatch = r.u8();
  r.bytes(in.gid.raw, sizeof in.gid.raw);
  in.rkey = r.u32();
  in.addr = r.u64();
  in.len = r.u32();
  return in;
}

// ---------------------------------------------------------------------------------------
// TCP

Result<UniqueFd> acceptClient(uint16_t port) {
  auto lfd = adopt(ibw::listenOn(port, 1));
  if (!lfd) return std::unexpected(lfd.error());
  return adopt(ibw::acceptOne(
      lfd->get(), Clock::now() + kSetupTimeout,
      format("no client connected within %lld s", static_cast<long long>(kSetupTimeout / 1s)),
      gInterrupted));
}

// ---------------------------------------------------------------------------------------
// The benchmark

// The kind of work request in a wr_id (ibw::makeWrId); the index is the send-queue sequence
// number (send side) or the receive slot.
enum class WrKind : uint8_t { kSend = 1, kWrite, kNotify, kRecv };
const char* wrKindName(WrKind k) {
  switch (k) {
    case WrKind::kSend: return "SEND";
    case WrKind::kWrite: return "RDMA_WRITE";
    case WrKind::kNotify: return "SEND_WITH_IMM";
    case WrKind::kRecv: return "RECV";
  }
  return "unknown";
}

struct LatStats {
  double medianUs, p99Us, minUs, avgUs;
};

// One-way latency = rtt / 2. p99 is the nearest-rank percentile.
LatStats latStats(std::vector<int64_t> rttNs) {
  std::sort(rttNs.begin(), rttNs.end());
  const size_t n = rttNs.size();
  auto us = [](double ns) { return ns / 2.0 / 1000.0; };
  const double median =
      n % 2 ? double(rttNs[n / 2]) : (double(rttNs[n / 2 - 1]) + double(rttNs[n / 2])) / 2.0;
  const size_t p99Rank = size_t(std::ceil(0.99 * double(n)));
  double sum = 0;
  for (int64_t v : rttNs) sum += double(v);
  return {us(median), us(double(rttNs[std::max<size_t>(p99Rank, 1) - 1])),
          us(double(rttNs.front())), us(sum / double(n))};
}

class Bench {
 public:
  explicit Bench(Options opt) : opt_(std::move(opt)), isClient_(!opt_.client.empty()) {}
  Result<> run();

 private:
  Result<> openDevice();
  Result<> createResources();
  Result<> exchange();
  Result<> toRts();
  Result<> barrier(uint32_t magic, const char* what);

  Result<> postSend(WrKind kind, ibv_wr_opcode op, uint32_t len, bool signaled, uint32_t immBe);
  Result<> postRecv(uint64_t slot);
  Result<> pollOnce();
  template <typename Done>
  Result<> spinUntil(const char* what, Done done);
  Result<> waitSendQueueRoom(uint64_t need);

  Result<> latClient(uint32_t size);
  Result<> latServer(uint32_t size);
  Result<> bwClient(uint32_t size, uint32_t sizeIndex);
  Result<> bwServer(uint32_t sizeIndex);
  Result<> writes(uint32_t size, uint64_t count);

  Options opt_;
  const bool isClient_;
  UniqueFd sock_;
  PerfInfo local_{}, peer_{};
  uint32_t maxSize_ = 0;
  uint32_t sqDepth_ = 0;
  uint32_t recvSlotBytes_ = 0;

  // Destroyed in reverse: QP, MRs, buffers, CQ, then the device's PD and context.
  ibw::Device dev_;
  CqPtr cq_;
  ibw::Buffer data_, recv_, notify_;
  MrPtr dataMr_, recvMr_, notifyMr_;
  QpPtr qp_;

  // Completion bookkeeping. Send WRs are numbered in posting order; a signaled completion
  // for number s retires every WR up to s (RC completes in order).
  uint64_t sqPosted_ = 0;
  uint64_t sqCompleted_ = 0;
  uint64_t recvs_ = 0;  // receive completions so far
  ibv_wc lastRecv_{};
  uint64_t events_ = 0;  // any completion: progress for the stall check
};

Result<> Bench::openDevice() {
  TRY(adopt(ibw::openContext(dev_, opt_.dev)));
  const auto pa = adopt(ibw::queryPort(dev_));
  if (!pa) return std::unexpected(pa.error());
  local_.lid = dev_.lid;
  local_.mtu = uint8_t(dev_.mtu);
  if (maxSize_ > pa->max_msg_sz)
    return fail("size %u exceeds the port's max_msg_sz %u", maxSize_, pa->max_msg_sz);

  ibv_device_attr da{};
  if (const int rc = ibv_query_device(dev_.ctx.get(), &da); rc != 0)
    return fail("ibv_query_device: %s", errnoText(rc).c_str());
  if (sqDepth_ > uint32_t(da.max_qp_wr))
    return fail("--window %u needs %u send queue entries, %s allows %d", opt_.window, sqDepth_,
                dev_.name.c_str(), da.max_qp_wr);

  TRY(adopt(ibw::selectGid(dev_, *pa, opt_.gidIndex)));
  local_.gid = dev_.gid;
  return adopt(ibw::allocPd(dev_));
}

Result<> Bench::createResources() {
  cq_.reset(ibv_create_cq(dev_.ctx.get(), int(sqDepth_ + kRecvDepth + 16), nullptr, nullptr, 0));
  if (!cq_) return fail("ibv_create_cq: %s", errnoText(errno).c_str());

  // data_: lat send source; bw write source (client) or write target (server).
  const BufferSpec specs[] = {
      {&data_, &dataMr_, maxSize_, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE, "data buffer"},
      {&recv_, &recvMr_, size_t(kRecvDepth) * recvSlotBytes_, IBV_ACCESS_LOCAL_WRITE,
       "receive ring"},
      {&notify_, &notifyMr_, kNotifyBytes, 0, "notify buffer"},
  };
  TRY(adopt(ibw::createRegistered(dev_.pd.get(), specs)));
  std::memset(data_.data(), 0xa5, data_.size());

  // Not every WR signals: bw signals selectively.
  ibv_qp_init_attr init = ibw::qpInitAttr(cq_.get(), IBV_QPT_RC, sqDepth_, kRecvDepth, false);
  qp_.reset(ibv_create_qp(dev_.pd.get(), &init));
  if (!qp_) return fail("ibv_create_qp RC: %s", errnoText(errno).c_str());

  ibv_qp_attr a = ibw::rcInitAttr(kPort, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE);
  if (const int rc = ibv_modify_qp(qp_.get(), &a, ibw::kRcInitMask); rc != 0)
    return fail("ibv_modify_qp RESET->INIT: %s", errnoText(rc).c_str());
  for (int i = 0; i < kRecvDepth; ++i) TRY(postRecv(uint64_t(i)));

  std::random_device rd;
  local_.qpn = qp_->qp_num;
  local_.psn = rd() & 0xffffff;  // PSNs are 24 bits
  local_.rkey = dataMr_->rkey;
  local_.addr = reinterpret_cast<uintptr_t>(data_.data());
  local_.len = uint32_t(data_.size());
  return {};
}

// The client sends first, with the run parameters; the server sizes its buffers from them,
// then answers with its own QP and buffer.
Result<> Bench::exchange() {
  static constexpr std::pair<uint8_t, const char*> kMismatchNames[] = {
      {1, " --test"}, {2, " --size"}, {4, " --iters"}, {8, " --warmup"}, {16, " --window"}};
  auto mismatchText = [](uint8_t bits) {
    std::string s;
    for (const auto& [bit, name] : kMismatchNames)
      if (bits & bit) s += name;
    return s;
  };
  auto receive = [&]() -> Result<PerfInfo> {
    std::array<uint8_t, kInfoBytes> raw{};
    TRY(adopt(ibw::recvAll(sock_.get(), raw.data(), raw.size(), Clock::now() + kSetupTimeout,
                           "setup message", gInterrupted)));
    auto info = decodeInfo(raw);
    if (!info) return std::unexpected(info.error());
    if (info->role != (isClient_ ? 0 : 1))
      return fail("peer is not a %s", isClient_ ? "server" : "client");
    if (info->mismatch)
      return fail("server was given different%s", mismatchText(info->mismatch).c_str());
    if (info->mtu < IBV_MTU_256 || info->mtu > IBV_MTU_4096)
      return fail("peer sent bad MTU %u", info->mtu);
    return info;
  };
  auto send = [&]() -> Result<> {
    const auto raw = encodeInfo(local_);
    return adopt(ibw::sendAll(sock_.get(), raw.data(), raw.size()));
  };
  auto setParams = [&] {
    maxSize_ = *std::max_element(opt_.sizes.begin(), opt_.sizes.end());
    // One slot per outstanding write plus the end-of-size SEND_WITH_IMM, one spare.
    sqDepth_ = opt_.test == Test::kBw ? opt_.window + 2 : 16;
    recvSlotBytes_ = opt_.test == Test::kLat ? maxSize_ : uint32_t(kNotifyBytes);
    local_.test = opt_.test;
    local_.iters = opt_.iters;
    local_.warmup = opt_.warmup;
    local_.window = opt_.window;
    local_.sizes = opt_.sizes;
  };

  if (isClient_) {
    local_.role = 1;
    setParams();
    TRY(openDevice());
    TRY(createResources());
    TRY(send());
    auto info = receive();
    if (!info) return std::unexpected(info.error());
    peer_ = *info;
    if (peer_.test != opt_.test || peer_.sizes != opt_.sizes || peer_.iters != opt_.iters ||
        peer_.warmup != opt_.warmup || peer_.window != opt_.window)
      return fail("server did not accept our run parameters");
    if (opt_.test == Test::kBw && peer_.len < maxSize_)
      return fail("server buffer of %u bytes is smaller than size %u", peer_.len, maxSize_);
    return {};
  }

  auto info = receive();
  if (!info) return std::unexpected(info.error());
  peer_ = *info;
  // Parameters given to the server too must agree with the client's; on a mismatch the
  // client is told which, so both ends report the same cause.
  uint8_t mismatch = 0;
  if (opt_.testGiven && opt_.test != peer_.test) mismatch |= 1;
  if (opt_.sizesGiven && opt_.sizes != peer_.sizes) mismatch |= 2;
  if (opt_.itersGiven && opt_.iters != peer_.iters) mismatch |= 4;
  if (opt_.warmupGiven && opt_.warmup != peer_.warmup) mismatch |= 8;
  if (opt_.windowGiven && opt_.window != peer_.window) mismatch |= 16;
  if (mismatch) {
    local_ = peer_;  // echo the client's parameters so that the message decodes
    local_.role = 0;
    local_.mismatch = mismatch;
    (void)send();
    return fail("client runs with different%s", mismatchText(mismatch).c_str());
  }
  opt_.test = peer_.test;
  opt_.sizes = peer_.sizes;
  opt_.iters = peer_.iters;
  opt_.warmup = peer_.warmup;
  opt_.window = peer_.window;
  local_.role = 0;
  setParams();
  TRY(openDevice());
  TRY(createResources());
  return send();
}

Result<> Bench::toRts() {
  ibv_qp_attr a = ibw::rcRtrAttr(ibw::roceAhAttr(dev_, peer_.gid, peer_.lid), dev_.mtu,
                                 peer_.mtu, peer_.qpn, peer_.psn);
  if (const int rc = ibv_modify_qp(qp_.get(), &a, ibw::kRcRtrMask); rc != 0)
    return fail("ibv_modify_qp INIT->RTR: %s", errnoText(rc).c_str());
  // timeout 14: 67 ms local ACK timeout; rnr_retry 7: retry forever on RNR.
  a = ibw::rcRtsAttr(local_.psn, 14, 7, 7);
  if (const int rc = ibv_modify_qp(qp_.get(), &a, ibw::kRcRtsMask); rc != 0)
    return fail("ibv_modify_qp RTR->RTS: %s", errnoText(rc).c_str());
  return {};
}

// Both ends reach the same point before either goes on: at the start so that nobody sends
// to a QP not yet in RTR, at the end so that nobody destroys a QP the peer still talks to.
Result<> Bench::barrier(uint32_t magic, const char* what) {
  uint8_t out[4];
  WireWriter(out).u32(magic);
  TRY(adopt(ibw::sendAll(sock_.get(), out, sizeof out)));
  uint8_t in[4];
  TRY(adopt(
      ibw::recvAll(sock_.get(), in, sizeof in, Clock::now() + kSetupTimeout, what, gInterrupted)));
  if (const uint32_t got = WireReader(in).u32(); got != magic)
    return fail("bad %s 0x%08x", what, got);
  return {};
}

Result<> Bench::postSend(WrKind kind, ibv_wr_opcode op, uint32_t len, bool signaled,
                         uint32_t immBe) {
  ibv_sge sge{};
  sge.addr = reinterpret_cast<uintptr_t>(kind == WrKind::kNotify ? notify_.data() : data_.data());
  sge.length = len;
  sge.lkey = kind == WrKind::kNotify ? notifyMr_->lkey : dataMr_->lkey;
  ibv_send_wr wr{};
  wr.wr_id = ibw::makeWrId(kind, sqPosted_);
  wr.sg_list = &sge;
  wr.num_sge = 1;
  wr.opcode = op;
  wr.send_flags = signaled ? IBV_SEND_SIGNALED : 0;
  if (op == IBV_WR_SEND_WITH_IMM) wr.imm_data = immBe;
  if (op == IBV_WR_RDMA_WRITE) {
    wr.wr.rdma.remote_addr = peer_.addr;
    wr.wr.rdma.rkey = peer_.rkey;
  }
  ibv_send_wr* bad = nullptr;
  if (const int rc = ibv_post_send(qp_.get(), &wr, &bad); rc != 0)
    return fail("ibv_post_send %s: %s", wrKindName(kind), errnoText(rc).c_str());
  ++sqPosted_;
  return {};
}

Result<> Bench::postRecv(uint64_t slot) {
  if (const int rc = ibw::postRecv(qp_.get(), recv_.data() + slot * recvSlotBytes_, recvSlotBytes_,
                                   recvMr_->lkey, ibw::makeWrId(WrKind::kRecv, slot));
      rc != 0)
    return fail("ibv_post_recv: %s", errnoText(rc).c_str());
  return {};
}

Result<> Bench::pollOnce() {
  std::array<ibv_wc, 16> wcs;
  const int n = ibv_poll_cq(cq_.get(), int(wcs.size()), wcs.data());
  if (n < 0) return fail("ibv_poll_cq failed (%d)", n);
  for (int i = 0; i < n; ++i) {
    const ibv_wc& wc = wcs[size_t(i)];
    const auto kind = ibw::wrKind<WrKind>(wc.wr_id);
    const uint64_t index = ibw::wrIndex(wc.wr_id);
    if (wc.status != IBV_WC_SUCCESS)
      return fail("%s", ibw::wcErrorText(wc, wrKindName(kind)).c_str());
    ++events_;
    if (kind == WrKind::kRecv) {
      if (index >= kRecvDepth)
        return fail("receive completion for unknown slot %llu",
                    static_cast<unsigned long long>(index));
      lastRecv_ = wc;
      ++recvs_;
      TRY(postRecv(index));
    } else {
      // index is the WR's send-queue number; the 56-bit wrap is out of reach.
      sqCompleted_ = std::max(sqCompleted_, index + 1);
    }
  }
  return {};
}

// Busy-polls until done(); fails after kStallLimit without any completion, or as soon as
// the peer closes the TCP connection (it does so only after the bye, or when it died) once
// nothing has completed for a second: the check stays out of the measured fast path.
template <typename Done>
Result<> Bench::spinUntil(const char* what, Done done) {
  auto lastProgress = Clock::now();
  uint64_t lastEvents = events_;
  for (uint32_t spin = 1; !done(); ++spin) {
    TRY(pollOnce());
    if (spin % 1024 == 0) {
      if (gInterrupted.load()) return fail("interrupted by a signal");
      const auto now = Clock::now();
      if (events_ != lastEvents) {
        lastEvents = events_;
        lastProgress = now;
      } else if (now - lastProgress > kStallLimit) {
        return fail("no completion for %lld s waiting for %s",
                    static_cast<long long>(kStallLimit / 1s), what);
      } else if (now - lastProgress > 1s) {
        pollfd pfd{sock_.get(), POLLRDHUP, 0};
        if (::poll(&pfd, 1, 0) > 0 && (pfd.revents & (POLLRDHUP | POLLHUP | POLLERR)))
          return fail("peer closed the TCP connection while we waited for %s", what);
      }
    }
  }
  return {};
}

// Waits until `need` more send WRs fit. The caller guarantees that a signaled WR is among
// the outstanding ones (unsignaled WRs only retire with a later signaled one).
Result<> Bench::waitSendQueueRoom(uint64_t need) {
  return spinUntil("send queue room", [&] { return sqPosted_ - sqCompleted_ + need <= sqDepth_; });
}

Result<> Bench::latClient(uint32_t size) {
  std::vector<int64_t> rtt;
  rtt.reserve(opt_.iters);
  const uint64_t total = uint64_t(opt_.warmup) + opt_.iters;
  for (uint64_t i = 0; i < total; ++i) {
    TRY(waitSendQueueRoom(1));
    const uint64_t before = recvs_;
    const auto t0 = Clock::now();
    TRY(postSend(WrKind::kSend, IBV_WR_SEND, size, true, 0));
    TRY(spinUntil("the pong", [&] { return recvs_ > before; }));
    const auto t1 = Clock::now();
    if (lastRecv_.opcode != IBV_WC_RECV || lastRecv_.byte_len != size)
      return fail("pong of %u bytes (opcode %d), expected %u", lastRecv_.byte_len,
                  int(lastRecv_.opcode), size);
    if (i >= opt_.warmup)
      rtt.push_back(std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count());
  }
  TRY(spinUntil("the last send completion", [&] { return sqCompleted_ == sqPosted_; }));
  const LatStats s = latStats(std::move(rtt));
  if (opt_.json)
    writeLine(STDOUT_FILENO, format("{\"test\":\"lat\",\"size\":%u,\"iters\":%u,\"median_us\":%.3f,"
                                    "\"p99_us\":%.3f,\"min_us\":%.3f,\"avg_us\":%.3f}",
                                    size, opt_.iters, s.medianUs, s.p99Us, s.minUs, s.avgUs));
  else
    writeLine(
        STDOUT_FILENO,
        format("ib-perf: lat size %u iters %u median_us %.2f p99_us %.2f min_us %.2f avg_us %.2f",
               size, opt_.iters, s.medianUs, s.p99Us, s.minUs, s.avgUs));
  return {};
}

Result<> Bench::latServer(uint32_t size) {
  const uint64_t total = uint64_t(opt_.warmup) + opt_.iters;
  for (uint64_t i = 0; i < total; ++i) {
    const uint64_t before = recvs_;
    TRY(spinUntil("the ping", [&] { return recvs_ > before; }));
    if (lastRecv_.opcode != IBV_WC_RECV || lastRecv_.byte_len != size)
      return fail("ping of %u bytes (opcode %d), expected %u", lastRecv_.byte_len,
                  int(lastRecv_.opcode), size);
    TRY(waitSendQueueRoom(1));
    TRY(postSend(WrKind::kSend, IBV_WR_SEND, size, true, 0));
  }
  return spinUntil("the last send completion", [&] { return sqCompleted_ == sqPosted_; });
}

// Posts `count` RDMA WRITEs of `size` bytes keeping up to --window outstanding, and waits
// for all of them. Every sigEvery-th WR and the last one are signaled; sigEvery <= window,
// so whenever the window is full a signaled WR is among the outstanding ones.
Result<> Bench::writes(uint32_t size, uint64_t count) {
  const uint64_t sigEvery = std::max<uint64_t>(1, opt_.window / 4);
  const uint64_t first = sqPosted_;
  const uint64_t end = first + count;
  while (sqCompleted_ < end) {
    while (sqPosted_ < end && sqPosted_ - sqCompleted_ < opt_.window) {
      const uint64_t n = sqPosted_ - first + 1;
      TRY(postSend(WrKind::kWrite, IBV_WR_RDMA_WRITE, size,
                   n % sigEvery == 0 || sqPosted_ + 1 == end, 0));
    }
    const uint64_t completed = sqCompleted_;
    TRY(spinUntil("RDMA_WRITE completions", [&] { return sqCompleted_ != completed; }));
  }
  return {};
}

Result<> Bench::bwClient(uint32_t size, uint32_t sizeIndex) {
  TRY(writes(size, opt_.warmup));
  const auto t0 = Clock::now();
  TRY(writes(size, opt_.iters));
  const auto t1 = Clock::now();
  // Tell the server this size is over: imm carries the size's index.
  TRY(waitSendQueueRoom(1));
  WireWriter(notify_.data()).u32(size);
  TRY(postSend(WrKind::kNotify, IBV_WR_SEND_WITH_IMM, kNotifyBytes, true, htonl(sizeIndex)));
  TRY(spinUntil("the notify completion", [&] { return sqCompleted_ == sqPosted_; }));

  const double secs = std::chrono::duration<double>(t1 - t0).count();
  const double mbps = double(size) * opt_.iters / secs / 1e6;
  const double msgps = opt_.iters / secs;
  if (opt_.json)
    writeLine(STDOUT_FILENO, format("{\"test\":\"bw\",\"size\":%u,\"iters\":%u,\"window\":%u,"
                                    "\"MBps\":%.3f,\"msgps\":%.3f}",
                                    size, opt_.iters, opt_.window, mbps, msgps));
  else
    writeLine(STDOUT_FILENO, format("ib-perf: bw size %u iters %u window %u MBps %.2f msgps %.2f",
                                    size, opt_.iters, opt_.window, mbps, msgps));
  return {};
}

Result<> Bench::bwServer(uint32_t sizeIndex) {
  const uint64_t before = recvs_;
  TRY(spinUntil("the client's end-of-size notification", [&] { return recvs_ > before; }));
  if (lastRecv_.opcode != IBV_WC_RECV || !(lastRecv_.wc_flags & IBV_WC_WITH_IMM) ||
      lastRecv_.imm_data != htonl(sizeIndex))
    return fail("bad end-of-size notification (opcode %d, flags 0x%x)", int(lastRecv_.opcode),
                lastRecv_.wc_flags);
  return {};
}

Result<> Bench::run() {
  if (isClient_) {
    auto fd = adopt(ibw::connectTo(opt_.client, Clock::now() + kSetupTimeout, gInterrupted));
    if (!fd) return std::unexpected(fd.error());
    sock_ = std::move(*fd);
  } else {
    auto fd = acceptClient(*opt_.serverPort);
    if (!fd) return std::unexpected(fd.error());
    sock_ = std::move(*fd);
  }
  TRY(exchange());
  TRY(toRts());
  TRY(barrier(kReadyMagic, "ready message"));
  for (uint32_t i = 0; i < opt_.sizes.size(); ++i) {
    const uint32_t size = opt_.sizes[i];
    if (opt_.test == Test::kLat)
      TRY(isClient_ ? latClient(size) : latServer(size));
    else
      TRY(isClient_ ? bwClient(size, i) : bwServer(i));
  }
  TRY(barrier(kByeMagic, "bye message"));
  if (!isClient_ && !opt_.json)
    writeLine(STDOUT_FILENO, format("ib-perf: server done, %s, %zu sizes",
                                    opt_.test == Test::kLat ? "lat" : "bw", opt_.sizes.size()));
  return {};
}

}  // namespace

// Reported at once; the run fails at the end (main).
void vmckpt::ibw::onCleanupFailure(const std::string& what) {
  writeLine(STDERR_FILENO, std::string(kProg) + ": " + what);
  if (firstCleanupError.empty()) firstCleanupError = what;
}

int main(int argc, char** argv) {
  auto opt = parseOptions(argc, argv);
  if (const auto code = ibw::exitForCommandLine(opt, kProg, kUsage)) return *code;
  ibw::installSignalHandlers(onSignal);

  Result<> r;
  {
    Bench bench(std::move(*opt));
    r = bench.run();
    // bench's destructor releases the verbs objects here.
  }
  if (!r) {
    writeLine(STDERR_FILENO, std::string(kProg) + ": " + r.error());
    return 1;
  }
  if (!firstCleanupError.empty()) return 1;  // already reported by the destroyer
  return 0;
}
