// The exported libibverbs functions the application calls with our shadows (the control
// path). Each unwraps its arguments, calls the real function (real.hpp), wraps what comes
// back, and records what a rebuild will need. Exported without symbol versions on
// purpose: an unversioned definition in a preloaded object satisfies the application's
// versioned references (ibv_create_qp@IBVERBS_1.1), so one definition catches them all.
//
// Features that cannot be checkpointed are refused here, with one line on stderr and the
// error the verbs API uses (EOPNOTSUPP): multicast, re-registration, on-demand paging,
// imported objects, the extended QP API. XRC, memory windows, flows and the other
// extended ops are refused by the shadow context's null ops (datapath.cpp).
#include <infiniband/verbs.h>

#include <fcntl.h>
#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <new>
#include <thread>

#include "gate.hpp"
#include "ids.hpp"
#include "objects.hpp"
#include "real.hpp"
#include "shadow.hpp"

#undef ibv_reg_mr
#undef ibv_reg_mr_iova
#undef ibv_query_port

#define VMCKPT_IB_EXPORT extern "C" __attribute__((visibility("default")))

using namespace vmckpt::ib;

namespace {

template <typename T>
T* failNull(int err) {
  errno = err;
  return nullptr;
}

int refuse(const char* what) {
  logLine("%s is not supported: it cannot be checkpointed", what);
  return EOPNOTSUPP;
}

template <typename T>
void remember(std::vector<T*>& list, T* item) {
  std::lock_guard lock(objects().mutex);
  list.push_back(item);
}

template <typename T>
void drop(std::vector<T*>& list, T* item) {
  std::lock_guard lock(objects().mutex);
  forget(list, item);
}

// Notes a GID of `ctx` the application has seen (virtual), for a rebuild to map.
void noteGid(ShadowContext& ctx, const ibv_gid& g) {
  static const ibv_gid zero{};
  if (std::memcmp(g.raw, zero.raw, sizeof g.raw) == 0) return;
  std::lock_guard lock(objects().mutex);
  auto& known = ctx.known_gids;
  if (known.size() >= kMaxKnownGids) return;
  for (const ibv_gid& k : known)
    if (std::memcmp(k.raw, g.raw, sizeof g.raw) == 0) return;
  known.push_back(g);
}

// The virtual GID an address vector's sgid_index stands for now (zero when not global).
ibv_gid sourceGid(ShadowContext& ctx, const ibv_ah_attr& av) {
  ibv_gid g{};
  if (!av.is_global || real().query_gid(ctx.real, av.port_num, av.grh.sgid_index, &g) != 0) return ibv_gid{};
  g = translation().gid.toVirtual(g);
  noteGid(ctx, g);
  return g;
}

ibv_mr* wrapMr(ShadowPd* pd, ibv_mr* r, void* addr, size_t length, bool hasIova, uint64_t iova,
               unsigned int access) {
  if (r == nullptr) return nullptr;
  auto* s = new (std::nothrow) ShadowMr;
  if (s == nullptr) {
    real().dereg_mr(r);
    return failNull<ibv_mr>(ENOMEM);
  }
  s->pub = *r;
  s->pub.context = &pd->ctx->vctx.context;
  s->pub.pd = &pd->pub;
  s->real = r;
  s->pd = pd;
  s->addr = addr;
  s->length = length;
  s->has_iova = hasIova;
  s->iova = iova;
  s->access = access;
  remember(objects().mrs, s);
  return &s->pub;
}

}  // namespace

// --- device ----------------------------------------------------------------------------

VMCKPT_IB_EXPORT ibv_context* ibv_open_device(ibv_device* device) {
  ibv_context* r = real().open_device(device);
  if (r == nullptr) return nullptr;
  auto* s = new (std::nothrow) ShadowContext;
  if (s == nullptr) {
    real().close_device(r);
    return failNull<ibv_context>(ENOMEM);
  }
  initShadowContext(*s, r);
  remember(objects().contexts, s);
  registerWithAgent();
  return &s->vctx.context;
}

VMCKPT_IB_EXPORT int ibv_close_device(ibv_context* ctx) {
  ShadowContext* s = fromContext(ctx);
  if (s == nullptr) return EINVAL;
  // Null: a rebuild released it and failed before re-creating it.
  int rc = s->real != nullptr ? real().close_device(s->real) : 0;
  if (rc != 0) return rc;
  drop(objects().contexts, s);
  pthread_mutex_destroy(&s->vctx.context.mutex);
  delete s;
  return 0;
}

namespace {

enum class EventElement { none, cq, qp, srq };

// Which member of ibv_async_event::element an event type uses (the rest are ports or
// the device: nothing to translate).
EventElement elementOf(ibv_event_type type) {
  switch (type) {
    case IBV_EVENT_CQ_ERR:
      return EventElement::cq;
    case IBV_EVENT_SRQ_ERR:
    case IBV_EVENT_SRQ_LIMIT_REACHED:
      return EventElement::srq;
    case IBV_EVENT_QP_FATAL:
    case IBV_EVENT_QP_REQ_ERR:
    case IBV_EVENT_QP_ACCESS_ERR:
    case IBV_EVENT_COMM_EST:
    case IBV_EVENT_SQ_DRAINED:
    case IBV_EVENT_PATH_MIG:
    case IBV_EVENT_PATH_MIG_ERR:
    case IBV_EVENT_QP_LAST_WQE_REACHED:
      return EventElement::qp;
    default:
      return EventElement::none;
  }
}

}  // namespace

VMCKPT_IB_EXPORT int ibv_get_async_event(ibv_context* ctx, ibv_async_event* event) {
  ShadowContext* s = fromContext(ctx);
  if (s == nullptr || event == nullptr) return -1;
  int rc = real().get_async_event(s->real, event);
  if (rc != 0) return rc;
  // Point the event at our shadow of the real object it names.
  std::lock_guard lock(objects().mutex);
  switch (elementOf(event->event_type)) {
    case EventElement::cq:
      for (ShadowCq* c : objects().cqs)
        if (c->real == event->element.cq) event->element.cq = &c->pub;
      break;
    case EventElement::srq:
      for (ShadowSrq* q : objects().srqs)
        if (q->real == event->element.srq) event->element.srq = &q->pub;
      break;
    case EventElement::qp:
      for (ShadowQp* q : objects().qps)
        if (q->real == event->element.qp) event->element.qp = &q->pub;
      break;
    case EventElement::none:
      break;
  }
  return 0;
}

VMCKPT_IB_EXPORT void ibv_ack_async_event(ibv_async_event* event) {
  if (event == nullptr) return;
  ibv_async_event r = *event;
  switch (elementOf(r.event_type)) {
    case EventElement::cq:
      if (ShadowCq* c = fromCq(r.element.cq); c != nullptr) r.element.cq = c->real;
      break;
    case EventElement::srq:
      if (ShadowSrq* q = fromSrq(r.element.srq); q != nullptr) r.element.srq = q->real;
      break;
    case EventElement::qp:
      if (ShadowQp* q = fromQp(r.element.qp); q != nullptr) r.element.qp = q->real;
      break;
    case EventElement::none:
      break;
  }
  real().ack_async_event(&r);
}

VMCKPT_IB_EXPORT int ibv_query_device(ibv_context* ctx, ibv_device_attr* attr) {
  ShadowContext* s = fromContext(ctx);
  return s == nullptr ? EINVAL : real().query_device(s->real, attr);
}

// Old binaries call the exported ibv_query_port (new ones come through query_port).
VMCKPT_IB_EXPORT int ibv_query_port(ibv_context* ctx, uint8_t port, struct _compat_ibv_port_attr* attr) {
  ShadowContext* s = fromContext(ctx);
  if (s == nullptr) return EINVAL;
  // The compat struct is ibv_port_attr up to flags (before port_cap_flags2 was added).
  return s->vctx.query_port(ctx, port, reinterpret_cast<ibv_port_attr*>(attr), offsetof(ibv_port_attr, port_cap_flags2));
}

VMCKPT_IB_EXPORT int ibv_query_gid(ibv_context* ctx, uint8_t port, int index, ibv_gid* gid) {
  ShadowContext* s = fromContext(ctx);
  if (s == nullptr) return -1;
  int rc = real().query_gid(s->real, port, index, gid);
  if (rc == 0 && gid != nullptr) {
    *gid = translation().gid.toVirtual(*gid);
    noteGid(*s, *gid);
  }
  return rc;
}

VMCKPT_IB_EXPORT int _ibv_query_gid_ex(ibv_context* ctx, uint32_t port, uint32_t index, ibv_gid_entry* entry,
                                       uint32_t flags, size_t size) {
  ShadowContext* s = fromContext(ctx);
  if (s == nullptr) return EINVAL;
  if (real().query_gid_ex == nullptr) return EOPNOTSUPP;
  int rc = real().query_gid_ex(s->real, port, index, entry, flags, size);
  if (rc == 0 && entry != nullptr) {
    entry->gid = translation().gid.toVirtual(entry->gid);
    noteGid(*s, entry->gid);
  }
  return rc;
}

VMCKPT_IB_EXPORT ssize_t _ibv_query_gid_table(ibv_context* ctx, ibv_gid_entry* entries, size_t max, uint32_t flags,
                                              size_t size) {
  ShadowContext* s = fromContext(ctx);
  if (s == nullptr) return -EINVAL;
  if (real().query_gid_table == nullptr) return -EOPNOTSUPP;
  ssize_t n = real().query_gid_table(s->real, entries, max, flags, size);
  for (ssize_t i = 0; i < n; ++i) {
    entries[i].gid = translation().gid.toVirtual(entries[i].gid);
    noteGid(*s, entries[i].gid);
  }
  return n;
}

VMCKPT_IB_EXPORT int ibv_query_pkey(ibv_context* ctx, uint8_t port, int index, __be16* pkey) {
  ShadowContext* s = fromContext(ctx);
  return s == nullptr ? -1 : real().query_pkey(s->real, port, index, pkey);
}

VMCKPT_IB_EXPORT int ibv_get_pkey_index(ibv_context* ctx, uint8_t port, __be16 pkey) {
  ShadowContext* s = fromContext(ctx);
  if (s == nullptr || real().get_pkey_index == nullptr) return -EINVAL;
  return real().get_pkey_index(s->real, port, pkey);
}

// --- protection domains and memory -------------------------------------------------------

VMCKPT_IB_EXPORT ibv_pd* ibv_alloc_pd(ibv_context* ctx) {
  ShadowContext* c = fromContext(ctx);
  if (c == nullptr) return failNull<ibv_pd>(EINVAL);
  ibv_pd* r = real().alloc_pd(c->real);
  if (r == nullptr) return nullptr;
  auto* s = new (std::nothrow) ShadowPd;
  if (s == nullptr) {
    real().dealloc_pd(r);
    return failNull<ibv_pd>(ENOMEM);
  }
  s->pub = *r;
  s->pub.context = ctx;
  s->real = r;
  s->ctx = c;
  remember(objects().pds, s);
  return &s->pub;
}

VMCKPT_IB_EXPORT int ibv_dealloc_pd(ibv_pd* pd) {
  ShadowPd* s = fromPd(pd);
  if (s == nullptr) return EINVAL;
  int rc = s->real != nullptr ? real().dealloc_pd(s->real) : 0;
  if (rc != 0) return rc;
  drop(objects().pds, s);
  delete s;
  return 0;
}

VMCKPT_IB_EXPORT ibv_mr* ibv_reg_mr(ibv_pd* pd, void* addr, size_t length, int access) {
  ShadowPd* p = fromPd(pd);
  if (p == nullptr) return failNull<ibv_mr>(EINVAL);
  if (access & IBV_ACCESS_ON_DEMAND) return failNull<ibv_mr>(refuse("on-demand paging (IBV_ACCESS_ON_DEMAND)"));
  return wrapMr(p, real().reg_mr(p->real, addr, length, access), addr, length, false,
                reinterpret_cast<uintptr_t>(addr), static_cast<unsigned int>(access));
}

VMCKPT_IB_EXPORT ibv_mr* ibv_reg_mr_iova(ibv_pd* pd, void* addr, size_t length, uint64_t iova, int access) {
  ShadowPd* p = fromPd(pd);
  if (p == nullptr) return failNull<ibv_mr>(EINVAL);
  if (access & IBV_ACCESS_ON_DEMAND) return failNull<ibv_mr>(refuse("on-demand paging (IBV_ACCESS_ON_DEMAND)"));
  if (real().reg_mr_iova == nullptr) return failNull<ibv_mr>(ENOSYS);
  return wrapMr(p, real().reg_mr_iova(p->real, addr, length, iova, access), addr, length, true, iova,
                static_cast<unsigned int>(access));
}

VMCKPT_IB_EXPORT ibv_mr* ibv_reg_mr_iova2(ibv_pd* pd, void* addr, size_t length, uint64_t iova, unsigned int access) {
  ShadowPd* p = fromPd(pd);
  if (p == nullptr) return failNull<ibv_mr>(EINVAL);
  if (access & IBV_ACCESS_ON_DEMAND) return failNull<ibv_mr>(refuse("on-demand paging (IBV_ACCESS_ON_DEMAND)"));
  if (real().reg_mr_iova2 == nullptr) return failNull<ibv_mr>(ENOSYS);
  return wrapMr(p, real().reg_mr_iova2(p->real, addr, length, iova, access), addr, length, true, iova, access);
}

VMCKPT_IB_EXPORT ibv_mr* ibv_reg_dmabuf_mr(ibv_pd*, uint64_t, size_t, uint64_t, int, int) {
  return failNull<ibv_mr>(refuse("ibv_reg_dmabuf_mr (device memory behind a dma-buf)"));
}

VMCKPT_IB_EXPORT int ibv_rereg_mr(ibv_mr*, int, ibv_pd*, void*, size_t, int) {
  return refuse("ibv_rereg_mr");
}

VMCKPT_IB_EXPORT int ibv_dereg_mr(ibv_mr* mr) {
  ShadowMr* s = fromMr(mr);
  if (s == nullptr) return EINVAL;
  int rc = s->real != nullptr ? real().dereg_mr(s->real) : 0;
  if (rc != 0) return rc;
  drop(objects().mrs, s);
  delete s;
  return 0;
}

// --- completion channels and queues --------------------------------------------------------

VMCKPT_IB_EXPORT ibv_comp_channel* ibv_create_comp_channel(ibv_context* ctx) {
  ShadowContext* c = fromContext(ctx);
  if (c == nullptr) return failNull<ibv_comp_channel>(EINVAL);
  ibv_comp_channel* r = real().create_comp_channel(c->real);
  if (r == nullptr) return nullptr;
  auto* s = new (std::nothrow) ShadowChannel;
  if (s == nullptr) {
    real().destroy_comp_channel(r);
    return failNull<ibv_comp_channel>(ENOMEM);
  }
  s->pub = *r;
  s->pub.context = ctx;
  s->real = r;
  s->ctx = c;
  remember(objects().channels, s);
  return &s->pub;
}

VMCKPT_IB_EXPORT int ibv_destroy_comp_channel(ibv_comp_channel* channel) {
  ShadowChannel* s = fromChannel(channel);
  if (s == nullptr) return EINVAL;
  int rc = s->real != nullptr ? real().destroy_comp_channel(s->real) : 0;
  if (rc != 0) return rc;
  drop(objects().channels, s);
  delete s;
  return 0;
}

VMCKPT_IB_EXPORT ibv_cq* ibv_create_cq(ibv_context* ctx, int cqe, void* cq_context, ibv_comp_channel* channel,
                                       int comp_vector) {
  ShadowContext* c = fromContext(ctx);
  if (c == nullptr) return failNull<ibv_cq>(EINVAL);
  ShadowChannel* ch = nullptr;
  if (channel != nullptr && (ch = fromChannel(channel)) == nullptr) return failNull<ibv_cq>(EINVAL);
  ibv_cq* r = real().create_cq(c->real, cqe, cq_context, ch != nullptr ? ch->real : nullptr, comp_vector);
  if (r == nullptr) return nullptr;
  auto* s = new (std::nothrow) ShadowCq;
  if (s == nullptr) {
    real().destroy_cq(r);
    return failNull<ibv_cq>(ENOMEM);
  }
  s->pub.context = ctx;
  s->pub.channel = channel;
  s->pub.cq_context = cq_context;
  s->pub.handle = r->handle;
  s->pub.cqe = r->cqe;
  pthread_mutex_init(&s->pub.mutex, nullptr);
  pthread_cond_init(&s->pub.cond, nullptr);
  s->pub.comp_events_completed = 0;
  s->pub.async_events_completed = 0;
  s->real = r;
  s->ctx = c;
  s->channel = ch;
  s->comp_vector = comp_vector;
  s->cqe = cqe;
  remember(objects().cqs, s);
  return &s->pub;
}

VMCKPT_IB_EXPORT int ibv_resize_cq(ibv_cq* cq, int cqe) {
  ShadowCq* s = fromCq(cq);
  if (s == nullptr) return EINVAL;
  int rc = real().resize_cq(s->real, cqe);
  if (rc == 0) s->pub.cqe = s->real->cqe;
  return rc;
}

VMCKPT_IB_EXPORT int ibv_destroy_cq(ibv_cq* cq) {
  ShadowCq* s = fromCq(cq);
  if (s == nullptr) return EINVAL;
  int rc = s->real != nullptr ? real().destroy_cq(s->real) : 0;
  if (rc != 0) return rc;
  drop(objects().cqs, s);
  pthread_mutex_destroy(&s->pub.mutex);
  pthread_cond_destroy(&s->pub.cond);
  delete s;
  return 0;
}

namespace {

// An event a rebuild owes the application on `ch` (armed CQs whose old channel died).
ShadowCq* takeSyntheticEvent(ShadowChannel& ch) {
  std::lock_guard lock(objects().mutex);
  for (ShadowCq* c : objects().cqs) {
    if (c->channel != &ch || !c->owe_event) continue;
    c->owe_event = false;
    c->synthetic_events.fetch_add(1);
    return c;
  }
  return nullptr;
}

}  // namespace

// Blocking channels wait in poll() with a short timeout rather than in the device's
// read(): a rebuild replaces the channel's file, and a read() on the old one would
// never return. Events a rebuild owes come first.
VMCKPT_IB_EXPORT int ibv_get_cq_event(ibv_comp_channel* channel, ibv_cq** cq, void** cq_context) {
  ShadowChannel* ch = fromChannel(channel);
  if (ch == nullptr) return -1;
  for (;;) {
    {
      GatePass rebuild(rebuildGate());
      if (ShadowCq* owed = takeSyntheticEvent(*ch); owed != nullptr) {
        owed->armed.store(false);
        *cq = &owed->pub;
        if (cq_context != nullptr) *cq_context = owed->pub.cq_context;
        return 0;
      }
      if (ch->real != nullptr) {
        pollfd p{ch->real->fd, POLLIN, 0};
        const bool blocking = (fcntl(ch->real->fd, F_GETFL) & O_NONBLOCK) == 0;
        if (!blocking || ::poll(&p, 1, 100) != 0) break;
        continue;
      }
      // No channel: released before capture (it comes back with the rebuild), or a
      // failed rebuild left it without a device.
      const bool released = objects().released.load();
      if (!released || (fcntl(ch->pub.fd, F_GETFL) & O_NONBLOCK) != 0) {
        errno = released ? EAGAIN : EIO;
        return -1;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  GatePass rebuild(rebuildGate());
  ibv_cq* r = nullptr;
  int rc = real().get_cq_event(ch->real, &r, cq_context);
  if (rc != 0) return rc;
  std::lock_guard lock(objects().mutex);
  for (ShadowCq* s : objects().cqs) {
    if (s->real == r) {
      s->armed.store(false);
      s->unacked_events.fetch_add(1);
      *cq = &s->pub;
      return 0;
    }
  }
  logLine("ibv_get_cq_event: an event for a CQ the interposer does not know");
  real().ack_cq_events(r, 1);
  errno = EIO;
  return -1;
}

VMCKPT_IB_EXPORT void ibv_ack_cq_events(ibv_cq* cq, unsigned int n) {
  ShadowCq* s = fromCq(cq);
  if (s == nullptr) return;
  // Synthetic events were never reported by the device: acking them there would make
  // ibv_destroy_cq wait forever.
  unsigned owed = s->synthetic_events.load();
  while (owed > 0 && n > 0) {
    unsigned take = std::min(owed, n);
    if (s->synthetic_events.compare_exchange_weak(owed, owed - take)) {
      n -= take;
      break;
    }
  }
  GatePass rebuild(rebuildGate());
  if (n > 0 && s->real != nullptr) {
    real().ack_cq_events(s->real, n);
    s->unacked_events.fetch_sub(std::min(n, s->unacked_events.load()));
  }
}

// --- shared receive queues ------------------------------------------------------------------

VMCKPT_IB_EXPORT ibv_srq* ibv_create_srq(ibv_pd* pd, ibv_srq_init_attr* attr) {
  ShadowPd* p = fromPd(pd);
  if (p == nullptr || attr == nullptr) return failNull<ibv_srq>(EINVAL);
  ibv_srq* r = real().create_srq(p->real, attr);
  if (r == nullptr) return nullptr;
  auto* s = new (std::nothrow) ShadowSrq;
  if (s == nullptr) {
    real().destroy_srq(r);
    return failNull<ibv_srq>(ENOMEM);
  }
  s->pub.context = &p->ctx->vctx.context;
  s->pub.srq_context = attr->srq_context;
  s->pub.pd = pd;
  s->pub.handle = r->handle;
  pthread_mutex_init(&s->pub.mutex, nullptr);
  pthread_cond_init(&s->pub.cond, nullptr);
  s->pub.events_completed = 0;
  s->real = r;
  s->pd = p;
  s->init = *attr;
  remember(objects().srqs, s);
  return &s->pub;
}

VMCKPT_IB_EXPORT int ibv_modify_srq(ibv_srq* srq, ibv_srq_attr* attr, int mask) {
  ShadowSrq* s = fromSrq(srq);
  if (s == nullptr) return EINVAL;
  int rc = real().modify_srq(s->real, attr, mask);
  if (rc == 0 && (mask & IBV_SRQ_LIMIT)) s->init.attr.srq_limit = attr->srq_limit;
  if (rc == 0 && (mask & IBV_SRQ_MAX_WR)) s->init.attr.max_wr = attr->max_wr;
  return rc;
}

VMCKPT_IB_EXPORT int ibv_query_srq(ibv_srq* srq, ibv_srq_attr* attr) {
  ShadowSrq* s = fromSrq(srq);
  return s == nullptr ? EINVAL : real().query_srq(s->real, attr);
}

VMCKPT_IB_EXPORT int ibv_destroy_srq(ibv_srq* srq) {
  ShadowSrq* s = fromSrq(srq);
  if (s == nullptr) return EINVAL;
  int rc = s->real != nullptr ? real().destroy_srq(s->real) : 0;
  if (rc != 0) return rc;
  drop(objects().srqs, s);
  pthread_mutex_destroy(&s->pub.mutex);
  pthread_cond_destroy(&s->pub.cond);
  delete s;
  return 0;
}

// --- queue pairs ----------------------------------------------------------------------------

VMCKPT_IB_EXPORT ibv_qp* ibv_create_qp(ibv_pd* pd, ibv_qp_init_attr* attr) {
  ShadowPd* p = fromPd(pd);
  if (p == nullptr || attr == nullptr) return failNull<ibv_qp>(EINVAL);
  if (attr->qp_type != IBV_QPT_RC && attr->qp_type != IBV_QPT_UD && attr->qp_type != IBV_QPT_UC) {
    return failNull<ibv_qp>(refuse("this QP type (only RC, UC and UD can be checkpointed)"));
  }
  ShadowCq* scq = fromCq(attr->send_cq);
  ShadowCq* rcq = fromCq(attr->recv_cq);
  ShadowSrq* srq = attr->srq != nullptr ? fromSrq(attr->srq) : nullptr;
  if (scq == nullptr || rcq == nullptr || (attr->srq != nullptr && srq == nullptr)) return failNull<ibv_qp>(EINVAL);
  ibv_qp_init_attr r = *attr;
  r.send_cq = scq->real;
  r.recv_cq = rcq->real;
  r.srq = srq != nullptr ? srq->real : nullptr;
  ibv_qp* q = real().create_qp(p->real, &r);
  if (q == nullptr) return nullptr;
  attr->cap = r.cap;  // what the device granted, as ibv_create_qp reports it
  auto* s = new (std::nothrow) ShadowQp;
  if (s == nullptr) {
    real().destroy_qp(q);
    return failNull<ibv_qp>(ENOMEM);
  }
  s->pub.context = &p->ctx->vctx.context;
  s->pub.qp_context = attr->qp_context;
  s->pub.pd = pd;
  s->pub.send_cq = attr->send_cq;
  s->pub.recv_cq = attr->recv_cq;
  s->pub.srq = attr->srq;
  s->pub.handle = q->handle;
  s->pub.qp_num = q->qp_num;  // virtual = real at creation
  s->pub.state = q->state;
  s->pub.qp_type = q->qp_type;
  pthread_mutex_init(&s->pub.mutex, nullptr);
  pthread_cond_init(&s->pub.cond, nullptr);
  s->pub.events_completed = 0;
  s->real = q;
  s->pd = p;
  s->send_cq = scq;
  s->recv_cq = rcq;
  s->srq = srq;
  s->init = *attr;
  {
    std::lock_guard lock(rcq->rq_mutex);
    rcq->rqps.push_back(s);
  }
  remember(objects().qps, s);
  return &s->pub;
}

VMCKPT_IB_EXPORT int ibv_modify_qp(ibv_qp* qp, ibv_qp_attr* attr, int mask) {
  ShadowQp* s = fromQp(qp);
  if (s == nullptr || attr == nullptr) return EINVAL;
  if (s->real == nullptr) return EIO;
  ibv_qp_attr r = *attr;
  const Translation& t = translation();
  // A connected QP's peer is named by the AV's GID, which comes with the dest QPN.
  const ibv_gid peer = peerOf(*s, *attr, mask);
  if (mask & IBV_QP_DEST_QPN) r.dest_qp_num = t.peerQpnToReal(peer, attr->dest_qp_num);
  if (mask & IBV_QP_AV) t.avToReal(r.ah_attr);
  if (mask & IBV_QP_ALT_PATH) t.avToReal(r.alt_ah_attr);
  int rc = real().modify_qp(s->real, &r, mask);
  if (rc != 0) return rc;
  if (mask & IBV_QP_STATE) s->pub.state = attr->qp_state;
  QpModify m;
  m.attr = *attr;
  m.mask = mask;
  if (mask & IBV_QP_AV) m.sgid = sourceGid(*s->pd->ctx, attr->ah_attr);
  if (mask & IBV_QP_ALT_PATH) m.alt_sgid = sourceGid(*s->pd->ctx, attr->alt_ah_attr);
  std::lock_guard lock(objects().mutex);
  if (mask & IBV_QP_AV) {
    s->has_dest = true;
    s->dest_gid = peer;
  }
  if ((mask & IBV_QP_STATE) && attr->qp_state == IBV_QPS_RESET) {
    s->history.clear();  // a reset QP starts over
    s->history_overflow = false;
    s->has_dest = false;
  } else if (s->history.size() < kMaxQpModifies) {
    s->history.push_back(m);
  } else {
    s->history_overflow = true;
  }
  return 0;
}

VMCKPT_IB_EXPORT int ibv_query_qp(ibv_qp* qp, ibv_qp_attr* attr, int mask, ibv_qp_init_attr* init) {
  ShadowQp* s = fromQp(qp);
  if (s == nullptr || attr == nullptr) return EINVAL;
  if (s->real == nullptr) return EIO;
  int rc = real().query_qp(s->real, attr, mask, init);
  if (rc != 0) return rc;
  const Translation& t = translation();
  attr->dest_qp_num = t.peer_qpn.toVirtual({attr->ah_attr.grh.dgid, attr->dest_qp_num}).id;
  attr->ah_attr.dlid = t.lid.toVirtual(attr->ah_attr.dlid);
  if (attr->ah_attr.is_global) attr->ah_attr.grh.dgid = t.gid.toVirtual(attr->ah_attr.grh.dgid);
  if (init != nullptr) {
    init->send_cq = &s->send_cq->pub;
    init->recv_cq = &s->recv_cq->pub;
    init->srq = s->srq != nullptr ? &s->srq->pub : nullptr;
    init->qp_context = s->pub.qp_context;
  }
  return 0;
}

VMCKPT_IB_EXPORT int ibv_destroy_qp(ibv_qp* qp) {
  ShadowQp* s = fromQp(qp);
  if (s == nullptr) return EINVAL;
  int rc = s->real != nullptr ? real().destroy_qp(s->real) : 0;
  if (rc != 0) return rc;
  {
    std::lock_guard lock(s->recv_cq->rq_mutex);
    forget(s->recv_cq->rqps, s);
  }
  drop(objects().qps, s);
  pthread_mutex_destroy(&s->pub.mutex);
  pthread_cond_destroy(&s->pub.cond);
  delete s;
  return 0;
}

VMCKPT_IB_EXPORT ibv_qp_ex* ibv_qp_to_qp_ex(ibv_qp*) {
  return failNull<ibv_qp_ex>(refuse("the extended QP API (ibv_qp_to_qp_ex, ibv_wr_*)"));
}

VMCKPT_IB_EXPORT int ibv_attach_mcast(ibv_qp*, const ibv_gid*, uint16_t) { return refuse("multicast"); }
VMCKPT_IB_EXPORT int ibv_detach_mcast(ibv_qp*, const ibv_gid*, uint16_t) { return refuse("multicast"); }

VMCKPT_IB_EXPORT ibv_pd* ibv_import_pd(ibv_context*, uint32_t) { return failNull<ibv_pd>(refuse("ibv_import_pd")); }
VMCKPT_IB_EXPORT ibv_mr* ibv_import_mr(ibv_pd*, uint32_t) { return failNull<ibv_mr>(refuse("ibv_import_mr")); }
VMCKPT_IB_EXPORT ibv_context* ibv_import_device(int) {
  return failNull<ibv_context>(refuse("ibv_import_device"));
}

// --- address handles ------------------------------------------------------------------------

VMCKPT_IB_EXPORT ibv_ah* ibv_create_ah(ibv_pd* pd, ibv_ah_attr* attr) {
  ShadowPd* p = fromPd(pd);
  if (p == nullptr || attr == nullptr) return failNull<ibv_ah>(EINVAL);
  ibv_ah_attr r = *attr;
  translation().avToReal(r);
  ibv_ah* a = real().create_ah(p->real, &r);
  if (a == nullptr) return nullptr;
  auto* s = new (std::nothrow) ShadowAh;
  if (s == nullptr) {
    real().destroy_ah(a);
    return failNull<ibv_ah>(ENOMEM);
  }
  s->pub.context = &p->ctx->vctx.context;
  s->pub.pd = pd;
  s->pub.handle = a->handle;
  s->real = a;
  s->pd = p;
  s->attr = *attr;
  s->sgid = sourceGid(*p->ctx, *attr);
  remember(objects().ahs, s);
  return &s->pub;
}

VMCKPT_IB_EXPORT int ibv_destroy_ah(ibv_ah* ah) {
  ShadowAh* s = fromAh(ah);
  if (s == nullptr) return EINVAL;
  int rc = s->real != nullptr ? real().destroy_ah(s->real) : 0;
  if (rc != 0) return rc;
  drop(objects().ahs, s);
  delete s;
  return 0;
}

// The address vector back to a work completion's sender: the completion carries
// virtual ids already (poll_cq); the GRH in the buffer carries the device's GIDs, which
// the real function reads, so the result's dgid is translated back.
VMCKPT_IB_EXPORT int ibv_init_ah_from_wc(ibv_context* ctx, uint8_t port, ibv_wc* wc, ibv_grh* grh,
                                         ibv_ah_attr* attr) {
  ShadowContext* s = fromContext(ctx);
  if (s == nullptr || wc == nullptr || attr == nullptr) return EINVAL;
  const Translation& t = translation();
  ibv_wc r = *wc;
  r.slid = t.lid.toReal(wc->slid);
  int rc = real().init_ah_from_wc(s->real, port, &r, grh, attr);
  if (rc != 0) return rc;
  attr->dlid = t.lid.toVirtual(attr->dlid);
  if (attr->is_global) attr->grh.dgid = t.gid.toVirtual(attr->grh.dgid);
  return 0;
}

VMCKPT_IB_EXPORT ibv_ah* ibv_create_ah_from_wc(ibv_pd* pd, ibv_wc* wc, ibv_grh* grh, uint8_t port) {
  ShadowPd* p = fromPd(pd);
  if (p == nullptr) return failNull<ibv_ah>(EINVAL);
  ibv_ah_attr attr{};
  if (int rc = ibv_init_ah_from_wc(&p->ctx->vctx.context, port, wc, grh, &attr); rc != 0)
    return failNull<ibv_ah>(rc);
  return ibv_create_ah(pd, &attr);
}

VMCKPT_IB_EXPORT int ibv_resolve_eth_l2_from_gid(ibv_context* ctx, ibv_ah_attr* attr, uint8_t eth_mac[6],
                                                 uint16_t* vid) {
  ShadowContext* s = fromContext(ctx);
  if (s == nullptr || attr == nullptr) return EINVAL;
  ibv_ah_attr r = *attr;
  translation().avToReal(r);
  return real().resolve_eth_l2_from_gid(s->real, &r, eth_mac, vid);
}
