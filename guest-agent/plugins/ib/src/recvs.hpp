// The record of posted receives a rebuild posts again: what the application posted on a
// receive queue (QP or SRQ) and the device has not completed yet. Posts append, receive
// completions (and error completions, whose opcode is undefined) retire by wr_id.
#pragma once

#include <infiniband/verbs.h>

#include "shadow.hpp"

namespace vmckpt::ib {

// Appends the requests of `chain` up to, not including, `stop` (null: all of it).
void recordReceives(RecvRecord& record, const ibv_recv_wr* chain, const ibv_recv_wr* stop);
// Retires the receives the completions wc[0..n) (device ids, not yet translated) consumed.
void retireReceives(ShadowCq& cq, const ibv_wc* wc, int n);

}  // namespace vmckpt::ib
