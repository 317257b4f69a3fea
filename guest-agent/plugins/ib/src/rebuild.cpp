#include "rebuild.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <functional>
#include <optional>
#include <utility>
#include <vector>

#include "drain.hpp"
#include "gate.hpp"
#include "ids.hpp"
#include "objects.hpp"
#include "real.hpp"
#include "release.hpp"
#include "shadow.hpp"

namespace vmckpt::ib {
namespace {

using Json = nlohmann::json;
constexpr uint8_t kPort = 1;

// Bounds on what a peer publishes (it comes from another guest, through the host).
constexpr size_t kMaxPeerGids = kMaxKnownGids;
constexpr size_t kMaxPeerQpns = 16384;
constexpr size_t kMaxPeerKeys = 65536;

std::string hex(const ibv_gid& g) {
  char out[33];
  for (size_t i = 0; i < 16; ++i) std::snprintf(out + 2 * i, 3, "%02x", g.raw[i]);
  return std::string(out, 32);
}

std::optional<ibv_gid> gidFromHex(const Json& j) {
  if (!j.is_string()) return std::nullopt;
  const std::string& s = j.get_ref<const std::string&>();
  if (s.size() != 32) return std::nullopt;
  ibv_gid g{};
  for (size_t i = 0; i < 16; ++i) {
    unsigned v = 0;
    for (size_t k = 0; k < 2; ++k) {
      char c = s[2 * i + k];
      int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
      if (d < 0) return std::nullopt;
      v = v * 16 + static_cast<unsigned>(d);
    }
    g.raw[i] = static_cast<uint8_t>(v);
  }
  return g;
}

std::optional<uint32_t> u32(const Json& j) {
  if (!j.is_number_integer()) return std::nullopt;  // floats, strings, ... refused
  if (!j.is_number_unsigned() && j.get<int64_t>() < 0) return std::nullopt;
  const uint64_t v = j.get<uint64_t>();
  if (v > 0xffffffffu) return std::nullopt;
  return static_cast<uint32_t>(v);
}

bool isZero(const ibv_gid& g) {
  static const ibv_gid zero{};
  return std::memcmp(g.raw, zero.raw, sizeof g.raw) == 0;
}
bool sameGid(const ibv_gid& a, const ibv_gid& b) { return std::memcmp(a.raw, b.raw, sizeof a.raw) == 0; }

enum class GidKind { ipv4, linkLocal, other };
GidKind kindOf(const ibv_gid& g) {
  static const uint8_t v4[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (std::memcmp(g.raw, v4, sizeof v4) == 0) return GidKind::ipv4;
  if (g.raw[0] == 0xfe && (g.raw[1] & 0xc0) == 0x80) return GidKind::linkLocal;
  return GidKind::other;
}
const char* kindName(GidKind k) {
  return k == GidKind::ipv4 ? "IPv4-mapped" : k == GidKind::linkLocal ? "link-local" : "global";
}

// The GID table of port 1 of `ctx` (zero entries left out, index kept).
std::vector<std::pair<int, ibv_gid>> gidTable(ibv_context* ctx) {
  std::vector<std::pair<int, ibv_gid>> out;
  ibv_port_attr pa{};
  if (real().query_port(ctx, kPort, reinterpret_cast<_compat_ibv_port_attr*>(&pa)) != 0) return out;
  for (int i = 0; i < pa.gid_tbl_len && i < 256; ++i) {
    ibv_gid g{};
    if (real().query_gid(ctx, kPort, i, &g) == 0 && !isZero(g)) out.emplace_back(i, g);
  }
  return out;
}

int indexOf(const std::vector<std::pair<int, ibv_gid>>& table, const ibv_gid& g) {
  for (const auto& [i, e] : table)
    if (sameGid(e, g)) return i;
  return -1;
}

// Replays history entries [qp.replayed, end) of `qp` against the new device; with
// `peers` false it stops before the first entry that names the peer (AV or dest QPN).
std::string replay(ShadowQp& qp, bool peers, const std::vector<std::pair<int, ibv_gid>>& table, uint32_t activeMtu) {
  const Translation& t = translation();
  for (; qp.replayed < qp.history.size(); ++qp.replayed) {
    const QpModify& m = qp.history[qp.replayed];
    if (!peers && (m.mask & (IBV_QP_AV | IBV_QP_DEST_QPN))) break;
    ibv_qp_attr r = m.attr;
    const ibv_gid peer = peerOf(qp, m.attr, m.mask);
    if (m.mask & IBV_QP_DEST_QPN) r.dest_qp_num = t.peerQpnToReal(peer, m.attr.dest_qp_num);
    auto remapAv = [&](ibv_ah_attr& av, const ibv_gid& sgid) -> std::string {
      t.avToReal(av);
      if (!av.is_global || isZero(sgid)) return "";
      const int idx = indexOf(table, t.gid.toReal(sgid));
      if (idx < 0) return "its source GID " + hex(sgid) + " has no counterpart on the new device";
      av.grh.sgid_index = static_cast<uint8_t>(idx);
      return "";
    };
    if (m.mask & IBV_QP_AV)
      if (std::string e = remapAv(r.ah_attr, m.sgid); !e.empty())
        return "QP " + std::to_string(qp.pub.qp_num) + ": " + e;
    if (m.mask & IBV_QP_ALT_PATH)
      if (std::string e = remapAv(r.alt_ah_attr, m.alt_sgid); !e.empty())
        return "QP " + std::to_string(qp.pub.qp_num) + " (alternate path): " + e;
    if ((m.mask & IBV_QP_PATH_MTU) && activeMtu != 0 && static_cast<uint32_t>(r.path_mtu) > activeMtu)
      r.path_mtu = static_cast<ibv_mtu>(activeMtu);
    if (int rc = real().modify_qp(qp.real, &r, m.mask); rc != 0)
      return "replaying modify_qp #" + std::to_string(qp.replayed + 1) + " of QP " + std::to_string(qp.pub.qp_num) +
             ": " + std::strerror(rc);
    if ((m.mask & IBV_QP_AV) && (m.mask & IBV_QP_DEST_QPN))
      logLine("QP %u (now %u) reconnected: peer %s QP %u is %s QP %u, source GID index %u, path MTU %d", qp.pub.qp_num,
              qp.real->qp_num, hex(peer).c_str(), m.attr.dest_qp_num, hex(r.ah_attr.grh.dgid).c_str(), r.dest_qp_num,
              r.ah_attr.grh.sgid_index, 128 << static_cast<int>(r.path_mtu));
  }
  return "";
}

// Posts the recorded receives again, in order (lkeys translated).
std::string repost(RecvRecord& record, const char* what, uint32_t num,
                   const std::function<int(ibv_recv_wr*, ibv_recv_wr**)>& post) {
  std::lock_guard lock(record.mutex);
  const Translation& t = translation();
  for (RecordedRecv& r : record.posted) {
    std::vector<ibv_sge> sges = r.sges;
    for (ibv_sge& s : sges) s.lkey = t.lkey.toReal(s.lkey);
    ibv_recv_wr wr{};
    wr.wr_id = r.wr_id;
    wr.sg_list = sges.empty() ? nullptr : sges.data();
    wr.num_sge = static_cast<int>(sges.size());
    ibv_recv_wr* bad = nullptr;
    if (int rc = post(&wr, &bad); rc != 0)
      return std::string("posting a recorded receive again on ") + what + " " + std::to_string(num) + ": " +
             std::strerror(rc);
  }
  return "";
}

uint32_t activeMtuOf(ibv_context* ctx) {
  ibv_port_attr pa{};
  if (real().query_port(ctx, kPort, reinterpret_cast<_compat_ibv_port_attr*>(&pa)) != 0) return 0;
  return static_cast<uint32_t>(pa.active_mtu);
}

// True when `g` is the source GID of an address some QP or AH uses.
bool usedAsSource(const Objects& o, const ibv_gid& g) {
  for (const ShadowQp* q : o.qps)
    for (const QpModify& m : q->history)
      if (sameGid(m.sgid, g) || sameGid(m.alt_sgid, g)) return true;
  for (const ShadowAh* a : o.ahs)
    if (sameGid(a->sgid, g)) return true;
  return false;
}

template <typename T, typename F>
std::string each(std::vector<T*>& list, F&& f) {
  for (T* item : list)
    if (std::string e = f(*item); !e.empty()) return e;
  return "";
}

}  // namespace

std::string rebuildLocal(const std::string& device, Json& published) {
  published = Json::object();
  RebuildGateClosed closed;
  if (!closed.ok) return "a poll did not return within 4 s";
  Objects& o = objects();
  std::lock_guard lock(o.mutex);
  if (o.contexts.empty()) return "";
  if (std::string e = rebuildRefusal(o); !e.empty()) return e;
  ShadowContext& c = *o.contexts.front();
  // Without a map: the device it is open on, or was before a release or a failed rebuild.
  std::string name = device.empty() ? c.device_name : device;
  if (name.empty()) return "no device to rebuild on; name one with --map ib=DEVICE";

  int count = 0;
  ibv_device** list = ibv_get_device_list(&count);
  if (list == nullptr) return "no verbs device list: " + std::string(std::strerror(errno));
  auto find = [&](const std::string& wanted) -> ibv_device* {
    for (int i = 0; i < count; ++i)
      if (wanted == ibv_get_device_name(list[i])) return list[i];
    return nullptr;
  };
  ibv_device* dev = find(name);
  // A map naming a device this guest lacks: the one it had, rather than none (its peers
  // rebuild and wait for its ids); the caller says so.
  if (dev == nullptr && name != c.device_name && !c.device_name.empty() && (dev = find(c.device_name)) != nullptr) {
    logLine("no verbs device '%s' in this guest; rebuilt on '%s' instead (the device map names a device this "
            "guest does not have)", name.c_str(), c.device_name.c_str());
    name = c.device_name;
  }
  if (dev == nullptr) {
    ibv_free_device_list(list);
    return "no verbs device '" + name + "' in this guest";
  }
  // Not released before capture (a restore of a snapshot taken that way, or this rebuild
  // on a live device): the last completions into the backlogs, then the old objects go,
  // and their fd numbers become free for the new device's.
  if (!o.released.load()) {
    if (!lastPollIntoBacklogs(o)) logLine("the last poll of a CQ on the old device failed; continuing");
    releaseObjects(o, c);
  }
  ibv_context* fresh = real().open_device(dev);
  ibv_free_device_list(list);  // an open context keeps its device
  if (fresh == nullptr) return "opening '" + name + "': " + std::strerror(errno);
  c.real = fresh;
  c.device_name = name;
  o.released.store(false);  // from here a missing object is a failed rebuild (EIO)
  ibv_context& pub = c.vctx.context;
  pub.device = fresh->device;
  pub.num_comp_vectors = fresh->num_comp_vectors;
  pub.cmd_fd = keepFdNumber(o, pub.cmd_fd, fresh->cmd_fd);
  pub.async_fd = keepFdNumber(o, pub.async_fd, fresh->async_fd);

  Translation& t = translation();
  std::string err = each(o.pds, [&](ShadowPd& p) -> std::string {
    p.real = real().alloc_pd(fresh);
    if (p.real == nullptr) return std::string("allocating a PD: ") + std::strerror(errno);
    p.pub.handle = p.real->handle;
    return "";
  });
  if (!err.empty()) return err;

  std::vector<std::pair<uint32_t, uint32_t>> lkeys;
  Json rkeys = Json::array();
  err = each(o.mrs, [&](ShadowMr& m) -> std::string {
    int access = static_cast<int>(m.access);
    m.real = m.has_iova ? real().reg_mr_iova2(m.pd->real, m.addr, m.length, m.iova, m.access)
                        : real().reg_mr(m.pd->real, m.addr, m.length, access);
    if (m.real == nullptr) return "registering " + std::to_string(m.length) + " bytes again: " + std::strerror(errno);
    m.pub.handle = m.real->handle;
    lkeys.emplace_back(m.pub.lkey, m.real->lkey);
    rkeys.push_back(Json::array({m.pub.rkey, m.real->rkey}));
    return "";
  });
  if (!err.empty()) return err;
  t.lkey.setAll(lkeys);

  err = each(o.channels, [&](ShadowChannel& ch) -> std::string {
    ch.real = real().create_comp_channel(fresh);
    if (ch.real == nullptr) return std::string("creating a completion channel: ") + std::strerror(errno);
    // The application's O_NONBLOCK, kept by a release's placeholder, holds for the new file.
    const int was = ::fcntl(ch.pub.fd, F_GETFL);
    ch.pub.fd = keepFdNumber(o, ch.pub.fd, ch.real->fd);
    if (was != -1 && (was & O_NONBLOCK) != 0)
      (void)::fcntl(ch.pub.fd, F_SETFL, ::fcntl(ch.pub.fd, F_GETFL) | O_NONBLOCK);
    return "";
  });
  if (!err.empty()) return err;

  err = each(o.cqs, [&](ShadowCq& q) -> std::string {
    const int vectors = fresh->num_comp_vectors > 0 ? fresh->num_comp_vectors : 1;
    q.real = real().create_cq(fresh, q.cqe, q.pub.cq_context, q.channel != nullptr ? q.channel->real : nullptr,
                              q.comp_vector % vectors);
    if (q.real == nullptr) return "creating a CQ of " + std::to_string(q.cqe) + " entries: " + std::strerror(errno);
    q.pub.handle = q.real->handle;
    q.pub.cqe = q.real->cqe;
    if (q.channel != nullptr && q.armed.load()) {
      if (int rc = q.real->context->ops.req_notify_cq(q.real, 0); rc != 0)
        return std::string("re-arming a CQ: ") + std::strerror(rc);
      q.owe_event = true;
    }
    return "";
  });
  if (!err.empty()) return err;

  err = each(o.srqs, [&](ShadowSrq& q) -> std::string {
    ibv_srq_init_attr init = q.init;
    q.real = real().create_srq(q.pd->real, &init);
    if (q.real == nullptr) return std::string("creating an SRQ: ") + std::strerror(errno);
    q.pub.handle = q.real->handle;
    ibv_srq* r = q.real;
    return repost(q.recvs, "SRQ", q.pub.handle,
                  [r](ibv_recv_wr* w, ibv_recv_wr** b) { return r->context->ops.post_srq_recv(r, w, b); });
  });
  if (!err.empty()) return err;

  const auto table = gidTable(fresh);
  const uint32_t mtu = activeMtuOf(fresh);
  std::vector<std::pair<uint32_t, uint32_t>> qpns;
  Json qpnPairs = Json::array();
  err = each(o.qps, [&](ShadowQp& q) -> std::string {
    ibv_qp_init_attr init = q.init;
    init.send_cq = q.send_cq->real;
    init.recv_cq = q.recv_cq->real;
    init.srq = q.srq != nullptr ? q.srq->real : nullptr;
    q.real = real().create_qp(q.pd->real, &init);
    if (q.real == nullptr) return "creating QP " + std::to_string(q.pub.qp_num) + ": " + std::strerror(errno);
    q.pub.handle = q.real->handle;
    qpns.emplace_back(q.pub.qp_num, q.real->qp_num);
    qpnPairs.push_back(Json::array({q.pub.qp_num, q.real->qp_num}));
    q.replayed = 0;
    if (std::string e = replay(q, false, table, mtu); !e.empty()) return e;
    if (q.srq != nullptr || q.history.empty()) return "";  // receives need INIT at least
    ibv_qp* r = q.real;
    return repost(q.recvs, "QP", q.pub.qp_num,
                  [r](ibv_recv_wr* w, ibv_recv_wr** b) { return r->context->ops.post_recv(r, w, b); });
  });
  if (!err.empty()) return err;
  t.qpn.setAll(qpns);

  // Own GIDs: each one the application has seen, to the new device's first of its kind.
  std::vector<std::pair<ibv_gid, ibv_gid>> gids;
  Json gidPairs = Json::array();
  for (const ibv_gid& v : c.known_gids) {
    const GidKind k = kindOf(v);
    const ibv_gid* match = nullptr;
    for (const auto& [i, g] : table)
      if (kindOf(g) == k) {
        match = &g;
        break;
      }
    if (match == nullptr) {
      if (!usedAsSource(o, v)) continue;  // seen, never used: nothing to stand for
      return "'" + name + "' has no " + kindName(k) + " GID to stand for " + hex(v) + " (configure an address first)";
    }
    gids.emplace_back(v, *match);
    gidPairs.push_back(Json::array({hex(v), hex(*match)}));
  }
  t.gid.setAll(gids);
  published = Json{{"gids", std::move(gidPairs)}, {"qpns", std::move(qpnPairs)}, {"rkeys", std::move(rkeys)}};
  return "";
}

namespace {

// One member's published object, checked: pairs of the right shape within bounds.
struct PeerIds {
  std::vector<std::pair<ibv_gid, ibv_gid>> gids;
  std::vector<std::pair<uint32_t, uint32_t>> qpns, rkeys;
};

std::optional<PeerIds> parsePeer(const Json& p, std::string& why) {
  PeerIds out;
  if (!p.is_object()) {
    why = "a member's published ids are not an object";
    return std::nullopt;
  }
  auto pairs = [&](const char* key, size_t max, auto&& add) -> bool {
    auto it = p.find(key);
    if (it == p.end()) return true;
    if (!it->is_array() || it->size() > max) {
      why = std::string("a member's '") + key + "' is not an array of at most " + std::to_string(max) + " pairs";
      return false;
    }
    for (const Json& e : *it) {
      if (!e.is_array() || e.size() != 2 || !add(e[0], e[1])) {
        why = std::string("a member's '") + key + "' has a malformed pair";
        return false;
      }
    }
    return true;
  };
  bool ok = pairs("gids", kMaxPeerGids, [&](const Json& v, const Json& r) {
    auto a = gidFromHex(v), b = gidFromHex(r);
    if (!a || !b) return false;
    out.gids.emplace_back(*a, *b);
    return true;
  });
  ok = ok && pairs("qpns", kMaxPeerQpns, [&](const Json& v, const Json& r) {
    auto a = u32(v), b = u32(r);
    if (!a || !b || *a > 0xffffff || *b > 0xffffff) return false;
    out.qpns.emplace_back(*a, *b);
    return true;
  });
  ok = ok && pairs("rkeys", kMaxPeerKeys, [&](const Json& v, const Json& r) {
    auto a = u32(v), b = u32(r);
    if (!a || !b) return false;
    out.rkeys.emplace_back(*a, *b);
    return true;
  });
  if (!ok) return std::nullopt;
  return out;
}

}  // namespace

namespace {

// Replays the rest of every QP's history against the peers' ids in the tables (RTR,
// RTS) and re-creates the address handles. The caller holds o.mutex and the gate.
std::string connectLocked(Objects& o) {
  Translation& t = translation();
  if (o.contexts.empty()) return "";
  ibv_context* ctx = o.contexts.front()->real;
  if (ctx == nullptr) return "the rebuild before this CONNECT failed: no device";
  const auto table = gidTable(ctx);
  const uint32_t mtu = activeMtuOf(ctx);
  std::string err = each(o.qps, [&](ShadowQp& q) { return replay(q, true, table, mtu); });
  if (!err.empty()) return err;
  return each(o.ahs, [&](ShadowAh& a) -> std::string {
    ibv_ah_attr r = a.attr;
    t.avToReal(r);
    if (r.is_global && !isZero(a.sgid)) {
      const int idx = indexOf(table, t.gid.toReal(a.sgid));
      if (idx < 0) return "an address handle's source GID " + hex(a.sgid) + " has no counterpart on the new device";
      r.grh.sgid_index = static_cast<uint8_t>(idx);
    }
    a.real = real().create_ah(a.pd->real, &r);
    if (a.real == nullptr) return std::string("re-creating an address handle: ") + std::strerror(errno);
    a.pub.handle = a.real->handle;
    return "";
  });
}

}  // namespace

std::string connectPeers(const Json& peers) {
  if (!peers.is_array() || peers.size() > 4096) return "CONNECT did not carry an array of the members' ids";
  std::vector<std::pair<ibv_gid, ibv_gid>> gids;
  std::vector<std::pair<PeerId, PeerId>> qpns, rkeys;
  for (const Json& p : peers) {
    std::string why;
    auto ids = parsePeer(p, why);
    if (!ids) return why;
    for (const auto& [vg, rg] : ids->gids) {
      gids.emplace_back(vg, rg);
      for (const auto& [vq, rq] : ids->qpns) qpns.push_back({PeerId{vg, vq}, PeerId{rg, rq}});
      for (const auto& [vk, rk] : ids->rkeys) rkeys.push_back({PeerId{vg, vk}, PeerId{rg, rk}});
    }
  }
  RebuildGateClosed closed;
  if (!closed.ok) return "a poll did not return within 4 s";
  Objects& o = objects();
  std::lock_guard lock(o.mutex);
  Translation& t = translation();
  t.gid.setAll(gids);
  t.peer_qpn.setAll(qpns);
  t.peer_rkey.setAll(rkeys);
  return connectLocked(o);
}

std::string reconnectKnownPeers() {
  RebuildGateClosed closed;
  if (!closed.ok) return "a poll did not return within 4 s";
  Objects& o = objects();
  std::lock_guard lock(o.mutex);
  return connectLocked(o);
}

void wakeArmedCqs() {
  Objects& o = objects();
  std::lock_guard lock(o.mutex);
  for (ShadowCq* cq : o.cqs) {
    if (!cq->owe_event) continue;
    for (ShadowQp* qp : o.qps) {
      const bool connected = (qp->pub.qp_type == IBV_QPT_RC || qp->pub.qp_type == IBV_QPT_UC) &&
                             qp->pub.state == IBV_QPS_RTS && qp->send_cq == cq;
      if (connected && postWakeMarker(*qp)) {
        cq->owe_event = false;
        break;
      }
    }
  }
}

}  // namespace vmckpt::ib
