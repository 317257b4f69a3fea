// Shared by the verbs programs the ib tests run in guests (vmckpt-ib-workload, vmckpt-ib-perf):
// output and error helpers, owning wrappers for fds, memory and verbs objects, command-line
// scanning, the little-endian wire encoding, the TCP setup helpers, device and GID selection,
// and the attributes of the RC QP state transitions.
//
// Only public libibverbs API is used, and ids a verbs call returns are passed along opaquely,
// so an LD_PRELOAD interposer may present virtual ids.

#pragma once

#include <infiniband/verbs.h>

#include <atomic>
#include <chrono>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <expected>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>

namespace vmckpt::ibw {

using Clock = std::chrono::steady_clock;  // CLOCK_MONOTONIC

inline constexpr uint8_t kPort = 1;
inline constexpr uint8_t kHopLimit = 64;
// Guests boot and start at different times.
inline constexpr std::chrono::seconds kSetupTimeout{120};
// The longest blocking wait before stop flags are rechecked.
inline constexpr std::chrono::milliseconds kSlice{100};

// ---------------------------------------------------------------------------------------
// Output and errors

std::string errnoText(int e);
std::string vformat(const char* fmt, va_list ap);
__attribute__((format(printf, 1, 2))) std::string format(const char* fmt, ...);

// One line, one write(): lines from different threads never interleave.
void writeLine(int fd, std::string line);

// A failure, or the note that a wait ended because the caller's stop flag was raised.
struct Failure {
  std::string reason;
  bool stopped = false;
};
template <typename T = void>
using Result = std::expected<T, Failure>;

std::unexpected<Failure> failure(std::string reason);
std::unexpected<Failure> stopped();

// Returns the error of an expected-valued expression from the enclosing function.
#define TRY(expr)                                                                                  \
  do {                                                                                             \
    if (auto tryResult = (expr); !tryResult) return std::unexpected(std::move(tryResult.error())); \
  } while (0)

// ---------------------------------------------------------------------------------------
// Resources

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { reset(); }
  int get() const { return fd_; }
  void reset();

 private:
  int fd_ = -1;
};

// Page-aligned, zeroed anonymous memory for an MR.
class Buffer {
 public:
  Buffer() = default;
  Buffer(Buffer&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)),
        size_(std::exchange(o.size_, 0)),
        mapped_(std::exchange(o.mapped_, 0)) {}
  Buffer& operator=(Buffer&& o) noexcept {
    if (this != &o) {
      release();
      data_ = std::exchange(o.data_, nullptr);
      size_ = std::exchange(o.size_, 0);
      mapped_ = std::exchange(o.mapped_, 0);
    }
    return *this;
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() { release(); }

  static Result<Buffer> create(size_t size);
  uint8_t* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  void release();
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
  size_t mapped_ = 0;
};

// Defined by each program: a verbs object could not be destroyed ("ibv_destroy_qp: <errno
// text>"). For these programs that is a failure of the run: it is exactly what a broken
// interposer would get wrong.
void onCleanupFailure(const std::string& what);

// Verbs objects own themselves through unique_ptr.
template <typename T, int (*Destroy)(T*), const char* Name>
struct VerbsDestroyer {
  void operator()(T* p) const noexcept {
    if (const int rc = Destroy(p); rc != 0)
      onCleanupFailure(format("%s: %s", Name, errnoText(rc > 0 ? rc : errno).c_str()));
  }
};
inline constexpr char kCloseDevice[] = "ibv_close_device";
inline constexpr char kDeallocPd[] = "ibv_dealloc_pd";
inline constexpr char kDestroyChannel[] = "ibv_destroy_comp_channel";
inline constexpr char kDestroyCq[] = "ibv_destroy_cq";
inline constexpr char kDeregMr[] = "ibv_dereg_mr";
inline constexpr char kDestroyAh[] = "ibv_destroy_ah";
inline constexpr char kDestroyQp[] = "ibv_destroy_qp";
using ContextPtr =
    std::unique_ptr<ibv_context, VerbsDestroyer<ibv_context, ibv_close_device, kCloseDevice>>;
using PdPtr = std::unique_ptr<ibv_pd, VerbsDestroyer<ibv_pd, ibv_dealloc_pd, kDeallocPd>>;
using ChannelPtr =
    std::unique_ptr<ibv_comp_channel,
                    VerbsDestroyer<ibv_comp_channel, ibv_destroy_comp_channel, kDestroyChannel>>;
using CqPtr = std::unique_ptr<ibv_cq, VerbsDestroyer<ibv_cq, ibv_destroy_cq, kDestroyCq>>;
using MrPtr = std::unique_ptr<ibv_mr, VerbsDestroyer<ibv_mr, ibv_dereg_mr, kDeregMr>>;
using AhPtr = std::unique_ptr<ibv_ah, VerbsDestroyer<ibv_ah, ibv_destroy_ah, kDestroyAh>>;
using QpPtr = std::unique_ptr<ibv_qp, VerbsDestroyer<ibv_qp, ibv_destroy_qp, kDestroyQp>>;

// A buffer to create and register: `what` names it in errors.
struct BufferSpec {
  Buffer* buf;
  MrPtr* mr;
  size_t bytes;
  int access;
  const char* what;
};
// Creates and registers each buffer in turn.
Result<> createRegistered(ibv_pd* pd, std::span<const BufferSpec> specs);

// ---------------------------------------------------------------------------------------
// Command line: --name VALUE or --name=VALUE, and --help / -h.

std::optional<uint64_t> parseUint(std::string_view s, uint64_t min, uint64_t max);

// HOST:PORT with a non-empty host and a port in 1..65535.
bool isHostPort(std::string_view s);

class ArgReader {
 public:
  ArgReader(int argc, char** argv) : argc_(argc), argv_(argv) {}
  // Moves to the next --name[=value]. False after the last argument, and where the scan
  // ends early: at --help or -h (helpAsked()), or at an argument that is not an option
  // (error()).
  bool next();
  bool helpAsked() const { return help_; }
  // Why the scan ended early at an argument that is not an option; empty otherwise.
  const std::string& error() const { return error_; }
  std::string_view name() const { return name_; }
  bool hasInlineValue() const { return inlineValue_.has_value(); }
  // The value after '=', or else the next argument (consumed); none after the last.
  std::optional<std::string_view> value();
  // value(), or "<name> needs a value".
  std::expected<std::string_view, std::string> requireValue();
  // value() as a number in min..max, or why not.
  std::expected<uint64_t, std::string> number(uint64_t min, uint64_t max);

 private:
  int argc_;
  char** argv_;
  int i_ = 0;
  bool help_ = false;
  std::string error_;
  std::string_view name_;
  std::optional<std::string_view> inlineValue_;
};

// main()'s start: a bad command line exits 1 with the reason, --help prints the usage and
// exits 0; nullopt: go on.
template <typename Options>
std::optional<int> exitForCommandLine(const std::expected<Options, std::string>& opt,
                                      const char* prog, const char* usage) {
  if (!opt) {
    std::fprintf(stderr, "%s: %s (see --help)\n", prog, opt.error().c_str());
    return 1;
  }
  if (opt->help) {
    std::fputs(usage, stdout);
    return 0;
  }
  return std::nullopt;
}

// SIGTERM and SIGINT go to handler; SIGPIPE is ignored (a peer may close its socket first).
void installSignalHandlers(void (*handler)(int));

// ---------------------------------------------------------------------------------------
// Little-endian wire encoding for the TCP messages.

class WireWriter {
 public:
  explicit WireWriter(uint8_t* p) : p_(p) {}
  void u8(uint8_t v) { p_[off_++] = v; }
  void u16(uint16_t v) {
    for (int i = 0; i < 2; ++i) u8(uint8_t(v >> (8 * i)));
  }
  void u32(uint32_t v) {
    for (int i = 0; i < 4; ++i) u8(uint8_t(v >> (8 * i)));
  }
  void u64(uint64_t v) {
    for (int i = 0; i < 8; ++i) u8(uint8_t(v >> (8 * i)));
  }
  void bytes(const uint8_t* b, size_t n);
  size_t size() const { return off_; }

 private:
  uint8_t* p_;
  size_t off_ = 0;
};

class WireReader {
 public:
  explicit WireReader(const uint8_t* p) : p_(p) {}
  uint8_t u8() { return p_[off_++]; }
  uint16_t u16() {
    uint16_t v = 0;
    for (int i = 0; i < 2; ++i) v = uint16_t(v | uint16_t(u8()) << (8 * i));
    return v;
  }
  uint32_t u32() {
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v |= uint32_t(u8()) << (8 * i);
    return v;
  }
  uint64_t u64() {
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= uint64_t(u8()) << (8 * i);
    return v;
  }
  void bytes(uint8_t* b, size_t n);

 private:
  const uint8_t* p_;
  size_t off_ = 0;
};

// ---------------------------------------------------------------------------------------
// TCP helpers. Every wait is sliced (kSlice) so that raising `stop` ends it with stopped().

Result<> sendAll(int fd, const void* data, size_t len);
// `what` names the awaited message in errors.
Result<> recvAll(int fd, void* data, size_t len, Clock::time_point deadline, const char* what,
                 const std::atomic<bool>& stop);
void setNoDelay(int fd);
// Dual-stack where the kernel has IPv6, plain IPv4 otherwise.
Result<UniqueFd> listenOn(uint16_t port, int backlog);
// `timeoutReason` is the failure when the deadline passes first.
Result<UniqueFd> acceptOne(int lfd, Clock::time_point deadline, const std::string& timeoutReason,
                           const std::atomic<bool>& stop);
// Connects, retrying while the peer is not listening yet (it may still be booting). The
// failure after the deadline says "gave up after kSetupTimeout": deadlines derive from it.
Result<UniqueFd> connectTo(const std::string& hostPort, Clock::time_point deadline,
                           const std::atomic<bool>& stop);

// ---------------------------------------------------------------------------------------
// Device

struct Device {
  ContextPtr ctx;  // declared first: destroyed last
  PdPtr pd;
  std::string name;
  uint8_t port = kPort;
  int gidIndex = 0;
  ibv_gid gid{};
  uint16_t lid = 0;
  ibv_mtu mtu = IBV_MTU_1024;
  uint32_t maxMsgSize = 0;
};

// Opening a Device, in steps so that a program can check its own limits in between:
// openContext, queryPort, selectGid, allocPd.
// The device called `name`, or the first one when it is empty.
Result<> openContext(Device& dev, const std::string& name);
// kPort must be active; fills lid, mtu and maxMsgSize.
Result<ibv_port_attr> queryPort(Device& dev);
// GID `index` (--gid-index) or else the first IPv4-mapped GID of kPort.
Result<> selectGid(Device& dev, const ibv_port_attr& pa, std::optional<uint32_t> index);
Result<> allocPd(Device& dev);

bool isIpv4Mapped(const ibv_gid& g);
std::string gidText(const ibv_gid& g);

// ---------------------------------------------------------------------------------------
// QPs and completions

// wr_id: the kind of work request in the top byte, an index (a slot or a sequence number)
// below it. Error completions carry only status and wr_id (their opcode is undefined), so the
// failed operation is named from the kind.
inline constexpr uint64_t kWrIndexMask = (1ull << 56) - 1;
template <typename Kind>
uint64_t makeWrId(Kind kind, uint64_t index) {
  return uint64_t(kind) << 56 | (index & kWrIndexMask);
}
template <typename Kind>
Kind wrKind(uint64_t id) {
  return static_cast<Kind>(id >> 56);
}
inline uint64_t wrIndex(uint64_t id) { return id & kWrIndexMask; }

// "<what> completion: <status> (status N, wr_id 0x.., vendor_err 0x..)"
std::string wcErrorText(const ibv_wc& wc, const char* what);

// One CQ for both queues, one SGE per WR.
ibv_qp_init_attr qpInitAttr(ibv_cq* cq, ibv_qp_type type, uint32_t sendDepth, uint32_t recvDepth,
                            bool signalAll);

// Posts one single-SGE receive; returns what ibv_post_recv returned.
int postRecv(ibv_qp* qp, const uint8_t* addr, uint32_t length, uint32_t lkey, uint64_t wrId);

// The peer's address on RoCE: by GID (the GRH is mandatory), the LID is 0 there.
ibv_ah_attr roceAhAttr(const Device& dev, const ibv_gid& dgid, uint16_t dlid);

// RC transitions: RESET->INIT, INIT->RTR (path MTU the smaller of both ports'; one responder
// resource for the peer's RDMA READ), RTR->RTS (one RDMA READ of ours outstanding).
inline constexpr int kRcInitMask =
    IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS;
inline constexpr int kRcRtrMask = IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN |
                                  IBV_QP_RQ_PSN | IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER;
inline constexpr int kRcRtsMask = IBV_QP_STATE | IBV_QP_SQ_PSN | IBV_QP_TIMEOUT |
                                  IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY | IBV_QP_MAX_QP_RD_ATOMIC;
ibv_qp_attr rcInitAttr(uint8_t port, int access);
ibv_qp_attr rcRtrAttr(const ibv_ah_attr& ah, ibv_mtu localMtu, uint8_t peerMtu, uint32_t destQpn,
                      uint32_t rqPsn);
ibv_qp_attr rcRtsAttr(uint32_t sqPsn, uint8_t timeout, uint8_t retryCnt, uint8_t rnrRetry);

}  // namespace vmckpt::ibw
