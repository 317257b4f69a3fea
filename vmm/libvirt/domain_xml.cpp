#include "vmm/libvirt/domain_xml.hpp"

#include <libxml/parser.h>
#include <libxml/tree.h>

#include <memory>

#include "common/strings.hpp"

namespace vmckpt::vmm::libvirt {

namespace {

struct DocFree {
  void operator()(xmlDoc* d) const { xmlFreeDoc(d); }
};
using DocPtr = std::unique_ptr<xmlDoc, DocFree>;

struct BufferFree {
  void operator()(xmlBuffer* b) const { xmlBufferFree(b); }
};

bool isElement(const xmlNode* n, const char* name) {
  return n->type == XML_ELEMENT_NODE && xmlStrcmp(n->name, BAD_CAST name) == 0;
}

std::string attr(xmlNode* n, const char* name) {
  xmlChar* v = xmlGetProp(n, BAD_CAST name);
  if (!v) return {};
  std::string s(reinterpret_cast<const char*>(v));
  xmlFree(v);
  return s;
}

xmlNode* firstChild(xmlNode* n, const char* name) {
  for (xmlNode* c = n->children; c; c = c->next)
    if (isElement(c, name)) return c;
  return nullptr;
}

// Removes a node and the indentation before it, so that no blank line is left.
void removeNode(xmlNode* n) {
  xmlNode* prev = n->prev;
  if (prev && prev->type == XML_TEXT_NODE && xmlIsBlankNode(prev)) {
    xmlUnlinkNode(prev);
    xmlFreeNode(prev);
  }
  xmlUnlinkNode(n);
  xmlFreeNode(n);
}

// "0000:3b:00.0" from <hostdev><source><address domain= bus= slot= function=/></source>.
std::string pciAddress(xmlNode* hostdev) {
  xmlNode* source = firstChild(hostdev, "source");
  xmlNode* address = source ? firstChild(source, "address") : nullptr;
  if (!address) return "?";
  return cat(attr(address, "domain"), ":", attr(address, "bus"), ":", attr(address, "slot"), ".",
             attr(address, "function"));
}

void removePciHostdevs(xmlNode* devices, const std::string& why, std::vector<std::string>& changes) {
  for (xmlNode* c = devices->children; c;) {
    xmlNode* next = c->next;
    if (isElement(c, "hostdev") && attr(c, "mode") != "capabilities" && attr(c, "type") == "pci") {
      changes.push_back(cat("removed hostdev pci ", pciAddress(c), " (", why, ")"));
      removeNode(c);
    }
    c = next;
  }
}

// What the guest sees of an interface, which libvirt requires to stay the same across a
// restore or migration (its ABI check): everything else describes the host's backend.
bool guestVisible(const xmlNode* n) {
  for (const char* name : {"mac", "model", "address", "alias", "boot", "rom", "mtu"})
    if (isElement(n, name)) return true;
  return false;
}

// Each <interface> becomes <interface type='user'> with its guest-visible children (a
// virtio model where it had none), or is removed (net=none).
void replaceInterfaces(xmlNode* devices, bool keep, std::vector<std::string>& changes) {
  for (xmlNode* c = devices->children; c;) {
    xmlNode* next = c->next;
    if (isElement(c, "interface")) {
      xmlNode* mac = firstChild(c, "mac");
      std::string address = mac ? attr(mac, "address") : std::string();
      std::string was = cat("interface ", attr(c, "type"), address.empty() ? "" : " ", address);
      if (!keep) {
        changes.push_back(cat("removed ", was, " (net=none)"));
        removeNode(c);
      } else {
        xmlNode* repl = xmlNewNode(nullptr, BAD_CAST "interface");
        xmlSetProp(repl, BAD_CAST "type", BAD_CAST "user");
        for (xmlNode* k = c->children; k; k = k->next)
          if (guestVisible(k)) xmlAddChild(repl, xmlCopyNode(k, 1));
        if (!firstChild(repl, "model"))
          xmlSetProp(xmlNewChild(repl, nullptr, BAD_CAST "model", nullptr), BAD_CAST "type", BAD_CAST "virtio");
        xmlReplaceNode(c, repl);
        xmlFreeNode(c);
        changes.push_back(cat(was, " -> user (net=user)"));
      }
    }
    c = next;
  }
}

Result<DocPtr> parseDomain(std::string_view text) {
  if (text.size() > kMaxDomainXmlBytes)
    return fail(Errc::invalidArgument, cat("domain XML is ", text.size(), " bytes, more than the ", kMaxDomainXmlBytes,
                                           " allowed"));
  // No XML_PARSE_NOENT (entities stay references), no DTD loading, no network; errors
  // are taken from xmlGetLastError instead of being printed.
  const int options = XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING;
  xmlResetLastError();
  DocPtr doc(xmlReadMemory(text.data(), static_cast<int>(text.size()), "domain.xml", nullptr, options));
  if (!doc) {
    const xmlError* e = xmlGetLastError();
    std::string why = e && e->message ? std::string(trim(e->message)) : "not well-formed";
    return fail(Errc::invalidArgument, cat("domain XML: line ", e ? e->line : 0, ": ", why));
  }
  if (doc->intSubset || doc->extSubset)
    return fail(Errc::invalidArgument, "domain XML: a DOCTYPE is not accepted in a libvirt domain");
  xmlNode* root = xmlDocGetRootElement(doc.get());
  if (!root || !isElement(root, "domain"))
    return fail(Errc::invalidArgument, "domain XML: the root element is not <domain>");
  return doc;
}

}  // namespace

Result<DomainRewrite> applyDeviceMap(std::string_view domainXml, const DeviceMap& map) {
  auto doc = parseDomain(domainXml);
  if (!doc) return fail(doc.error());
  xmlNode* root = xmlDocGetRootElement(doc->get());
  xmlNode* devices = firstChild(root, "devices");
  DomainRewrite out;

  if (auto gpu = map.find("gpu"); gpu != map.end()) {
    if (gpu->second != "none")
      return fail(Errc::unsupported, cat("device map gpu=", gpu->second, ": only gpu=none can be applied to a libvirt domain"));
    if (devices) removePciHostdevs(devices, "gpu=none", out.changes);
  }
  if (auto ib = map.find("ib"); ib != map.end() && devices) removePciHostdevs(devices, cat("ib=", ib->second), out.changes);
  if (auto net = map.find("net"); net != map.end()) {
    if (net->second != "user" && net->second != "none")
      return fail(Errc::unsupported,
                  cat("device map net=", net->second, ": only net=user and net=none can be applied to a libvirt domain"));
    if (devices) replaceInterfaces(devices, net->second == "user", out.changes);
  }

  std::unique_ptr<xmlBuffer, BufferFree> buf(xmlBufferCreate());
  if (!buf || xmlNodeDump(buf.get(), doc->get(), root, 0, 0) < 0)
    return fail(Errc::internal, "domain XML: serializing the rewritten domain failed");
  out.xml.assign(reinterpret_cast<const char*>(xmlBufferContent(buf.get())), xmlBufferLength(buf.get()));
  out.xml += '\n';
  return out;
}

}  // namespace vmckpt::vmm::libvirt
