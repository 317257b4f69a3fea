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
#include <utility>
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
  void set(const Id& v, const Id& r) { setAll({{v, r}}); }
  // Maps many at once (one publication).
  void setAll(const std::vector<std::pair<Id, Id>>& pairs) {
    std::lock_guard lock(write_);
    Map f = *forward_.load();
    Map b = *backward_.load();
    for (const auto& [v, r] : pairs) {
      if (auto it = f.find(v); it != f.end()) b.erase(it->second);
      f.erase(v);
      if (!equal(v, r)) {
        f[v] = r;
        b[r] = v;
      }
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

// An id that only means something together with its owner: a peer's QP number or
// remote key, qualified by a (virtual or real) GID of the peer. Every rxe device numbers
// its QPs from the same start, so two peers' QP numbers alone would collide.
struct PeerId {
  ibv_gid gid{};
  uint32_t id = 0;
};
struct PeerIdLess {
  bool operator()(const PeerId& a, const PeerId& b) const {
    if (int c = std::memcmp(a.gid.raw, b.gid.raw, sizeof a.gid.raw); c != 0) return c < 0;
    return a.id < b.id;
  }
};

// Every id space the interposer translates, for one process.
struct Translation {
  IdTable<uint32_t> qpn;   // own QP numbers (24 bit)
  IdTable<uint32_t> lkey;  // own local keys
  IdTable<uint16_t> lid;   // LIDs (InfiniBand; 0 on RoCE)
  IdTable<ibv_gid, GidLess> gid;             // every GID, own and peers'
  IdTable<PeerId, PeerIdLess> peer_qpn;      // {peer's virtual GID, virtual QPN} -> real pair
  IdTable<PeerId, PeerIdLess> peer_rkey;     // {peer's virtual GID, virtual rkey} -> real pair

  // A peer's QP number / remote key, as the device must see it.
  uint32_t peerQpnToReal(const ibv_gid& peer, uint32_t num) const { return peer_qpn.toReal({peer, num}).id; }
  uint32_t peerRkeyToReal(const ibv_gid& peer, uint32_t key) const { return peer_rkey.toReal({peer, key}).id; }

  // Applies the tables to an address vector the application built with virtual ids.
  void avToReal(ibv_ah_attr& av) const {
    av.dlid = lid.toReal(av.dlid);
    if (av.is_global) av.grh.dgid = gid.toReal(av.grh.dgid);
  }
  // Applies them backwards to a completion the device reported. (src_qp, the sender of
  // a UD message, stays the device's: the completion does not say which peer sent it.)
  void completionToVirtual(ibv_wc& wc) const {
    wc.qp_num = qpn.toVirtual(wc.qp_num);
    wc.slid = lid.toVirtual(wc.slid);
  }
};

Translation& translation();

}  // namespace vmckpt::ib
