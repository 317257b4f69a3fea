// PRESUSPEND's work: close the gate, then post a signaled marker (a zero-length RDMA
// WRITE, which needs no buffer or key on the peer and consumes no receive) on the send
// queue of every connected RC/UC queue pair, and take completions off the device until
// every marker has come back. Send queues complete in order, so then every send the
// application posted has been acknowledged by its peer: nothing of ours is in flight.
// The completions taken meanwhile go to their CQ's backlog, which poll_cq returns first.
#pragma once

#include <infiniband/verbs.h>

#include <chrono>
#include <string>

#include "shadow.hpp"

namespace vmckpt::ib {

// "" when drained; otherwise a one-line reason (the gate stays closed either way; the
// caller reopens it on RESUME).
std::string drainSendQueues(std::chrono::milliseconds limit);

// The marker filter poll_cq applies while a drain runs (datapath.cpp): true when `wc`
// is a marker (it is then counted and must not reach the application).
bool consumeMarker(const ibv_wc& wc);
bool draining();

// Takes everything off `cq`'s device queue into its backlog (markers filtered out,
// receives retired, ids made virtual): the drain's poll, and the rebuild's last one on
// the old device. Returns the number kept, or the device's negative error.
int pollIntoBacklog(ShadowCq& cq);

// After a rebuild: makes `qp`'s send CQ report a completion (a signaled zero-length RDMA
// WRITE marker, filtered out like the drain's), so that CQ's channel raises the event
// the old channel took with it. Caller holds objects().mutex; false when the post fails.
bool postWakeMarker(ShadowQp& qp);

}  // namespace vmckpt::ib
