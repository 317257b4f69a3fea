#include "vmm/libvirt/domain_inspect.hpp"

#include "common/strings.hpp"
#include "vmm/libvirt/xml_doc.hpp"

namespace vmckpt::vmm::libvirt {

using xml::attr;
using xml::firstChild;
using xml::isElement;

namespace {

DomainDisk readDisk(xmlNode* disk) {
  DomainDisk d;
  d.device = attr(disk, "device");
  if (d.device.empty()) d.device = "disk";
  d.type = attr(disk, "type");
  if (d.type.empty()) d.type = "file";
  if (xmlNode* source = firstChild(disk, "source")) {
    if (d.type == "file") d.source = attr(source, "file");
    if (d.type == "block") d.source = attr(source, "dev");
  }
  if (xmlNode* driver = firstChild(disk, "driver")) d.format = attr(driver, "type");
  if (xmlNode* target = firstChild(disk, "target")) d.target = attr(target, "dev");
  d.readonly = firstChild(disk, "readonly") || d.device == "cdrom";
  d.shareable = firstChild(disk, "shareable") != nullptr;
  return d;
}

bool isAgentChannel(xmlNode* channel) {
  xmlNode* target = firstChild(channel, "target");
  return attr(channel, "type") == "unix" && target && attr(target, "type") == "virtio" &&
         attr(target, "name") == kAgentChannelName;
}

// A <qemu:commandline> (whatever the prefix) directly under <domain>: the only place libvirt reads one.
bool isQemuCommandline(const xmlNode* n) {
  return xml::isElementNs(n, kQemuXmlNamespace, "commandline");
}

// A prefix for the QEMU namespace that is not bound on <domain> to another namespace.
std::string freeQemuPrefix(xmlDoc* doc, xmlNode* root) {
  std::string prefix = "qemu";
  for (int i = 1; xmlSearchNs(doc, root, BAD_CAST prefix.c_str()); ++i) prefix = cat("qemu", i);
  return prefix;
}

}  // namespace

Result<DomainInfo> inspectDomainXml(std::string_view text) {
  auto doc = xml::parseDomain(text);
  if (!doc) return fail(doc.error());
  xmlNode* root = xmlDocGetRootElement(doc->get());
  DomainInfo info;
  info.type = attr(root, "type");
  if (xmlNode* name = firstChild(root, "name")) info.name = xml::text(name);
  if (xmlNode* uuid = firstChild(root, "uuid")) info.uuid = xml::text(uuid);
  if (xmlNode* backing = firstChild(root, "memoryBacking")) {
    if (xmlNode* source = firstChild(backing, "source")) info.memorySource = attr(source, "type");
    xmlNode* access = firstChild(backing, "access");
    info.memoryFileShared = info.memorySource == "file" && access && attr(access, "mode") == "shared";
    info.hugepages = firstChild(backing, "hugepages") != nullptr;
  }
  if (xmlNode* cpu = firstChild(root, "cpu")) info.numa = firstChild(cpu, "numa") != nullptr;
  if (xmlNode* os = firstChild(root, "os")) info.kernelBoot = firstChild(os, "kernel") != nullptr;
  // Every <devices>, as libvirt's XPath ./devices/disk sees them.
  for (xmlNode* devices = root->children; devices; devices = devices->next) {
    if (!isElement(devices, "devices")) continue;
    for (xmlNode* c = devices->children; c; c = c->next) {
      if (isElement(c, "disk")) {
        info.disks.push_back(readDisk(c));
      } else if (isElement(c, "hostdev")) {
        ++info.hostdevs;
      } else if (isElement(c, "channel") && !info.agentChannel && isAgentChannel(c)) {
        info.agentChannel = true;
        // A socket QEMU connects to (mode='connect') is not one vmckpt can connect to.
        xmlNode* source = firstChild(c, "source");
        std::string mode = source ? attr(source, "mode") : std::string();
        if (source && (mode.empty() || mode == "bind")) info.agentSocket = attr(source, "path");
      }
    }
  }
  return info;
}

Result<std::string> withIncomingDefer(std::string_view text) {
  auto doc = xml::parseDomain(text);
  if (!doc) return fail(doc.error());
  xmlNode* root = xmlDocGetRootElement(doc->get());
  xmlNode* commandline = nullptr;
  for (xmlNode* c = root->children; c; c = c->next) {
    if (!isQemuCommandline(c)) continue;
    if (!commandline) commandline = c;
    for (xmlNode* arg = c->children; arg; arg = arg->next) {
      if (!xml::isElementNs(arg, kQemuXmlNamespace, "arg")) continue;
      std::string value = attr(arg, "value");
      // QEMU takes its options with one dash or two.
      if (value == "-incoming" || value == "--incoming")
        return fail(Errc::invalidArgument, "domain XML: <qemu:commandline> already passes QEMU -incoming");
    }
  }
  if (!commandline) {
    xmlNs* ns = xmlSearchNsByHref(doc->get(), root, BAD_CAST kQemuXmlNamespace);
    if (!ns || !ns->prefix) ns = xmlNewNs(root, BAD_CAST kQemuXmlNamespace, BAD_CAST freeQemuPrefix(doc->get(), root).c_str());
    if (!ns) return fail(Errc::internal, "domain XML: declaring the qemu namespace failed");
    commandline = xmlNewDocNode(doc->get(), ns, BAD_CAST "commandline", nullptr);
    xml::appendChild(root, commandline);  // where libvirt writes it: last
  }
  for (const char* value : {"-incoming", "defer"}) {
    xmlNode* arg = xmlNewDocNode(doc->get(), commandline->ns, BAD_CAST "arg", nullptr);
    xmlNewProp(arg, BAD_CAST "value", BAD_CAST value);
    xml::appendChild(commandline, arg);
  }
  return xml::formatLibvirtStyle(root);
}

}  // namespace vmckpt::vmm::libvirt
