// The shadow objects: what the application holds instead of libibverbs' own. Each one
// starts with the public ibv_* struct (so the application's field reads work: qp_num,
// lkey, rkey, context, ...) and keeps the real object it stands for, plus what a rebuild
// needs. The shadow context is a whole verbs_context whose ops point into the
// interposer, so the inline verbs (ibv_post_send, ibv_poll_cq, ibv_query_port, the
// extended API's lookups) dispatch to us; every op we do not implement is null, which
// makes libibverbs' inline helpers return EOPNOTSUPP/ENOSYS instead of handing a shadow
// to the provider.
//
// The ids the application sees are virtual: at creation they equal the device's, and
// they stay the application's values for the object's life (ids.hpp translates).
#pragma once

#include <infiniband/verbs.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <vector>

namespace vmckpt::ib {

// Tags that tell a shadow from anything else handed to a wrapper.
enum class Kind : uint32_t {
  context = 0x76634358,  // "XCcv"
  pd,
  mr,
  channel,
  cq,
  srq,
  qp,
  ah,
};

struct ShadowQp;

struct ShadowContext {
  verbs_context vctx;  // the application holds &vctx.context
  Kind kind = Kind::context;
  ibv_context* real = nullptr;
  // The verbs device it is open on (or was, before a release): a rebuild without a
  // device map opens this one again.
  std::string device_name;
  // The (virtual) GIDs of this device the application has seen: queried, or used as
  // the source of an address. A rebuild maps each to the new device's GID of its kind
  // and publishes the pair, so peers can translate the GIDs they hold. Under
  // objects().mutex; at most kMaxKnownGids.
  std::vector<ibv_gid> known_gids;
};
inline constexpr size_t kMaxKnownGids = 64;

struct ShadowPd {
  ibv_pd pub;
  Kind kind = Kind::pd;
  ibv_pd* real = nullptr;
  ShadowContext* ctx = nullptr;
};

struct ShadowMr {
  ibv_mr pub;  // lkey/rkey: virtual
  Kind kind = Kind::mr;
  ibv_mr* real = nullptr;
  ShadowPd* pd = nullptr;
  void* addr = nullptr;
  size_t length = 0;
  uint64_t iova = 0;
  bool has_iova = false;  // registered with an iova (reg_mr_iova/iova2)
  unsigned int access = 0;
};

struct ShadowChannel {
  ibv_comp_channel pub;  // fd: the real channel's number, kept valid across a rebuild
  Kind kind = Kind::channel;
  ibv_comp_channel* real = nullptr;
  ShadowContext* ctx = nullptr;
};

struct ShadowCq {
  ibv_cq pub;
  Kind kind = Kind::cq;
  ibv_cq* real = nullptr;
  ShadowContext* ctx = nullptr;
  ShadowChannel* channel = nullptr;
  int comp_vector = 0;
  int cqe = 0;  // as the application asked
  // Armed with req_notify_cq and no event taken since: a rebuild re-arms the new CQ and
  // hands the application one event (the old channel's pending one died with it).
  std::atomic<bool> armed{false};
  bool owe_event = false;  // under objects().mutex
  // Events the application may still ack that the current device never reported: handed
  // out by ibv_get_cq_event after a rebuild, or acked on the old CQ so it could be
  // destroyed. The application's acks consume these first.
  std::atomic<unsigned> synthetic_events{0};
  // Events the current real CQ reported and the application has not acked yet.
  std::atomic<unsigned> unacked_events{0};
  // The queue pairs whose receive queue completes here (to retire recorded receives).
  std::mutex rq_mutex;
  std::vector<ShadowQp*> rqps;
  // Completions taken off the device while draining, returned by poll_cq before the
  // device's own (see datapath.cpp).
  std::mutex backlog_mutex;
  std::vector<ibv_wc> backlog;
  std::atomic<bool> has_backlog{false};
};

// Receives posted and not yet completed, in posting order, with the application's
// (virtual) lkeys: a rebuild posts them again on the new queue.
struct RecordedRecv {
  uint64_t wr_id = 0;
  std::vector<ibv_sge> sges;
};
struct RecvRecord {
  std::mutex mutex;
  std::deque<RecordedRecv> posted;
};

struct ShadowSrq {
  ibv_srq pub;
  Kind kind = Kind::srq;
  ibv_srq* real = nullptr;
  ShadowPd* pd = nullptr;
  ibv_srq_init_attr init{};
  RecvRecord recvs;
};

// One successful modify_qp as the application made it (virtual ids), with the virtual
// GIDs its source GID indices stood for then: a rebuild replays the history.
struct QpModify {
  ibv_qp_attr attr{};
  int mask = 0;
  ibv_gid sgid{};      // of attr.ah_attr.grh.sgid_index, when mask has IBV_QP_AV
  ibv_gid alt_sgid{};  // of attr.alt_ah_attr, when mask has IBV_QP_ALT_PATH
};
inline constexpr size_t kMaxQpModifies = 16;

struct ShadowQp {
  ibv_qp pub;  // qp_num: virtual
  Kind kind = Kind::qp;
  ibv_qp* real = nullptr;
  ShadowPd* pd = nullptr;
  ShadowCq* send_cq = nullptr;
  ShadowCq* recv_cq = nullptr;
  ShadowSrq* srq = nullptr;
  ibv_qp_init_attr init{};  // as created (cap as the device granted it)
  // Under objects().mutex.
  std::vector<QpModify> history;
  bool history_overflow = false;  // more than kMaxQpModifies: cannot be rebuilt
  size_t replayed = 0;            // history entries a rebuild has replayed so far
  bool has_dest = false;          // connected (RC/UC): the peer's virtual GID
  ibv_gid dest_gid{};
  RecvRecord recvs;  // unused when the QP receives through an SRQ
};

struct ShadowAh {
  ibv_ah pub;
  Kind kind = Kind::ah;
  ibv_ah* real = nullptr;
  ShadowPd* pd = nullptr;
  ibv_ah_attr attr{};  // as the application gave it (virtual dlid/dgid)
  ibv_gid sgid{};      // the virtual GID its sgid_index stood for
};

// The peer a modify_qp names: the GID of its address vector when it carries one, else
// the one the QP was connected to before (virtual ids either way).
inline ibv_gid peerOf(const ShadowQp& qp, const ibv_qp_attr& attr, int mask) {
  return (mask & IBV_QP_AV) && attr.ah_attr.is_global ? attr.ah_attr.grh.dgid : qp.dest_gid;
}

// Shadow <-> public pointer conversions. from*() returns null for a pointer that is not
// one of our shadows (the caller fails with EINVAL).
template <typename Shadow, typename Pub>
Shadow* shadowOf(Pub* pub, Kind kind) {
  if (pub == nullptr) return nullptr;
  auto* s = reinterpret_cast<Shadow*>(pub);  // pub is the first member
  return s->kind == kind ? s : nullptr;
}

inline ShadowContext* fromContext(ibv_context* c) {
  if (c == nullptr) return nullptr;
  auto* s = reinterpret_cast<ShadowContext*>(reinterpret_cast<char*>(c) - offsetof(ShadowContext, vctx.context));
  return s->kind == Kind::context ? s : nullptr;
}
inline ShadowPd* fromPd(ibv_pd* p) { return shadowOf<ShadowPd>(p, Kind::pd); }
inline ShadowMr* fromMr(ibv_mr* p) { return shadowOf<ShadowMr>(p, Kind::mr); }
inline ShadowChannel* fromChannel(ibv_comp_channel* p) { return shadowOf<ShadowChannel>(p, Kind::channel); }
inline ShadowCq* fromCq(ibv_cq* p) { return shadowOf<ShadowCq>(p, Kind::cq); }
inline ShadowSrq* fromSrq(ibv_srq* p) { return shadowOf<ShadowSrq>(p, Kind::srq); }
inline ShadowQp* fromQp(ibv_qp* p) { return shadowOf<ShadowQp>(p, Kind::qp); }
inline ShadowAh* fromAh(ibv_ah* p) { return shadowOf<ShadowAh>(p, Kind::ah); }

// Fills a new shadow context around `real`: a copy of the real verbs_context's public
// fields with every op replaced (datapath.cpp).
void initShadowContext(ShadowContext& s, ibv_context* real);

}  // namespace vmckpt::ib
