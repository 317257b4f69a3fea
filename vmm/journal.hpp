// The operation journal of one VM (journal.json in its directory): written before an
// operation can leave the guest paused or frozen, or the VM directory half-changed, and
// removed when the operation has finished or rolled back. A command that finds one holds
// the VM lock, so the writer is gone (killed, or its host crashed): VmManager::recover
// finishes or rolls back what it describes.
#pragma once

#include <optional>
#include <string>

#include "common/error.hpp"
#include "vmm/store_root.hpp"

namespace vmckpt::vmm {

enum class JournalOp { snapshot, restore, migrate };

struct JournalEntry {
  JournalOp op = JournalOp::snapshot;
  std::string snapshotId;  // snapshot: the one being made; restore: the one restored
  bool guestWasRunning = false;  // snapshot: resume it if it is found paused
  bool quiesced = false;         // snapshot, migrate: the agent froze the guest; thaw it
  bool unplugged = false;        // snapshot: passthrough devices were being unplugged; plug back what is missing
  bool keepPaused = false;       // restore --paused
  std::string freshLive;         // restore in place: the clone, then live/ (a name in the VM dir)
  std::string oldLive;           // restore in place: the replaced live/ (a name in the VM dir)
  std::string peer;              // migrate: where to (host:port, for the messages)
  long pid = 0;                  // the vmckpt process that wrote it
  std::string started;           // ISO 8601 UTC
};

// Atomic replace (write, fsync, rename, fsync dir).
Status writeJournal(const VmPaths& p, const JournalEntry& e);
// nullopt when there is none. A damaged journal is Errc::corrupt: recovery then works from
// what it finds on disk alone.
Result<std::optional<JournalEntry>> readJournal(const VmPaths& p);
Status clearJournal(const VmPaths& p);

// Names the journal may hold for directories inside the VM directory: a fixed prefix and
// no path separators, so a damaged or planted journal cannot point recovery elsewhere.
bool isRestoreScratchName(const std::string& name);

std::string_view journalOpName(JournalOp op);

}  // namespace vmckpt::vmm
