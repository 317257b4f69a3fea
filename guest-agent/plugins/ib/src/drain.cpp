#include "drain.hpp"

#include <infiniband/verbs.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <thread>
#include <vector>

#include "gate.hpp"
#include "ids.hpp"
#include "objects.hpp"
#include "recvs.hpp"

namespace vmckpt::ib {
namespace {

// A marker's wr_id is the address of its record in this pool, which lives as long as
// the process: a marker that completes late (after a drain gave up) still finds its
// record and is filtered out, and no application wr_id can be one of these addresses.
struct Marker {
  ShadowQp* qp = nullptr;
  std::atomic<int> status{-1};  // -1: not back yet, else the ibv_wc_status
};

constexpr size_t kPoolSize = 4096;
Marker g_pool[kPoolSize];
size_t g_next = 0;  // next free slot (cyclic); drains are serialized by objects().mutex
std::atomic<bool> g_draining{false};

Marker* markerOf(uint64_t wrId) {
  auto* p = reinterpret_cast<Marker*>(static_cast<uintptr_t>(wrId));
  return p >= g_pool && p < g_pool + kPoolSize ? p : nullptr;
}

}  // namespace

// The backlog mutex is held across the device poll, so an application poll cannot
// overtake an earlier completion in the backlog.
int pollIntoBacklog(ShadowCq& cq) {
  std::lock_guard lock(cq.backlog_mutex);
  ibv_wc wc[16];
  int total = 0;
  for (;;) {
    int n = cq.real->context->ops.poll_cq(cq.real, 16, wc);
    if (n < 0) return n;
    if (n == 0) break;
    retireReceives(cq, wc, n);
    const Translation& t = translation();
    for (int i = 0; i < n; ++i) {
      if (consumeMarker(wc[i])) continue;
      t.completionToVirtual(wc[i]);
      cq.backlog.push_back(wc[i]);
      ++total;
    }
  }
  if (!cq.backlog.empty()) cq.has_backlog.store(true, std::memory_order_release);
  return total;
}

bool draining() { return g_draining.load(std::memory_order_acquire); }

bool consumeMarker(const ibv_wc& wc) {
  Marker* m = markerOf(wc.wr_id);
  if (m == nullptr) return false;
  m->status.store(static_cast<int>(wc.status), std::memory_order_release);
  return true;
}

bool postWakeMarker(ShadowQp& qp) {
  Marker* m = &g_pool[g_next];
  g_next = (g_next + 1) % kPoolSize;
  m->qp = &qp;
  m->status.store(-1, std::memory_order_release);
  ibv_send_wr wr{};
  wr.wr_id = reinterpret_cast<uintptr_t>(m);
  wr.opcode = IBV_WR_RDMA_WRITE;
  wr.send_flags = IBV_SEND_SIGNALED;
  ibv_send_wr* bad = nullptr;
  return qp.real->context->ops.post_send(qp.real, &wr, &bad) == 0;
}

std::string drainSendQueues(std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  if (!gate().close(limit)) return "a post did not return within the deadline";

  std::lock_guard lock(objects().mutex);
  std::vector<ShadowQp*> connected;
  for (ShadowQp* qp : objects().qps)
    if ((qp->pub.qp_type == IBV_QPT_RC || qp->pub.qp_type == IBV_QPT_UC) && qp->pub.state == IBV_QPS_RTS)
      connected.push_back(qp);
  if (connected.size() > kPoolSize) return "more than 4096 connected queue pairs";
  std::vector<Marker*> markers;
  for (ShadowQp* qp : connected) {
    Marker* m = &g_pool[g_next];
    g_next = (g_next + 1) % kPoolSize;
    m->qp = qp;
    m->status.store(-1, std::memory_order_release);
    markers.push_back(m);
  }
  g_draining.store(true, std::memory_order_release);
  struct Reset {
    ~Reset() { g_draining.store(false, std::memory_order_release); }
  } reset;

  for (Marker* mp : markers) {
    Marker& m = *mp;
    ibv_send_wr wr{};
    wr.wr_id = reinterpret_cast<uintptr_t>(&m);
    wr.opcode = IBV_WR_RDMA_WRITE;
    wr.num_sge = 0;
    wr.send_flags = IBV_SEND_SIGNALED;
    for (;;) {
      ibv_send_wr* bad = nullptr;
      int rc = m.qp->real->context->ops.post_send(m.qp->real, &wr, &bad);
      if (rc == 0) break;
      // A full send queue empties as its completions are taken; anything else is fatal.
      if (rc != ENOMEM || std::chrono::steady_clock::now() > deadline)
        return "posting the drain marker on QP " + std::to_string(m.qp->pub.qp_num) + ": " + std::strerror(rc);
      pollIntoBacklog(*m.qp->send_cq);
    }
  }
  for (;;) {
    size_t pending = 0;
    for (Marker* mp : markers) {
      Marker& m = *mp;
      int st = m.status.load(std::memory_order_acquire);
      if (st < 0) {
        ++pending;
        if (int rc = pollIntoBacklog(*m.qp->send_cq); rc < 0)
          return "polling the send CQ of QP " + std::to_string(m.qp->pub.qp_num) + " failed";
      } else if (st != IBV_WC_SUCCESS) {
        return "the drain marker on QP " + std::to_string(m.qp->pub.qp_num) + " completed with '" +
               ibv_wc_status_str(static_cast<ibv_wc_status>(st)) + "'";
      }
    }
    if (pending == 0) break;
    if (std::chrono::steady_clock::now() > deadline)
      return std::to_string(pending) + " of " + std::to_string(markers.size()) +
             " send queues did not drain within the deadline (a peer not answering?)";
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  return "";
}

}  // namespace vmckpt::ib
