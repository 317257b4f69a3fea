// Internal to vmm/libvirt: parsing a libvirt domain XML as untrusted input, finding and
// editing its elements with libxml2, and writing it back the way libvirt formats it.
#pragma once

#include <libxml/tree.h>

#include <memory>
#include <string>
#include <string_view>

#include "common/error.hpp"

namespace vmckpt::vmm::libvirt::xml {

struct DocFree {
  void operator()(xmlDoc* d) const { xmlFreeDoc(d); }
};
using DocPtr = std::unique_ptr<xmlDoc, DocFree>;

// Size-capped (kMaxDomainXmlBytes), no network, no entity expansion, no DOCTYPE at all,
// root <domain>. Errors are Errc::invalidArgument, on one line.
Result<DocPtr> parseDomain(std::string_view text);

// An element of libvirt's own vocabulary, which has no namespace (libvirt's XPath lookups
// do not see <x:disk> either).
bool isElement(const xmlNode* n, const char* name);
// An element `name` in the namespace `href` (e.g. libvirt's qemu:commandline), whatever its prefix.
bool isElementNs(const xmlNode* n, const char* href, const char* name);
xmlNode* firstChild(xmlNode* n, const char* name);
// The attribute's value; empty when absent.
std::string attr(xmlNode* n, const char* name);
// The element's text content.
std::string text(xmlNode* n);

// Removes a node and the indentation before it, so that no blank line is left.
void removeNode(xmlNode* n);

// Insert `n` (a new, unlinked element) into the tree with the line break and indentation its
// neighbours have, so that the output keeps libvirt's layout; a document written without
// line breaks stays without. appendChild indents one level (two spaces) deeper than `parent`.
void insertAfter(xmlNode* ref, xmlNode* n);
void insertBefore(xmlNode* ref, xmlNode* n);
void appendChild(xmlNode* parent, xmlNode* n);

// The element and its subtree as libvirt writes XML (attributes in single quotes, & < > ' "
// escaped, empty elements as <x/>), so that a document libvirt wrote comes back identical
// except where it was edited; with a trailing newline.
std::string formatLibvirtStyle(const xmlNode* root);

}  // namespace vmckpt::vmm::libvirt::xml
