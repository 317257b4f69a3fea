#include "real.hpp"

#include <dlfcn.h>

#include <mutex>

namespace vmckpt::ib {
namespace {

template <typename Fn>
void resolve(Fn& slot, const char* name, const char* version) {
  void* p = dlvsym(RTLD_NEXT, name, version);
  slot = reinterpret_cast<Fn>(p);
}

RealVerbs load() {
  RealVerbs r{};
  resolve(r.open_device, "ibv_open_device", "IBVERBS_1.1");
  resolve(r.close_device, "ibv_close_device", "IBVERBS_1.1");
  resolve(r.get_async_event, "ibv_get_async_event", "IBVERBS_1.1");
  resolve(r.ack_async_event, "ibv_ack_async_event", "IBVERBS_1.1");
  resolve(r.query_device, "ibv_query_device", "IBVERBS_1.1");
  resolve(r.query_port, "ibv_query_port", "IBVERBS_1.1");
  resolve(r.query_gid, "ibv_query_gid", "IBVERBS_1.1");
  resolve(r.query_gid_ex, "_ibv_query_gid_ex", "IBVERBS_1.11");
  resolve(r.query_gid_table, "_ibv_query_gid_table", "IBVERBS_1.11");
  resolve(r.query_pkey, "ibv_query_pkey", "IBVERBS_1.1");
  resolve(r.get_pkey_index, "ibv_get_pkey_index", "IBVERBS_1.5");
  resolve(r.alloc_pd, "ibv_alloc_pd", "IBVERBS_1.1");
  resolve(r.dealloc_pd, "ibv_dealloc_pd", "IBVERBS_1.1");
  resolve(r.reg_mr, "ibv_reg_mr", "IBVERBS_1.1");
  resolve(r.reg_mr_iova, "ibv_reg_mr_iova", "IBVERBS_1.7");
  resolve(r.reg_mr_iova2, "ibv_reg_mr_iova2", "IBVERBS_1.8");
  resolve(r.dereg_mr, "ibv_dereg_mr", "IBVERBS_1.1");
  resolve(r.create_comp_channel, "ibv_create_comp_channel", "IBVERBS_1.0");
  resolve(r.destroy_comp_channel, "ibv_destroy_comp_channel", "IBVERBS_1.0");
  resolve(r.create_cq, "ibv_create_cq", "IBVERBS_1.1");
  resolve(r.resize_cq, "ibv_resize_cq", "IBVERBS_1.1");
  resolve(r.destroy_cq, "ibv_destroy_cq", "IBVERBS_1.1");
  resolve(r.get_cq_event, "ibv_get_cq_event", "IBVERBS_1.1");
  resolve(r.ack_cq_events, "ibv_ack_cq_events", "IBVERBS_1.1");
  resolve(r.create_srq, "ibv_create_srq", "IBVERBS_1.1");
  resolve(r.modify_srq, "ibv_modify_srq", "IBVERBS_1.1");
  resolve(r.query_srq, "ibv_query_srq", "IBVERBS_1.1");
  resolve(r.destroy_srq, "ibv_destroy_srq", "IBVERBS_1.1");
  resolve(r.create_qp, "ibv_create_qp", "IBVERBS_1.1");
  resolve(r.query_qp, "ibv_query_qp", "IBVERBS_1.1");
  resolve(r.modify_qp, "ibv_modify_qp", "IBVERBS_1.1");
  resolve(r.destroy_qp, "ibv_destroy_qp", "IBVERBS_1.1");
  resolve(r.create_ah, "ibv_create_ah", "IBVERBS_1.1");
  resolve(r.destroy_ah, "ibv_destroy_ah", "IBVERBS_1.1");
  resolve(r.init_ah_from_wc, "ibv_init_ah_from_wc", "IBVERBS_1.1");
  resolve(r.resolve_eth_l2_from_gid, "ibv_resolve_eth_l2_from_gid", "IBVERBS_1.1");
  return r;
}

}  // namespace

const RealVerbs& real() {
  static const RealVerbs table = load();
  return table;
}

}  // namespace vmckpt::ib
