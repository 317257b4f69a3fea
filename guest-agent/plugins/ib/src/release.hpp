// Teardown before capture (the release), for a group snapshot: after the drain
// (drain.hpp), every verbs object of this process is destroyed and the device closed,
// so no /dev/infiniband fd is open while the guest is captured and nothing in the
// snapshot depends on the HCA's state. The application keeps its shadows and its fd
// numbers: each of the device's and the channels' numbers holds an eventfd that never
// fires until the rebuild (rebuild.hpp) dup2s the new device's files onto it.
//
// A released process can only continue through a rebuild, and its QPs only reconnect
// once its peers published their new ids: the host follows a release with its group
// rounds (thaw with connect_follows, connect, thaw), both after the snapshot and when
// one is rolled back.
#pragma once

#include <string>

#include "objects.hpp"

namespace vmckpt::ib {

// Releases every object of this process (the gate must be closed, the queues drained).
// "" on success, else a one-line reason; it refuses before destroying anything when a
// rebuild could not bring the objects back (several devices, a QP history too long).
std::string releaseDevice();

// The first /dev/infiniband file this process still has open, as "fd N (PATH)"; "" when
// none.
std::string deviceFdStillOpen();

// Internal to the rebuild (the caller holds o.mutex and the rebuild gate).
// Destroys what `c`'s device holds, in dependency order, and closes it; real pointers
// become null, so the data path answers without touching freed memory.
void releaseObjects(Objects& o, ShadowContext& c);
// The application's fd number `visible` (closed with the old device, or a copy of ours:
// Objects::owned_numbers) for the new file `fresh`: dup3 onto it when it is free or
// ours (never onto a number something else took meanwhile; then the application sees
// `fresh`).
int keepFdNumber(Objects& o, int visible, int fresh);
// What arrived after the drain's last poll (a peer's sends, acknowledged before its own
// drain ended) is still on the CQs: into the backlogs, or it would be lost with them.
// False when a poll failed.
bool lastPollIntoBacklogs(Objects& o);
// Why a rebuild could not bring this process's objects back ("" when it can).
std::string rebuildRefusal(const Objects& o);

}  // namespace vmckpt::ib
