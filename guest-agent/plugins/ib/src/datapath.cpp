// The data path: the ops of the shadow context, which libibverbs' inline functions
// (ibv_post_send, ibv_post_recv, ibv_post_srq_recv, ibv_poll_cq, ibv_req_notify_cq,
// ibv_query_port, ibv_query_device_ex) call with our shadows. Each unwraps, translates
// the virtual ids a work request or completion carries (ids.hpp), and calls the real
// object's own op. Posts wait at the gate while a checkpoint drains (gate.hpp).
//
// Work requests are copied only when something in them must change: a UD send (its
// address handle is a shadow), an RDMA op whose rkey is translated, or an sge whose
// lkey is. Until a rebuild, RC sends and receives go through untouched.
#include <infiniband/verbs.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "drain.hpp"
#include "gate.hpp"
#include "ids.hpp"
#include "objects.hpp"
#include "real.hpp"
#include "recvs.hpp"
#include "shadow.hpp"

namespace vmckpt::ib {
namespace {

// Copies of a work request chain: the requests and their scatter lists.
template <typename Wr>
struct WrCopy {
  std::vector<Wr> wrs;
  std::vector<ibv_sge> sges;
};

// UD requests always carry a shadow address handle; RC/UC ones need a copy only after a
// rebuild changed keys. (The wr union is read by opcode and QP type only: for RC,
// wr.ud.ah would alias wr.rdma.remote_addr.)
bool sendNeedsCopy(const ibv_send_wr* wr, ibv_qp_type type, const Translation& t) {
  if (type == IBV_QPT_UD) return true;
  const bool keys = !t.lkey.empty();
  const bool rkeys = !t.peer_rkey.empty();
  if (!keys && !rkeys) return false;
  for (; wr != nullptr; wr = wr->next) {
    if (keys && wr->num_sge > 0) return true;
    switch (wr->opcode) {
      case IBV_WR_RDMA_WRITE:
      case IBV_WR_RDMA_WRITE_WITH_IMM:
      case IBV_WR_RDMA_READ:
      case IBV_WR_ATOMIC_CMP_AND_SWP:
      case IBV_WR_ATOMIC_FETCH_AND_ADD:
        if (rkeys) return true;
        break;
      default:
        break;
    }
  }
  return false;
}

// Copies a work request chain (send or receive) into `out`, relinked, with every sge's
// lkey translated.
template <typename Wr>
void copyChain(const Wr* wr, const Translation& t, WrCopy<Wr>& out) {
  size_t n = 0, nsge = 0;
  for (const Wr* w = wr; w != nullptr; w = w->next) {
    ++n;
    if (w->num_sge > 0) nsge += static_cast<size_t>(w->num_sge);
  }
  out.wrs.resize(n);
  out.sges.resize(nsge);
  size_t i = 0, s = 0;
  for (const Wr* w = wr; w != nullptr; w = w->next, ++i) {
    Wr& c = out.wrs[i];
    c = *w;
    c.next = i + 1 < n ? &out.wrs[i + 1] : nullptr;
    if (w->num_sge > 0) {
      c.sg_list = &out.sges[s];
      for (int k = 0; k < w->num_sge; ++k, ++s) {
        out.sges[s] = w->sg_list[k];
        out.sges[s].lkey = t.lkey.toReal(w->sg_list[k].lkey);
      }
    }
  }
}

// Translates a send chain into `out`; a UD request whose AH is not ours fails EINVAL.
int copySend(const ibv_send_wr* wr, const ShadowQp& qp, const Translation& t, WrCopy<ibv_send_wr>& out) {
  copyChain(wr, t, out);
  for (ibv_send_wr& c : out.wrs) {
    switch (c.opcode) {
      case IBV_WR_RDMA_WRITE:
      case IBV_WR_RDMA_WRITE_WITH_IMM:
      case IBV_WR_RDMA_READ:
        c.wr.rdma.rkey = t.peerRkeyToReal(qp.dest_gid, c.wr.rdma.rkey);
        break;
      case IBV_WR_ATOMIC_CMP_AND_SWP:
      case IBV_WR_ATOMIC_FETCH_AND_ADD:
        c.wr.atomic.rkey = t.peerRkeyToReal(qp.dest_gid, c.wr.atomic.rkey);
        break;
      default:
        break;
    }
    if (qp.pub.qp_type == IBV_QPT_UD) {
      ShadowAh* ah = fromAh(c.wr.ud.ah);
      if (ah == nullptr) return EINVAL;
      if (ah->real == nullptr) return EIO;
      c.wr.ud.ah = ah->real;
      c.wr.ud.remote_qpn = t.peerQpnToReal(ah->attr.is_global ? ah->attr.grh.dgid : ibv_gid{}, c.wr.ud.remote_qpn);
    }
  }
  return 0;
}

template <typename Wr>
Wr* originalAt(Wr* chain, const Wr* copies, const Wr* bad) {
  if (bad == nullptr) return nullptr;
  for (const Wr* c = copies; chain != nullptr; chain = chain->next, ++c)
    if (c == bad) return chain;
  return nullptr;
}

int postSend(ibv_qp* qp, ibv_send_wr* wr, ibv_send_wr** bad) {
  ShadowQp* s = fromQp(qp);
  if (s == nullptr) return EINVAL;
  GatePass pass(gate());
  ibv_qp* r = s->real;
  if (r == nullptr) return EIO;  // a failed rebuild left it without a device
  const Translation& t = translation();
  if (!sendNeedsCopy(wr, s->pub.qp_type, t)) return r->context->ops.post_send(r, wr, bad);
  WrCopy<ibv_send_wr> copy;
  if (int err = copySend(wr, *s, t, copy); err != 0) {
    if (bad != nullptr) *bad = wr;
    return err;
  }
  ibv_send_wr* badCopy = nullptr;
  int rc = r->context->ops.post_send(r, copy.wrs.data(), &badCopy);
  if (rc != 0 && bad != nullptr) *bad = originalAt(wr, copy.wrs.data(), badCopy);
  return rc;
}

// Receive chains carry only lkeys. What the device accepted is recorded (recvs.hpp).
template <typename Post>
int postRecvChain(ibv_recv_wr* wr, ibv_recv_wr** bad, RecvRecord& record, Post&& post) {
  const Translation& t = translation();
  if (t.lkey.empty()) {
    ibv_recv_wr* b = nullptr;
    int rc = post(wr, &b);
    recordReceives(record, wr, rc == 0 ? nullptr : b != nullptr ? b : wr);
    if (bad != nullptr) *bad = b;
    return rc;
  }
  WrCopy<ibv_recv_wr> copy;
  copyChain(wr, t, copy);
  ibv_recv_wr* badCopy = nullptr;
  int rc = post(copy.wrs.data(), &badCopy);
  ibv_recv_wr* b = rc == 0 ? nullptr : originalAt(wr, copy.wrs.data(), badCopy);
  recordReceives(record, wr, rc == 0 ? nullptr : b != nullptr ? b : wr);
  if (rc != 0 && bad != nullptr) *bad = b;
  return rc;
}

int postRecv(ibv_qp* qp, ibv_recv_wr* wr, ibv_recv_wr** bad) {
  ShadowQp* s = fromQp(qp);
  if (s == nullptr) return EINVAL;
  GatePass pass(gate());
  ibv_qp* r = s->real;
  if (r == nullptr) return EIO;
  return postRecvChain(wr, bad, s->recvs,
                       [r](ibv_recv_wr* w, ibv_recv_wr** b) { return r->context->ops.post_recv(r, w, b); });
}

int postSrqRecv(ibv_srq* srq, ibv_recv_wr* wr, ibv_recv_wr** bad) {
  ShadowSrq* s = fromSrq(srq);
  if (s == nullptr) return EINVAL;
  GatePass pass(gate());
  ibv_srq* r = s->real;
  if (r == nullptr) return EIO;
  return postRecvChain(wr, bad, s->recvs,
                       [r](ibv_recv_wr* w, ibv_recv_wr** b) { return r->context->ops.post_srq_recv(r, w, b); });
}

// Moves up to n - got completions from the backlog to wc[got...]; returns the new got.
// The caller holds the backlog mutex.
int takeBacklog(ShadowCq& s, ibv_wc* wc, int n, int got) {
  while (got < n && !s.backlog.empty()) {
    wc[got++] = s.backlog.front();
    s.backlog.erase(s.backlog.begin());
  }
  if (s.backlog.empty()) s.has_backlog.store(false, std::memory_order_release);
  return got;
}

int pollCq(ibv_cq* cq, int n, ibv_wc* wc) {
  ShadowCq* s = fromCq(cq);
  if (s == nullptr || n < 0) return -EINVAL;
  GatePass rebuild(rebuildGate());
  int got = 0;
  if (s->has_backlog.load(std::memory_order_acquire)) {
    std::lock_guard lock(s->backlog_mutex);
    got = takeBacklog(*s, wc, n, got);
    if (got == n) return got;
  }
  ibv_cq* r = s->real;
  // Released before capture: only the backlog until the rebuild (an error otherwise).
  if (r == nullptr) return got > 0 || objects().released.load() ? got : -EIO;
  int more = 0;
  if (draining()) {
    // The drain polls this CQ too: serialize with it so no completion overtakes one
    // it has put into the backlog.
    std::lock_guard lock(s->backlog_mutex);
    got = takeBacklog(*s, wc, n, got);
    if (got < n) more = r->context->ops.poll_cq(r, n - got, wc + got);
  } else {
    more = r->context->ops.poll_cq(r, n - got, wc + got);
  }
  if (more < 0) return got > 0 ? got : more;
  retireReceives(*s, wc + got, more);
  // Drain markers (drain.hpp) never reach the application, even late ones.
  int kept = got;
  for (int i = got; i < got + more; ++i)
    if (!consumeMarker(wc[i])) wc[kept++] = wc[i];
  more = kept - got;
  const Translation& t = translation();
  if (!t.qpn.empty() || !t.lid.empty())
    for (int i = got; i < got + more; ++i) t.completionToVirtual(wc[i]);
  return got + more;
}

int reqNotifyCq(ibv_cq* cq, int solicitedOnly) {
  ShadowCq* s = fromCq(cq);
  if (s == nullptr) return EINVAL;
  GatePass rebuild(rebuildGate());
  ibv_cq* r = s->real;
  if (r == nullptr) {
    if (!objects().released.load()) return EIO;
    s->armed.store(true, std::memory_order_relaxed);  // the rebuild arms the new CQ
    return 0;
  }
  int rc = r->context->ops.req_notify_cq(r, solicitedOnly);
  if (rc == 0) s->armed.store(true, std::memory_order_relaxed);
  return rc;
}

int queryPort(ibv_context* ctx, uint8_t port, ibv_port_attr* attr, size_t len) {
  ShadowContext* s = fromContext(ctx);
  if (s == nullptr || attr == nullptr) return EINVAL;
  GatePass rebuild(rebuildGate());
  ibv_port_attr full{};
  verbs_context* rv = verbs_get_ctx_op(s->real, query_port);
  int rc = 0;
  if (rv != nullptr) {
    rc = rv->query_port(s->real, port, &full, sizeof full);
  } else {
    rc = real().query_port(s->real, port, reinterpret_cast<_compat_ibv_port_attr*>(&full));
  }
  if (rc != 0) return rc;
  full.lid = translation().lid.toVirtual(full.lid);
  std::memcpy(attr, &full, len < sizeof full ? len : sizeof full);
  return 0;
}

int queryDeviceEx(ibv_context* ctx, const ibv_query_device_ex_input* input, ibv_device_attr_ex* attr, size_t size) {
  ShadowContext* s = fromContext(ctx);
  if (s == nullptr) return EINVAL;
  verbs_context* rv = verbs_get_ctx_op(s->real, query_device_ex);
  if (rv == nullptr) return EOPNOTSUPP;
  return rv->query_device_ex(s->real, input, attr, size);
}

}  // namespace

void initShadowContext(ShadowContext& s, ibv_context* real) {
  std::memset(static_cast<void*>(&s.vctx), 0, sizeof s.vctx);
  s.real = real;
  s.device_name = ibv_get_device_name(real->device);
  ibv_context& c = s.vctx.context;
  c.device = real->device;
  c.cmd_fd = real->cmd_fd;
  c.async_fd = real->async_fd;
  c.num_comp_vectors = real->num_comp_vectors;
  pthread_mutex_init(&c.mutex, nullptr);
  c.abi_compat = __VERBS_ABI_IS_EXTENDED;
  // The data path.
  c.ops.post_send = postSend;
  c.ops.post_recv = postRecv;
  c.ops.post_srq_recv = postSrqRecv;
  c.ops.poll_cq = pollCq;
  c.ops.req_notify_cq = reqNotifyCq;
  // Extended ops: only queries. Everything else stays null, so the extended API
  // (ibv_create_qp_ex, ibv_create_cq_ex, ibv_open_xrcd, flows, ...) is refused with
  // EOPNOTSUPP by libibverbs' inline helpers before reaching a provider.
  s.vctx.query_port = queryPort;
  s.vctx.query_device_ex = queryDeviceEx;
  s.vctx.sz = sizeof(verbs_context);
}

}  // namespace vmckpt::ib
