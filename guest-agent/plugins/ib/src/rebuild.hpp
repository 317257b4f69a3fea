// The rebuild after a group restore or a group snapshot's release (release.hpp), in the
// two rounds the host drives (restore --group; snapshot --group after its resume):
//
//   RESTART or RESUME (connect follows)  rebuildLocal: close the device the guest was
//       captured with (unless released already), open the one the device map names
//       (or the same one again), re-create PD, MR (the same buffers), channel, CQ
//       (re-armed), SRQ and QP with the recorded
//       attributes, replay each QP's modify history up to the step that needs its
//       peer (RTR of RC/UC), post the recorded receives again, and publish the new
//       real ids: {"gids": [[v, r]...], "qpns": [[v, r]...], "rkeys": [[v, r]...]}
//       (GIDs as 32 hex digits, v the id the application holds, r the new device's).
//   CONNECT  connectPeers: learn every member's published ids, replay the rest of each
//       QP's history against the peers' new ids (RTR, RTS), re-create the address
//       handles. The gate stays closed: the host's RESUME, sent to every member once all
//       have connected, opens it, so no member sends to a peer not ready to receive.
//
// Sends: after the drain (drain.hpp) every RC/UC send has completed, so none is posted
// again. An application's own GIDs map to the new device's GID of the same kind (IPv4-
// mapped, link-local, other): the first such GID of port 1.
#pragma once

#include <nlohmann/json.hpp>

#include <string>

namespace vmckpt::ib {

// `device`: the verbs device to rebuild on; empty for the one open now (or before the
// release). "" on success, else a one-line reason. A `device` this guest lacks: the
// rebuild is on the one it had, saying so on stderr.
std::string rebuildLocal(const std::string& device, nlohmann::json& published);
// `peers`: the array of every member's published object (ours included).
std::string connectPeers(const nlohmann::json& peers);
// A plain RESUME after a release (the host rolled back without its rounds, or an older
// host): after rebuildLocal, connect with the peers' ids as known before the release.
// Reaches the peers that did not rebuild; the host's rounds fix the rest.
std::string reconnectKnownPeers();
// RESUME after CONNECT (every member connected): each CQ that was armed when its old
// channel died gets a completion (a marker on a connected QP that sends to it), so the
// application's wait on the channel, poll() on its fd included, wakes up and finds
// what the drain kept in the backlog. A CQ no connected QP sends to keeps the event
// ibv_get_cq_event hands out without the device.
void wakeArmedCqs();

}  // namespace vmckpt::ib
