// Readies a libvirt domain for vmckpt by editing its XML (pure: no libvirt API calls), and
// shows the edit as a unified diff for the user to review before it is defined.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/error.hpp"

namespace vmckpt::vmm::libvirt {

struct PrepareResult {
  std::string xml;                   // the edited domain XML (no XML declaration), or the input unchanged
  std::vector<std::string> changes;  // one phrase per change; empty: the domain is ready already
  std::vector<std::string> notes;    // what vmckpt could not change but the user should know
};

// Adds what vmckpt's fast path and guest agent need, changing nothing else:
//  - <memoryBacking><source type='file'/><access mode='shared'/></memoryBacking>: created
//    where libvirt writes it (after <memory>/<currentMemory>/<memtune>) if absent, else
//    completed; another source type (memfd, anonymous) or access mode (private) is replaced.
//    With <hugepages/> the memory backing is left alone, with a note: the fast path needs
//    file-backed memory, so snapshots will be live (background) snapshots. NUMA cells get a
//    note too (the fast path handles a single RAM object only).
//  - <channel type='unix'><source mode='bind'/><target type='virtio' name='org.vmckpt.agent.0'/></channel>
//    appended inside <devices> (created if absent), unless a channel with that target name
//    exists (one that is not a unix virtio channel gets a note). No socket path: libvirt
//    chooses one in its channel directory, and vmckpt reads it from the live XML.
// The output is written as libvirt writes XML (single quotes, two-space indentation kept
// for inserted elements), so that the diff from libvirt's own XML shows only the edits.
// Applying it to its own output changes nothing. Input safety and errors as applyDeviceMap.
Result<PrepareResult> prepareDomainXml(std::string_view domainXml);

// A unified diff like `diff -u` (---/+++ lines with the labels, @@ -a,b +c,d @@ hunks with 3
// lines of context, "\ No newline at end of file"), from a longest common subsequence of
// lines; empty when the texts are equal. Meant for texts of a few thousand lines: past
// that, the part between the common head and tail is shown as removed and re-added.
std::string unifiedDiff(std::string_view before, std::string_view after, std::string_view labelBefore,
                        std::string_view labelAfter);

}  // namespace vmckpt::vmm::libvirt
