// Shared helpers of the verbs programs (see verbs_util.hpp).

#include "verbs_util.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <mutex>
#include <thread>

namespace vmckpt::ibw {

using namespace std::chrono_literals;

// ---------------------------------------------------------------------------------------
// Output and errors

std::string errnoText(int e) {
  char buf[256];
  return strerror_r(e, buf, sizeof buf);  // GNU variant: returns the message
}

std::string vformat(const char* fmt, va_list ap) {
  va_list copy;
  va_copy(copy, ap);
  const int n = std::vsnprintf(nullptr, 0, fmt, copy);
  va_end(copy);
  std::string s(n > 0 ? size_t(n) : 0, '\0');
  if (n > 0) std::vsnprintf(s.data(), s.size() + 1, fmt, ap);
  return s;
}

std::string format(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  std::string s = vformat(fmt, ap);
  va_end(ap);
  return s;
}

void writeLine(int fd, std::string line) {
  line += '\n';
  static std::mutex mu;
  std::lock_guard lock(mu);
  for (size_t off = 0; off < line.size();) {
    const ssize_t n = ::write(fd, line.data() + off, line.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    off += size_t(n);
  }
}

std::unexpected<Failure> failure(std::string reason) {
  return std::unexpected(Failure{std::move(reason), false});
}
std::unexpected<Failure> stopped() { return std::unexpected(Failure{"stopped", true}); }

// ---------------------------------------------------------------------------------------
// Resources

void UniqueFd::reset() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

Result<Buffer> Buffer::create(size_t size) {
  const size_t page = size_t(::sysconf(_SC_PAGESIZE));
  const size_t mapped = (size + page - 1) / page * page;
  void* p = ::mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED)
    return failure(format("mmap %zu bytes: %s", mapped, errnoText(errno).c_str()));
  Buffer b;
  b.data_ = static_cast<uint8_t*>(p);
  b.size_ = size;
  b.mapped_ = mapped;
  return b;
}

void Buffer::release() {
  if (data_) ::munmap(data_, mapped_);
  data_ = nullptr;
}

Result<> createRegistered(ibv_pd* pd, std::span<const BufferSpec> specs) {
  for (const BufferSpec& s : specs) {
    auto b = Buffer::create(s.bytes);
    if (!b) return failure(format("%s: %s", s.what, b.error().reason.c_str()));
    *s.buf = std::move(*b);
    s.mr->reset(ibv_reg_mr(pd, s.buf->data(), s.buf->size(), s.access));
    if (!*s.mr)
      return failure(format("ibv_reg_mr %s (%zu bytes): %s", s.what, s.buf->size(),
                            errnoText(errno).c_str()));
  }
  return {};
}

// ---------------------------------------------------------------------------------------
// Command line

std::optional<uint64_t> parseUint(std::string_view s, uint64_t min, uint64_t max) {
  uint64_t v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || v < min || v > max) return std::nullopt;
  return v;
}

bool isHostPort(std::string_view s) {
  const auto colon = s.rfind(':');
  return colon != std::string_view::npos && colon != 0 &&
         parseUint(s.substr(colon + 1), 1, 65535).has_value();
}

bool ArgReader::next() {
  if (help_ || !error_.empty() || ++i_ >= argc_) return false;
  const std::string_view arg = argv_[i_];
  name_ = arg;
  inlineValue_.reset();
  help_ = arg == "--help" || arg == "-h";
  if (help_) return false;
  if (!arg.starts_with("--")) {
    error_ = format("unexpected argument '%s'", argv_[i_]);
    return false;
  }
  if (const auto eq = arg.find('='); eq != std::string_view::npos) {
    name_ = arg.substr(0, eq);
    inlineValue_ = arg.substr(eq + 1);
  }
  return true;
}

std::optional<std::string_view> ArgReader::value() {
  if (inlineValue_) return inlineValue_;
  if (i_ + 1 >= argc_) return std::nullopt;
  return std::string_view(argv_[++i_]);
}

std::expected<std::string_view, std::string> ArgReader::requireValue() {
  if (const auto v = value()) return *v;
  return std::unexpected(format("%.*s needs a value", int(name_.size()), name_.data()));
}

std::expected<uint64_t, std::string> ArgReader::number(uint64_t min, uint64_t max) {
  const auto v = requireValue();
  if (!v) return std::unexpected(v.error());
  const auto n = parseUint(*v, min, max);
  if (!n)
    return std::unexpected(format("%.*s: '%.*s' is not a number in %llu..%llu", int(name_.size()),
                                  name_.data(), int(v->size()), v->data(),
                                  static_cast<unsigned long long>(min),
                                  static_cast<unsigned long long>(max)));
  return *n;
}

void installSignalHandlers(void (*handler)(int)) {
  struct sigaction sa {};
  sa.sa_handler = handler;
  sigemptyset(&sa.sa_mask);
  // SA_RESTART keeps library calls (libibverbs commands) from failing with EINTR; our own
  // waits are poll() slices, which return early anyway and recheck the flag.
  sa.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);
}

// ---------------------------------------------------------------------------------------
// Wire encoding

void WireWriter::bytes(const uint8_t* b, size_t n) {
  std::memcpy(p_ + off_, b, n);
  off_ += n;
}

void WireReader::bytes(uint8_t* b, size_t n) {
  std::memcpy(b, p_ + off_, n);
  off_ += n;
}

// ---------------------------------------------------------------------------------------
// TCP

Result<> sendAll(int fd, const void* data, size_t len) {
  const auto* p = static_cast<const uint8_t*>(data);
  while (len > 0) {
    const ssize_t n = ::send(fd, p, len, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return failure(format("send: %s", errnoText(errno).c_str()));
    p += n;
    len -= size_t(n);
  }
  return {};
}

Result<> recvAll(int fd, void* data, size_t len, Clock::time_point deadline, const char* what,
                 const std::atomic<bool>& stop) {
  auto* p = static_cast<uint8_t*>(data);
  while (len > 0) {
    if (stop.load()) return stopped();
    if (Clock::now() >= deadline)
      return failure(format("timed out waiting for the peer's %s", what));
    pollfd pfd{fd, POLLIN, 0};
    const int r = ::poll(&pfd, 1, int(kSlice / 1ms));
    if (r < 0 && errno != EINTR) return failure(format("poll: %s", errnoText(errno).c_str()));
    if (r <= 0) continue;
    const ssize_t n = ::recv(fd, p, len, MSG_DONTWAIT);
    if (n == 0) return failure(format("peer closed the TCP connection before its %s", what));
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return failure(format("recv %s: %s", what, errnoText(errno).c_str()));
    }
    p += n;
    len -= size_t(n);
  }
  return {};
}

void setNoDelay(int fd) {
  const int one = 1;
  (void)::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

Result<UniqueFd> listenOn(uint16_t port, int backlog) {
  UniqueFd fd(::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0));
  const int one = 1, zero = 0;
  if (fd.get() >= 0) {
    (void)::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
    (void)::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in6 a{};
    a.sin6_family = AF_INET6;
    a.sin6_addr = in6addr_any;
    a.sin6_port = htons(port);
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      if (errno != EADDRNOTAVAIL && errno != EAFNOSUPPORT)
        return failure(format("bind port %u: %s", port, errnoText(errno).c_str()));
      fd.reset();
    }
  }
  if (fd.get() < 0) {
    fd = UniqueFd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (fd.get() < 0) return failure(format("socket: %s", errnoText(errno).c_str()));
    (void)::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_ANY);
    a.sin_port = htons(port);
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0)
      return failure(format("bind port %u: %s", port, errnoText(errno).c_str()));
  }
  if (::listen(fd.get(), backlog) != 0)
    return failure(format("listen: %s", errnoText(errno).c_str()));
  return fd;
}

Result<UniqueFd> acceptOne(int lfd, Clock::time_point deadline, const std::string& timeoutReason,
                           const std::atomic<bool>& stop) {
  for (;;) {
    if (stop.load()) return stopped();
    if (Clock::now() >= deadline) return failure(timeoutReason);
    pollfd pfd{lfd, POLLIN, 0};
    const int r = ::poll(&pfd, 1, int(kSlice / 1ms));
    if (r < 0 && errno != EINTR) return failure(format("poll: %s", errnoText(errno).c_str()));
    if (r <= 0) continue;
    UniqueFd fd(::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC));
    if (fd.get() < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == ECONNABORTED) continue;
      return failure(format("accept: %s", errnoText(errno).c_str()));
    }
    setNoDelay(fd.get());
    return fd;
  }
}

Result<UniqueFd> connectTo(const std::string& hostPort, Clock::time_point deadline,
                           const std::atomic<bool>& stop) {
  const auto colon = hostPort.rfind(':');
  std::string host = hostPort.substr(0, colon);
  const std::string port = hostPort.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  std::string lastError = "no attempt";
  while (!stop.load() && Clock::now() < deadline) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    if (const int g = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &res); g != 0) {
      lastError = format("getaddrinfo %s: %s", host.c_str(), ::gai_strerror(g));
      if (g != EAI_AGAIN) return failure(lastError);
    }
    for (addrinfo* ai = res; ai; ai = ai->ai_next) {
      UniqueFd fd(
          ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol));
      if (fd.get() < 0) {
        lastError = format("socket: %s", errnoText(errno).c_str());
        continue;
      }
      int err = 0;
      if (::connect(fd.get(), ai->ai_addr, ai->ai_addrlen) != 0) {
        err = errno;
        if (err == EINPROGRESS) {
          pollfd pfd{fd.get(), POLLOUT, 0};
          const int r = ::poll(&pfd, 1, 2000);
          socklen_t len = sizeof err;
          if (r <= 0)
            err = r == 0 ? ETIMEDOUT : errno;
          else if (::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len) != 0)
            err = errno;
        }
      }
      if (err == 0) {
        const int flags = ::fcntl(fd.get(), F_GETFL);
        (void)::fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK);
        setNoDelay(fd.get());
        ::freeaddrinfo(res);
        return fd;
      }
      lastError = format("connect %s: %s", hostPort.c_str(), errnoText(err).c_str());
    }
    if (res) ::freeaddrinfo(res);
    std::this_thread::sleep_for(250ms);
  }
  if (stop.load()) return stopped();
  return failure(format("%s (gave up after %lld s)", lastError.c_str(),
                        static_cast<long long>(kSetupTimeout / 1s)));
}

// ---------------------------------------------------------------------------------------
// Device

bool isIpv4Mapped(const ibv_gid& g) {
  static constexpr uint8_t kPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  return std::memcmp(g.raw, kPrefix, sizeof kPrefix) == 0;
}

std::string gidText(const ibv_gid& g) {
  char buf[INET6_ADDRSTRLEN];
  if (!::inet_ntop(AF_INET6, g.raw, buf, sizeof buf)) return "?";
  return buf;  // an IPv4-mapped GID prints as ::ffff:a.b.c.d
}

Result<> openContext(Device& dev, const std::string& name) {
  int n = 0;
  ibv_device** list = ibv_get_device_list(&n);
  if (!list) return failure(format("ibv_get_device_list: %s", errnoText(errno).c_str()));
  ibv_device* chosen = nullptr;
  for (int i = 0; i < n && !chosen; ++i)
    if (name.empty() || name == ibv_get_device_name(list[i])) chosen = list[i];
  if (!chosen) {
    ibv_free_device_list(list);
    return failure(name.empty() ? std::string("no RDMA device found (ibv_get_device_list)")
                                : format("RDMA device %s not found", name.c_str()));
  }
  dev.name = ibv_get_device_name(chosen);
  dev.ctx.reset(ibv_open_device(chosen));
  const int openErr = errno;
  ibv_free_device_list(list);
  if (!dev.ctx)
    return failure(format("ibv_open_device %s: %s", dev.name.c_str(), errnoText(openErr).c_str()));
  return {};
}

Result<ibv_port_attr> queryPort(Device& dev) {
  ibv_port_attr pa{};
  if (const int rc = ibv_query_port(dev.ctx.get(), kPort, &pa); rc != 0)
    return failure(
        format("ibv_query_port %s %u: %s", dev.name.c_str(), kPort, errnoText(rc).c_str()));
  if (pa.state != IBV_PORT_ACTIVE)
    return failure(format("%s port %u is not active (%s)", dev.name.c_str(), kPort,
                          ibv_port_state_str(pa.state)));
  dev.lid = pa.lid;
  dev.mtu = pa.active_mtu;
  dev.maxMsgSize = pa.max_msg_sz;
  return pa;
}

Result<> selectGid(Device& dev, const ibv_port_attr& pa, std::optional<uint32_t> index) {
  if (index) {
    if (int(*index) >= pa.gid_tbl_len)
      return failure(format("--gid-index %u: port %u has %d GIDs", *index, kPort, pa.gid_tbl_len));
    if (ibv_query_gid(dev.ctx.get(), kPort, int(*index), &dev.gid) != 0)
      return failure(format("ibv_query_gid %u: %s", *index, errnoText(errno).c_str()));
    dev.gidIndex = int(*index);
    return {};
  }
  // RoCE v2 over IPv4 needs the IPv4-mapped entry; on rxe that is normally index 1, but the
  // table order is the kernel's business, so look for it.
  for (int i = 0; i < pa.gid_tbl_len; ++i) {
    ibv_gid g{};
    if (ibv_query_gid(dev.ctx.get(), kPort, i, &g) == 0 && isIpv4Mapped(g)) {
      dev.gid = g;
      dev.gidIndex = i;
      return {};
    }
  }
  return failure(
      format("%s port %u has no IPv4-mapped GID (is an IPv4 address configured?); use --gid-index",
             dev.name.c_str(), kPort));
}

Result<> allocPd(Device& dev) {
  dev.pd.reset(ibv_alloc_pd(dev.ctx.get()));
  if (!dev.pd) return failure(format("ibv_alloc_pd: %s", errnoText(errno).c_str()));
  return {};
}

// ---------------------------------------------------------------------------------------
// QPs and completions

std::string wcErrorText(const ibv_wc& wc, const char* what) {
  return format("%s completion: %s (status %d, wr_id 0x%llx, vendor_err 0x%x)", what,
                ibv_wc_status_str(wc.status), int(wc.status),
                static_cast<unsigned long long>(wc.wr_id), wc.vendor_err);
}

ibv_qp_init_attr qpInitAttr(ibv_cq* cq, ibv_qp_type type, uint32_t sendDepth, uint32_t recvDepth,
                            bool signalAll) {
  ibv_qp_init_attr init{};
  init.send_cq = cq;
  init.recv_cq = cq;
  init.qp_type = type;
  init.sq_sig_all = signalAll ? 1 : 0;
  init.cap.max_send_wr = sendDepth;
  init.cap.max_recv_wr = recvDepth;
  init.cap.max_send_sge = 1;
  init.cap.max_recv_sge = 1;
  return init;
}

int postRecv(ibv_qp* qp, const uint8_t* addr, uint32_t length, uint32_t lkey, uint64_t wrId) {
  ibv_sge sge{};
  sge.addr = reinterpret_cast<uintptr_t>(addr);
  sge.length = length;
  sge.lkey = lkey;
  ibv_recv_wr wr{};
  wr.wr_id = wrId;
  wr.sg_list = &sge;
  wr.num_sge = 1;
  ibv_recv_wr* bad = nullptr;
  return ibv_post_recv(qp, &wr, &bad);
}

ibv_ah_attr roceAhAttr(const Device& dev, const ibv_gid& dgid, uint16_t dlid) {
  ibv_ah_attr ah{};
  ah.is_global = 1;
  ah.grh.dgid = dgid;
  ah.grh.sgid_index = uint8_t(dev.gidIndex);
  ah.grh.hop_limit = kHopLimit;
  ah.grh.flow_label = 0;
  ah.grh.traffic_class = 0;
  ah.dlid = dlid;
  ah.sl = 0;
  ah.src_path_bits = 0;
  ah.port_num = dev.port;
  return ah;
}

ibv_qp_attr rcInitAttr(uint8_t port, int access) {
  ibv_qp_attr a{};
  a.qp_state = IBV_QPS_INIT;
  a.pkey_index = 0;
  a.port_num = port;
  a.qp_access_flags = unsigned(access);
  return a;
}

ibv_qp_attr rcRtrAttr(const ibv_ah_attr& ah, ibv_mtu localMtu, uint8_t peerMtu, uint32_t destQpn,
                      uint32_t rqPsn) {
  ibv_qp_attr a{};
  a.qp_state = IBV_QPS_RTR;
  a.path_mtu = std::min(localMtu, static_cast<ibv_mtu>(peerMtu));
  a.dest_qp_num = destQpn;
  a.rq_psn = rqPsn;
  a.max_dest_rd_atomic = 1;
  a.min_rnr_timer = 12;  // 0.64 ms
  a.ah_attr = ah;
  return a;
}

ibv_qp_attr rcRtsAttr(uint32_t sqPsn, uint8_t timeout, uint8_t retryCnt, uint8_t rnrRetry) {
  ibv_qp_attr a{};
  a.qp_state = IBV_QPS_RTS;
  a.sq_psn = sqPsn;
  a.timeout = timeout;
  a.retry_cnt = retryCnt;
  a.rnr_retry = rnrRetry;  // 7 = retry forever on RNR
  a.max_rd_atomic = 1;
  return a;
}

}  // namespace vmckpt::ibw
