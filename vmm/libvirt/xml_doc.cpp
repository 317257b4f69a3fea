#include "vmm/libvirt/xml_doc.hpp"

#include <libxml/parser.h>

#include "common/strings.hpp"
#include "vmm/libvirt/domain_xml.hpp"

namespace vmckpt::vmm::libvirt::xml {

Result<DocPtr> parseDomain(std::string_view text) {
  if (text.size() > kMaxDomainXmlBytes)
    return fail(Errc::invalidArgument, cat("domain XML is ", text.size(), " bytes, more than the ", kMaxDomainXmlBytes,
                                           " allowed"));
  // No XML_PARSE_NOENT (entities stay references), no DTD loading, no network, no
  // XML_PARSE_HUGE (nesting stays within libxml2's default depth limit); errors are taken
  // from xmlGetLastError instead of being printed.
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

bool isElement(const xmlNode* n, const char* name) {
  return n->type == XML_ELEMENT_NODE && !n->ns && xmlStrcmp(n->name, BAD_CAST name) == 0;
}

bool isElementNs(const xmlNode* n, const char* href, const char* name) {
  return n->type == XML_ELEMENT_NODE && n->ns && xmlStrcmp(n->ns->href, BAD_CAST href) == 0 &&
         xmlStrcmp(n->name, BAD_CAST name) == 0;
}

xmlNode* firstChild(xmlNode* n, const char* name) {
  for (xmlNode* c = n->children; c; c = c->next)
    if (isElement(c, name)) return c;
  return nullptr;
}

std::string attr(xmlNode* n, const char* name) {
  xmlChar* v = xmlGetNoNsProp(n, BAD_CAST name);
  if (!v) return {};
  std::string s(reinterpret_cast<const char*>(v));
  xmlFree(v);
  return s;
}

std::string text(xmlNode* n) {
  xmlChar* v = xmlNodeGetContent(n);
  if (!v) return {};
  std::string s(reinterpret_cast<const char*>(v));
  xmlFree(v);
  return s;
}

void removeNode(xmlNode* n) {
  xmlNode* prev = n->prev;
  if (prev && prev->type == XML_TEXT_NODE && xmlIsBlankNode(prev)) {
    xmlUnlinkNode(prev);
    xmlFreeNode(prev);
  }
  xmlUnlinkNode(n);
  xmlFreeNode(n);
}

namespace {

bool isBlankText(const xmlNode* n) { return n && n->type == XML_TEXT_NODE && xmlIsBlankNode(const_cast<xmlNode*>(n)); }

// "\n" and the indentation of `n` when whitespace with a line break precedes it; else empty.
std::string lineBreakBefore(const xmlNode* n) {
  if (!isBlankText(n->prev) || !n->prev->content) return {};
  std::string_view ws(reinterpret_cast<const char*>(n->prev->content));
  size_t nl = ws.rfind('\n');
  return nl == ws.npos ? std::string() : std::string(ws.substr(nl));
}

// Text nodes added next to text nodes are merged into them by libxml2 (and freed), so a
// text node is never used after it is added.
void addTextBefore(xmlNode* ref, const std::string& ws) {
  if (!ws.empty()) xmlAddPrevSibling(ref, xmlNewDocText(ref->doc, BAD_CAST ws.c_str()));
}
void addTextAfter(xmlNode* ref, const std::string& ws) {
  if (!ws.empty()) xmlAddNextSibling(ref, xmlNewDocText(ref->doc, BAD_CAST ws.c_str()));
}

}  // namespace

void insertAfter(xmlNode* ref, xmlNode* n) {
  std::string ws = lineBreakBefore(ref);
  xmlAddNextSibling(ref, n);
  addTextBefore(n, ws);
}

void insertBefore(xmlNode* ref, xmlNode* n) {
  std::string ws = lineBreakBefore(ref);
  xmlAddPrevSibling(ref, n);
  addTextAfter(n, ws);
}

void appendChild(xmlNode* parent, xmlNode* n) {
  xmlNode* lastElement = parent->last;
  while (lastElement && lastElement->type != XML_ELEMENT_NODE) lastElement = lastElement->prev;
  std::string parentBreak = lineBreakBefore(parent);
  std::string ws = lastElement ? lineBreakBefore(lastElement) : parentBreak.empty() ? std::string() : parentBreak + "  ";
  // The whitespace before the closing tag stays last.
  if (xmlNode* closing = parent->last; isBlankText(closing)) {
    xmlAddPrevSibling(closing, n);
    addTextBefore(n, ws);
    return;
  }
  xmlAddChild(parent, n);
  addTextBefore(n, ws);
  if (!lastElement && !ws.empty()) addTextAfter(n, parentBreak);
}

namespace {

// libvirt's escaping (virBufferEscapeString) plus character references for the whitespace
// that a parser would otherwise normalize away.
void appendEscaped(std::string& out, const xmlChar* s, bool inAttribute) {
  if (!s) return;
  for (const char* p = reinterpret_cast<const char*>(s); *p; ++p) {
    switch (*p) {
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '&': out += "&amp;"; break;
      case '\'': out += "&apos;"; break;
      case '"': out += "&quot;"; break;
      case '\r': out += "&#13;"; break;
      case '\n': out += inAttribute ? "&#10;" : "\n"; break;
      case '\t': out += inAttribute ? "&#9;" : "\t"; break;
      default: out += *p;
    }
  }
}

void appendName(std::string& out, const xmlNs* ns, const xmlChar* name) {
  if (ns && ns->prefix) {
    out += reinterpret_cast<const char*>(ns->prefix);
    out += ':';
  }
  out += reinterpret_cast<const char*>(name);
}

// Recursion is bounded by the parser's nesting limit (256 without XML_PARSE_HUGE).
void format(std::string& out, const xmlNode* n) {
  switch (n->type) {
    case XML_ELEMENT_NODE: {
      out += '<';
      appendName(out, n->ns, n->name);
      // libvirt writes namespace declarations after the attributes.
      for (const xmlAttr* a = n->properties; a; a = a->next) {
        out += ' ';
        appendName(out, a->ns, a->name);
        out += "='";
        for (const xmlNode* v = a->children; v; v = v->next)
          if (v->type == XML_TEXT_NODE) appendEscaped(out, v->content, true);
        out += '\'';
      }
      for (const xmlNs* ns = n->nsDef; ns; ns = ns->next) {
        out += ns->prefix ? " xmlns:" : " xmlns";
        if (ns->prefix) out += reinterpret_cast<const char*>(ns->prefix);
        out += "='";
        appendEscaped(out, ns->href, true);
        out += '\'';
      }
      if (!n->children) {
        out += "/>";
        return;
      }
      out += '>';
      for (const xmlNode* c = n->children; c; c = c->next) format(out, c);
      out += "</";
      appendName(out, n->ns, n->name);
      out += '>';
      return;
    }
    case XML_TEXT_NODE: appendEscaped(out, n->content, false); return;
    case XML_CDATA_SECTION_NODE:
      out += "<![CDATA[";
      if (n->content) out += reinterpret_cast<const char*>(n->content);
      out += "]]>";
      return;
    case XML_COMMENT_NODE:
      out += "<!--";
      if (n->content) out += reinterpret_cast<const char*>(n->content);
      out += "-->";
      return;
    case XML_PI_NODE:
      out += "<?";
      out += reinterpret_cast<const char*>(n->name);
      if (n->content && *n->content) {
        out += ' ';
        out += reinterpret_cast<const char*>(n->content);
      }
      out += "?>";
      return;
    case XML_ENTITY_REF_NODE:
      out += '&';
      out += reinterpret_cast<const char*>(n->name);
      out += ';';
      return;
    default: return;  // nothing else occurs inside an element of a document without a DTD
  }
}

}  // namespace

std::string formatLibvirtStyle(const xmlNode* root) {
  std::string out;
  format(out, root);
  out += '\n';
  return out;
}

}  // namespace vmckpt::vmm::libvirt::xml
