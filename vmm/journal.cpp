#include "vmm/journal.hpp"

#include <algorithm>

#include <nlohmann/json.hpp>

#include "common/fs.hpp"
#include "common/strings.hpp"

namespace vmckpt::vmm {
namespace {

constexpr int kJournalFormat = 1;
constexpr size_t kMaxJournalBytes = 64 << 10;

}  // namespace

std::string_view journalOpName(JournalOp op) {
  switch (op) {
    case JournalOp::snapshot: return "snapshot";
    case JournalOp::restore: return "restore";
    case JournalOp::migrate: return "migrate";
  }
  return "unknown";
}

bool isRestoreScratchName(const std::string& name) {
  if (name.empty() || name.size() > 128 || name.find('/') != std::string::npos) return false;
  return startsWith(name, ".live-restore-") || startsWith(name, ".live-old-");
}

Status writeJournal(const VmPaths& p, const JournalEntry& e) {
  nlohmann::json j = {{"format", kJournalFormat},
                      {"op", journalOpName(e.op)},
                      {"snapshot", e.snapshotId},
                      {"guest_was_running", e.guestWasRunning},
                      {"quiesced", e.quiesced},
                      {"unplugged", e.unplugged},
                      {"keep_paused", e.keepPaused},
                      {"fresh_live", e.freshLive},
                      {"old_live", e.oldLive},
                      {"peer", e.peer},
                      {"pid", e.pid},
                      {"started", e.started}};
  return fs::writeFileAtomic(p.journal, j.dump(2) + "\n");
}

Result<std::optional<JournalEntry>> readJournal(const VmPaths& p) {
  if (!fs::exists(p.journal)) return std::optional<JournalEntry>();
  auto text = fs::readFile(p.journal, kMaxJournalBytes);
  if (!text) return fail(text.error());
  auto j = nlohmann::json::parse(*text, nullptr, false);
  auto bad = [&](std::string_view why) { return fail(Errc::corrupt, cat(p.journal, ": ", why)); };
  if (!j.is_object()) return bad("not a JSON object");
  if (j.value("format", 0) != kJournalFormat) return bad("unknown format");
  JournalEntry e;
  try {
    std::string op = j.at("op").get<std::string>();
    if (op == "snapshot") e.op = JournalOp::snapshot;
    else if (op == "restore") e.op = JournalOp::restore;
    else if (op == "migrate") e.op = JournalOp::migrate;
    else return bad(cat("unknown operation '", op.substr(0, 40), "'"));
    e.snapshotId = j.value("snapshot", "");
    e.guestWasRunning = j.value("guest_was_running", false);
    e.quiesced = j.value("quiesced", false);
    e.unplugged = j.value("unplugged", false);
    e.keepPaused = j.value("keep_paused", false);
    e.freshLive = j.value("fresh_live", "");
    e.oldLive = j.value("old_live", "");
    e.peer = j.value("peer", "");
    e.pid = j.value("pid", 0L);
    e.started = j.value("started", "");
  } catch (const nlohmann::json::exception&) {
    return bad("a field has the wrong type");
  }
  if (e.snapshotId.find('/') != std::string::npos || e.snapshotId.size() > 128) return bad("bad snapshot id");
  bool peerOk = e.peer.size() <= 300 && std::all_of(e.peer.begin(), e.peer.end(), [](char c) { return c > ' ' && c < 127; });
  if (!peerOk) return bad("bad peer address");
  for (const auto* n : {&e.freshLive, &e.oldLive})
    if (!n->empty() && !isRestoreScratchName(*n)) return bad(cat("bad directory name '", n->substr(0, 40), "'"));
  return std::optional<JournalEntry>(std::move(e));
}

Status clearJournal(const VmPaths& p) { return fs::removeFile(p.journal); }

}  // namespace vmckpt::vmm
