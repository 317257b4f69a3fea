// The real libibverbs behind the interposer: every exported function the wrappers call
// on, resolved once with dlvsym(RTLD_NEXT, name, version) so that the version the
// application asked for is the one that runs. A function the installed libibverbs lacks
// stays null; its wrapper fails with ENOSYS.
#pragma once

#include <infiniband/verbs.h>

namespace vmckpt::ib {

struct RealVerbs {
  ibv_context* (*open_device)(ibv_device*);
  int (*close_device)(ibv_context*);
  int (*get_async_event)(ibv_context*, ibv_async_event*);
  void (*ack_async_event)(ibv_async_event*);
  int (*query_device)(ibv_context*, ibv_device_attr*);
  int (*query_port)(ibv_context*, uint8_t, struct _compat_ibv_port_attr*);
  int (*query_gid)(ibv_context*, uint8_t, int, ibv_gid*);
  int (*query_gid_ex)(ibv_context*, uint32_t, uint32_t, ibv_gid_entry*, uint32_t, size_t);
  ssize_t (*query_gid_table)(ibv_context*, ibv_gid_entry*, size_t, uint32_t, size_t);
  int (*query_pkey)(ibv_context*, uint8_t, int, __be16*);
  int (*get_pkey_index)(ibv_context*, uint8_t, __be16);
  ibv_pd* (*alloc_pd)(ibv_context*);
  int (*dealloc_pd)(ibv_pd*);
  ibv_mr* (*reg_mr)(ibv_pd*, void*, size_t, int);
  ibv_mr* (*reg_mr_iova)(ibv_pd*, void*, size_t, uint64_t, int);
  ibv_mr* (*reg_mr_iova2)(ibv_pd*, void*, size_t, uint64_t, unsigned int);
  int (*dereg_mr)(ibv_mr*);
  ibv_comp_channel* (*create_comp_channel)(ibv_context*);
  int (*destroy_comp_channel)(ibv_comp_channel*);
  ibv_cq* (*create_cq)(ibv_context*, int, void*, ibv_comp_channel*, int);
  int (*resize_cq)(ibv_cq*, int);
  int (*destroy_cq)(ibv_cq*);
  int (*get_cq_event)(ibv_comp_channel*, ibv_cq**, void**);
  void (*ack_cq_events)(ibv_cq*, unsigned int);
  ibv_srq* (*create_srq)(ibv_pd*, ibv_srq_init_attr*);
  int (*modify_srq)(ibv_srq*, ibv_srq_attr*, int);
  int (*query_srq)(ibv_srq*, ibv_srq_attr*);
  int (*destroy_srq)(ibv_srq*);
  ibv_qp* (*create_qp)(ibv_pd*, ibv_qp_init_attr*);
  int (*query_qp)(ibv_qp*, ibv_qp_attr*, int, ibv_qp_init_attr*);
  int (*modify_qp)(ibv_qp*, ibv_qp_attr*, int);
  int (*destroy_qp)(ibv_qp*);
  ibv_ah* (*create_ah)(ibv_pd*, ibv_ah_attr*);
  int (*destroy_ah)(ibv_ah*);
  int (*init_ah_from_wc)(ibv_context*, uint8_t, ibv_wc*, ibv_grh*, ibv_ah_attr*);
  int (*resolve_eth_l2_from_gid)(ibv_context*, ibv_ah_attr*, uint8_t*, uint16_t*);
};

// The table, resolved on first use (thread-safe). Never null; its members may be.
const RealVerbs& real();

}  // namespace vmckpt::ib
