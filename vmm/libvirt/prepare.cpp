#include "vmm/libvirt/prepare.hpp"

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <span>

#include "common/strings.hpp"
#include "vmm/libvirt/domain_inspect.hpp"
#include "vmm/libvirt/xml_doc.hpp"

namespace vmckpt::vmm::libvirt {

using xml::attr;
using xml::firstChild;
using xml::isElement;

namespace {

// An attribute value from the input, made safe to print in a change phrase: no C0 or C1
// control characters (terminal escapes), at most 64 bytes, cut at a UTF-8 character boundary
// (libxml2 hands out valid UTF-8, and a JSON writer refuses anything else).
std::string printable(std::string_view value) {
  size_t cut = std::min<size_t>(value.size(), 64);
  while (cut > 0 && cut < value.size() && (static_cast<unsigned char>(value[cut]) & 0xc0) == 0x80) --cut;
  std::string out;
  for (size_t i = 0; i < cut; ++i) {
    auto ch = static_cast<unsigned char>(value[i]);
    if (ch == 0xc2 && i + 1 < cut && static_cast<unsigned char>(value[i + 1]) < 0xa0) {  // U+0080..U+009F
      out += '?';
      ++i;
    } else {
      out += (ch < 0x20 || ch == 0x7f) ? '?' : value[i];
    }
  }
  if (cut < value.size()) out += "...";
  return out;
}

bool isAnyOf(const xmlNode* n, std::initializer_list<const char*> names) {
  for (const char* name : names)
    if (isElement(n, name)) return true;
  return false;
}

xmlNode* newElement(xmlNode* near, const char* name, const char* attrName = nullptr, const char* attrValue = nullptr) {
  xmlNode* n = xmlNewDocNode(near->doc, nullptr, BAD_CAST name, nullptr);
  if (attrName) xmlNewProp(n, BAD_CAST attrName, BAD_CAST attrValue);
  return n;
}

// Places a new <memoryBacking> where libvirt writes it: after the memory sizes and tunables,
// else after the domain's names, else first.
xmlNode* addMemoryBacking(xmlNode* root) {
  xmlNode* backing = newElement(root, "memoryBacking");
  xmlNode* after = nullptr;
  for (xmlNode* c = root->children; c; c = c->next)
    if (isAnyOf(c, {"maxMemory", "memory", "currentMemory", "blkiotune", "memtune"})) after = c;
  if (!after)
    for (xmlNode* c = root->children; c; c = c->next)
      if (isAnyOf(c, {"name", "uuid", "genid", "title", "description", "metadata"})) after = c;
  xmlNode* firstElement = root->children;
  while (firstElement && firstElement->type != XML_ELEMENT_NODE) firstElement = firstElement->next;
  if (after)
    xml::insertAfter(after, backing);
  else if (firstElement)
    xml::insertBefore(firstElement, backing);
  else
    xml::appendChild(root, backing);
  return backing;
}

// <memoryBacking>'s child <NAME KEY='VALUE'/>: added when missing, its KEY set when it differs.
void requireChild(xmlNode* root, xmlNode* backing, const char* name, const char* key, const char* value,
                  PrepareResult& out) {
  if (xmlNode* child = firstChild(backing, name); !child) {
    xml::appendChild(backing, newElement(root, name, key, value));
    out.changes.push_back(cat("added <", name, " ", key, "='", value, "'/> to <memoryBacking>"));
  } else if (std::string was = attr(child, key); was != value) {
    xmlSetProp(child, BAD_CAST key, BAD_CAST value);
    out.changes.push_back(cat("<memoryBacking>: <", name, was.empty() ? "" : cat(" ", key, "='"), printable(was),
                              was.empty() ? "" : "'", "/> -> <", name, " ", key, "='", value, "'/>"));
  }
}

void prepareMemoryBacking(xmlNode* root, PrepareResult& out) {
  xmlNode* backing = firstChild(root, "memoryBacking");
  if (backing && firstChild(backing, "hugepages")) {
    out.notes.push_back(
        "<memoryBacking> has <hugepages/>, left as it is: the fast path needs file-backed memory, so snapshots of "
        "this domain will be live (background) snapshots");
    return;
  }
  if (!backing) backing = addMemoryBacking(root);
  requireChild(root, backing, "source", "type", "file", out);
  requireChild(root, backing, "access", "mode", "shared", out);
}

// A new <devices> goes before what libvirt writes after it (security labels, namespaced
// extensions such as <qemu:commandline>), else last.
xmlNode* addDevices(xmlNode* root) {
  xmlNode* devices = newElement(root, "devices");
  for (xmlNode* c = root->children; c; c = c->next) {
    if (isAnyOf(c, {"seclabel", "keywrap", "launchSecurity"}) || (c->type == XML_ELEMENT_NODE && c->ns)) {
      xml::insertBefore(c, devices);
      return devices;
    }
  }
  xml::appendChild(root, devices);
  return devices;
}

void prepareAgentChannel(xmlNode* root, PrepareResult& out) {
  xmlNode* firstDevices = nullptr;
  for (xmlNode* devices = root->children; devices; devices = devices->next) {
    if (!isElement(devices, "devices")) continue;
    if (!firstDevices) firstDevices = devices;
    for (xmlNode* c = devices->children; c; c = c->next) {
      xmlNode* target = isElement(c, "channel") ? firstChild(c, "target") : nullptr;
      if (!target || attr(target, "name") != kAgentChannelName) continue;
      if (attr(c, "type") != "unix" || attr(target, "type") != "virtio")
        out.notes.push_back(cat("the <channel> named ", kAgentChannelName,
                                " is not a unix virtio channel: vmckpt cannot reach its guest agent through it"));
      return;
    }
  }
  xmlNode* devices = firstDevices ? firstDevices : addDevices(root);
  xmlNode* channel = newElement(root, "channel", "type", "unix");
  xml::appendChild(devices, channel);
  xml::appendChild(channel, newElement(root, "source", "mode", "bind"));
  xmlNode* target = newElement(root, "target", "type", "virtio");
  xmlNewProp(target, BAD_CAST "name", BAD_CAST kAgentChannelName);
  xml::appendChild(channel, target);
  out.changes.push_back(cat("added <channel type='unix'> ", kAgentChannelName, " for the vmckpt guest agent"));
}

}  // namespace

Result<PrepareResult> prepareDomainXml(std::string_view domainXml) {
  auto doc = xml::parseDomain(domainXml);
  if (!doc) return fail(doc.error());
  xmlNode* root = xmlDocGetRootElement(doc->get());
  PrepareResult out;
  prepareMemoryBacking(root, out);
  if (xmlNode* cpu = firstChild(root, "cpu"); cpu && firstChild(cpu, "numa"))
    out.notes.push_back(
        "<cpu><numa> gives the domain one RAM object per NUMA cell: the fast path handles a single one, so snapshots "
        "of this domain will be live (background) snapshots");
  prepareAgentChannel(root, out);
  out.xml = out.changes.empty() ? std::string(domainXml) : xml::formatLibvirtStyle(root);
  return out;
}

namespace {

constexpr size_t kContextLines = 3;
// The LCS table's size limit (32 MiB of uint16_t); within it the shorter side has fewer
// than 4096 lines, so a common subsequence's length fits in uint16_t.
constexpr size_t kMaxLcsCells = size_t{1} << 24;

// Lines with their '\n' (the last one may have none, which makes it differ from the same
// text with one, as in diff).
std::vector<std::string_view> splitLines(std::string_view s) {
  std::vector<std::string_view> lines;
  for (size_t start = 0; start < s.size();) {
    size_t nl = s.find('\n', start);
    size_t end = nl == s.npos ? s.size() : nl + 1;
    lines.push_back(s.substr(start, end - start));
    start = end;
  }
  return lines;
}

struct DiffLine {
  char kind;  // ' ' in both, '-' only before, '+' only after
  std::string_view text;
};

// The middle between common head and tail, aligned by a longest common subsequence.
void diffMiddle(std::span<const std::string_view> a, std::span<const std::string_view> b, std::vector<DiffLine>& out) {
  const size_t n = a.size(), m = b.size();
  if ((n + 1) * (m + 1) > kMaxLcsCells) {
    for (auto line : a) out.push_back({'-', line});
    for (auto line : b) out.push_back({'+', line});
    return;
  }
  // lcs[i][j]: length of a longest common subsequence of a[i..] and b[j..].
  std::vector<uint16_t> lcs((n + 1) * (m + 1), 0);
  auto at = [&](size_t i, size_t j) -> uint16_t& { return lcs[i * (m + 1) + j]; };
  for (size_t i = n; i-- > 0;)
    for (size_t j = m; j-- > 0;)
      at(i, j) = a[i] == b[j] ? static_cast<uint16_t>(at(i + 1, j + 1) + 1) : std::max(at(i + 1, j), at(i, j + 1));
  size_t i = 0, j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && a[i] == b[j]) {
      out.push_back({' ', a[i]});
      ++i, ++j;
    } else if (j == m || (i < n && at(i + 1, j) >= at(i, j + 1))) {
      out.push_back({'-', a[i++]});
    } else {
      out.push_back({'+', b[j++]});
    }
  }
}

std::vector<DiffLine> diffLines(const std::vector<std::string_view>& a, const std::vector<std::string_view>& b) {
  size_t head = 0;
  while (head < a.size() && head < b.size() && a[head] == b[head]) ++head;
  size_t tail = 0;
  while (tail < a.size() - head && tail < b.size() - head && a[a.size() - 1 - tail] == b[b.size() - 1 - tail]) ++tail;
  std::vector<DiffLine> out;
  for (size_t i = 0; i < head; ++i) out.push_back({' ', a[i]});
  diffMiddle(std::span(a).subspan(head, a.size() - head - tail), std::span(b).subspan(head, b.size() - head - tail), out);
  for (size_t i = a.size() - tail; i < a.size(); ++i) out.push_back({' ', a[i]});
  // Like diff, a block of only added (or only removed) lines moves down while the line after
  // it equals its first: a block inserted after "</x>" then shows as "<y>...</y>", not "</x><y>...".
  for (size_t start = 0; start < out.size();) {
    if (out[start].kind == ' ') {
      ++start;
      continue;
    }
    size_t end = start;
    while (end < out.size() && out[end].kind == out[start].kind) ++end;
    if (end < out.size() && out[end].kind != ' ') {  // removed and added lines mixed: left in place
      while (end < out.size() && out[end].kind != ' ') ++end;
    } else {
      for (; end < out.size() && out[end].kind == ' ' && out[end].text == out[start].text; ++start, ++end)
        std::swap(out[start].kind, out[end].kind);
    }
    start = end;
  }
  // As diff shows a change: the removed lines, then the added ones.
  for (auto it = out.begin(); it != out.end();) {
    auto end = std::find_if(it, out.end(), [](const DiffLine& l) { return l.kind == ' '; });
    std::stable_partition(it, end, [](const DiffLine& l) { return l.kind == '-'; });
    it = end == out.end() ? end : end + 1;
  }
  return out;
}

// diff's range: "start,count", "start" for one line, and for none the line before it.
std::string range(size_t before, size_t count) {
  if (count == 0) return cat(before, ",0");
  if (count == 1) return cat(before + 1);
  return cat(before + 1, ",", count);
}

}  // namespace

std::string unifiedDiff(std::string_view before, std::string_view after, std::string_view labelBefore,
                        std::string_view labelAfter) {
  const std::vector<DiffLine> lines = diffLines(splitLines(before), splitLines(after));
  const size_t n = lines.size();
  std::string out;
  size_t aLine = 0, bLine = 0;  // lines of each side before lines[i]
  size_t i = 0;
  while (i < n) {
    size_t change = i;
    while (change < n && lines[change].kind == ' ') ++change;
    if (change == n) break;
    if (out.empty()) out = cat("--- ", labelBefore, "\n+++ ", labelAfter, "\n");
    const size_t start = std::max(i, change >= kContextLines ? change - kContextLines : 0);
    for (; i < start; ++i) ++aLine, ++bLine;
    // Changes with at most twice the context between them share a hunk.
    size_t end = change;
    for (;;) {
      while (end < n && lines[end].kind != ' ') ++end;
      size_t next = end;
      while (next < n && lines[next].kind == ' ') ++next;
      if (next < n && next - end <= 2 * kContextLines) {
        end = next;
        continue;
      }
      end = std::min(next, end + kContextLines);
      break;
    }
    size_t aCount = 0, bCount = 0;
    for (size_t k = start; k < end; ++k) {
      aCount += lines[k].kind != '+';
      bCount += lines[k].kind != '-';
    }
    out += cat("@@ -", range(aLine, aCount), " +", range(bLine, bCount), " @@\n");
    for (; i < end; ++i) {
      out += lines[i].kind;
      out += lines[i].text;
      if (lines[i].text.empty() || lines[i].text.back() != '\n') out += "\n\\ No newline at end of file\n";
    }
    aLine += aCount;
    bLine += bCount;
  }
  return out;
}

}  // namespace vmckpt::vmm::libvirt
