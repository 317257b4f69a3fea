#include "vmm/libvirt/domain_xml.hpp"

#include <libxml/tree.h>

#include <memory>

#include "common/strings.hpp"
#include "vmm/libvirt/xml_doc.hpp"

namespace vmckpt::vmm::libvirt {

namespace {

using xml::attr;
using xml::firstChild;
using xml::isElement;
using xml::removeNode;

struct BufferFree {
  void operator()(xmlBuffer* b) const { xmlBufferFree(b); }
};

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

}  // namespace

Result<DomainRewrite> applyDeviceMap(std::string_view domainXml, const DeviceMap& map) {
  auto doc = xml::parseDomain(domainXml);
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
