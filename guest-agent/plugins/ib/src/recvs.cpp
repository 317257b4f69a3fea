#include "recvs.hpp"

#include <algorithm>

namespace vmckpt::ib {

void recordReceives(RecvRecord& record, const ibv_recv_wr* chain, const ibv_recv_wr* stop) {
  std::lock_guard lock(record.mutex);
  for (const ibv_recv_wr* w = chain; w != nullptr && w != stop; w = w->next) {
    RecordedRecv r;
    r.wr_id = w->wr_id;
    if (w->num_sge > 0) r.sges.assign(w->sg_list, w->sg_list + w->num_sge);
    record.posted.push_back(std::move(r));
  }
}

namespace {

bool mayBeReceive(const ibv_wc& wc) { return wc.status != IBV_WC_SUCCESS || (wc.opcode & IBV_WC_RECV) != 0; }

void retire(RecvRecord& record, uint64_t wrId) {
  std::lock_guard lock(record.mutex);
  auto it = std::find_if(record.posted.begin(), record.posted.end(),
                         [wrId](const RecordedRecv& r) { return r.wr_id == wrId; });
  if (it != record.posted.end()) record.posted.erase(it);
}

}  // namespace

void retireReceives(ShadowCq& cq, const ibv_wc* wc, int n) {
  if (std::none_of(wc, wc + n, mayBeReceive)) return;
  std::lock_guard lock(cq.rq_mutex);
  for (int i = 0; i < n; ++i) {
    if (!mayBeReceive(wc[i])) continue;
    for (ShadowQp* qp : cq.rqps) {
      if (qp->real->qp_num != wc[i].qp_num) continue;
      retire(qp->srq != nullptr ? qp->srq->recvs : qp->recvs, wc[i].wr_id);
      break;
    }
  }
}

}  // namespace vmckpt::ib
