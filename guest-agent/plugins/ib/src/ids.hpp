// Virtual ids: the QP numbers, keys, LIDs and GIDs an application (and, through it, its
// peers) holds stay the values it first saw; after a rebuild on a new device the real
// ones differ, and every call that carries one is translated here. A table with no
// entry for an id is the identity: before any rebuild nothing is translated.
//
// Readers are the data path (post_send, poll_cq) and never lock: a table is an immutable
// map published through an atomic pointer. Writers (the rebuild, with every post gated)
// publish a new map; old maps are kept until the process exits, since a reader may still
// hold one (they are small and change only once per restart).
#pragma once

#include <infiniband/verbs.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

namespace vmckpt::ib {

template <typename Id, typename Less = std::less<Id>>
class IdTable {
 public:
  using Map = std::map<Id, Id, Less>;

  // The real id of virtual `v`: the mapped value, or `v` itself.
  Id toReal(const Id& v) const { return lookup(forward_.load(std::memory_order_acquire), v); }
  // The virtual id of real `r`: the inverse mapping, or `r` itself.
  Id toVirtual(const Id& r) const { return lookup(backward_.load(std::memory_order_acquire), r); }
  bool empty() const { return forward_.load(std::memory_order_acquire)->empty(); }

  // Maps virtual `v` to real `r` (replacing an earlier mapping of `v`). A mapping to
  // itself removes the entry.
  void set(const Id& v, const Id& r) {
    std::lock_guard lock(write_);
    Map f = *forward_.load();
    Map b = *backward_.load();
    if (auto it = f.find(v); it != f.end()) b.erase(it->second);
    f.erase(v);
    if (!equal(v, r)) {
      f[v] = r;
      b[r] = v;
    }
    publish(std::move(f), std::move(b));
  }
  void clear() {
    std::lock_guard lock(write_);
    publish(Map{}, Map{});
  }

 private:
  static bool equal(const Id& a, const Id& b) { return !Less{}(a, b) && !Less{}(b, a); }
  static Id lookup(const Map* m, const Id& k) {
    if (m->empty()) return k;
    auto it = m->find(k);
    return it == m->end() ? k : it->second;
  }
  void publish(Map f, Map b) {
    keep_.push_back(std::make_unique<Map>(std::move(f)));
    forward_.store(keep_.back().get(), std::memory_order_release);
    keep_.push_back(std::make_unique<Map>(std::move(b)));
    backward_.store(keep_.back().get(), std::memory_order_release);
  }

  std::mutex write_;
  std::vector<std::unique_ptr<Map>> keep_{[] {
    std::vector<std::unique_ptr<Map>> v;
    v.push_back(std::make_unique<Map>());
    return v;
  }()};
  std::atomic<const Map*> forward_{keep_.front().get()};
  std::atomic<const Map*> backward_{keep_.front().get()};
};

struct GidLess {
  bool operator()(const ibv_gid& a, const ibv_gid& b) const { return std::memcmp(a.raw, b.raw, sizeof a.raw) < 0; }
};

// Every id space the interposer translates, for one process.
struct Translation {
  IdTable<uint32_t> qpn;   // QP numbers, own and peers' (24 bit)
  IdTable<uint32_t> lkey;  // own local keys
  IdTable<uint32_t> rkey;  // remote keys, own and peers'
  IdTable<uint16_t> lid;   // LIDs (InfiniBand; 0 on RoCE)
  IdTable<ibv_gid, GidLess> gid;

  // Applies the tables to an address vector the application built with virtual ids.
  void avToReal(ibv_ah_attr& av) const {
    av.dlid = lid.toReal(av.dlid);
    if (av.is_global) av.grh.dgid = gid.toReal(av.grh.dgid);
  }
  // Applies them backwards to a completion the device reported.
  void completionToVirtual(ibv_wc& wc) const {
    wc.qp_num = qpn.toVirtual(wc.qp_num);
    wc.src_qp = qpn.toVirtual(wc.src_qp);
    wc.slid = lid.toVirtual(wc.slid);
  }
};

Translation& translation();

}  // namespace vmckpt::ib
