#!/usr/bin/env python3
"""Generates the OpenGL interposer's wrappers from the Khronos registry (gl.xml).

  gl_gen.py /usr/share/khronos-api/gl.xml OUT_DIR

writes OUT_DIR/gl_generated.hpp and OUT_DIR/gl_generated.cpp: the command list, the table
of the driver's entry points, one exported wrapper per state-changing command (classified
by gl_rules.py), the replay of every recorded command, and the name table that
eglGetProcAddress answers from. Commands of OpenGL 1.0-3.3, compatibility profile
included. Fails (exit 1, one line per problem) when a command cannot be classified.
"""

import os
import re
import sys
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gl_rules  # noqa: E402

MAX_VERSION = 3.3
MAX_ARGS = 12

NS_ENUM = {
    "buffer": "Ns::Buffer", "texture": "Ns::Texture", "framebuffer": "Ns::Framebuffer",
    "renderbuffer": "Ns::Renderbuffer", "vertex array": "Ns::VertexArray",
    "program": "Ns::Program", "shader": "Ns::Program", "sampler": "Ns::Sampler",
    "query": "Ns::Query",
}


class Param:
    def __init__(self, el):
        self.name = el.find("name").text
        text = "".join(el.itertext()).strip()
        self.ctype = text[: text.rfind(self.name)].strip()
        self.ptype = el.find("ptype").text if el.find("ptype") is not None else "void"
        self.len = el.get("len")
        self.cls = el.get("class")
        self.is_ptr = "*" in self.ctype
        self.is_const = self.ctype.startswith("const")

    def decl(self):
        return f"{self.ctype} {self.name}"


class Command:
    def __init__(self, el):
        proto = el.find("proto")
        self.name = proto.find("name").text
        text = "".join(proto.itertext()).strip()
        self.ret = text[: text.rfind(self.name)].strip()
        self.ret_cls = proto.get("class")
        self.params = [Param(p) for p in el.findall("param")]
        self.short = self.name[2:]
        self.rule = None

    def param(self, name):
        for p in self.params:
            if p.name == name:
                return p
        return None

    def sig(self):
        return ", ".join(p.decl() for p in self.params) or "void"

    def args(self):
        return ", ".join(p.name for p in self.params)


def load(xml_path):
    root = ET.parse(xml_path).getroot()
    all_cmds = {}
    for el in root.find("commands"):
        c = Command(el)
        all_cmds[c.name] = c
    names = []
    for f in root.findall("feature"):
        if f.get("api") != "gl" or float(f.get("number")) > MAX_VERSION:
            continue
        for r in f.findall("require/command"):
            n = r.get("name")
            if n not in names:
                names.append(n)
    return [all_cmds[n] for n in names]


def elem_size(p):
    return "1" if p.ptype in ("void", "GLchar") else f"sizeof({p.ptype})"


def len_expr(cmd, p, errors):
    """C expression for the bytes a const pointer argument points at, or None."""
    rule_ptr = cmd.rule.get("ptr", {}).get(p.name)
    if rule_ptr == "raw":
        return "RAW"
    if rule_ptr == "pixels":
        dims = [d for d in ("width", "height", "depth") if cmd.param(d)]
        args = ", ".join(["format", "type"] + dims + ["1"] * (3 - len(dims)))
        return f"PIXELS:rec_->pixelBytes({args})"
    if rule_ptr == "unpack":
        return "PIXELS:static_cast<size_t>(imageSize)"
    if rule_ptr == "string":
        return f"std::strlen({p.name}) + 1"
    if rule_ptr == "stipple":
        return "128"
    ln = p.len
    if ln is None:
        errors.append(f"{cmd.name}: pointer argument {p.name} has no length")
        return None
    m = re.fullmatch(r"COMPSIZE\(pname\)", ln)
    if m:
        return f"pnameCount(pname) * {elem_size(p)}"
    if re.fullmatch(r"[A-Za-z_]+(\*\d+)?|\d+", ln):
        expr = re.sub(r"[A-Za-z_]+", lambda mm: f"static_cast<size_t>({mm.group(0)})", ln)
        return f"({expr}) * {elem_size(p)}"
    errors.append(f"{cmd.name}: cannot size pointer argument {p.name} (len={ln})")
    return None


def ns_of(cls):
    return NS_ENUM.get(cls)


def translate_in(cmd, lines, to="real"):
    """Turns object-name arguments into the driver's names; returns the call's argument list."""
    out = []
    for p in cmd.params:
        ns = ns_of(p.cls) if p.cls else None
        if ns and not p.is_ptr:
            lines.append(f"  const GLuint {p.name}_r = names().toReal({ns}, {p.name});")
            out.append(f"{p.name}_r")
        elif ns and p.is_ptr and p.is_const:
            lines.append(f"  NameArray {p.name}_r(names(), {ns}, {p.len}, {p.name});")
            out.append(f"{p.name}_r.data()")
        elif p.name == "location" and cmd.rule["kind"] == "object" and cmd.rule.get("group") == "Uniform":
            lines.append(f"  const GLint {p.name}_r = names().locationToReal({p.name});")
            out.append(f"{p.name}_r")
        else:
            out.append(p.name)
    return ", ".join(out)


def translate_out(cmd, lines):
    for p in cmd.params:
        ns = ns_of(p.cls) if p.cls else None
        if ns and p.is_ptr and not p.is_const:
            lines.append(f"  names().toVirtualArray({ns}, {p.name}, {p.len or 1});")


def gen_wrapper(cmd, errors):
    k = cmd.rule["kind"]
    lines = [f'extern "C" VMCKPT_GL_EXPORT {cmd.ret} {cmd.name}({cmd.sig()}) {{']
    lines.append(f"  if (!real.{cmd.short}) resolve(Cmd::{cmd.short});")
    ret_void = cmd.ret == "void"

    if k == "gen":
        ns = NS_ENUM[cmd.rule["ns"]]
        n, p = cmd.params[0].name, cmd.params[1].name
        lines.append(f"  real.{cmd.short}({n}, {p});")
        lines.append(f"  onGen({ns}, {n}, {p});")
        lines.append("}")
        return lines
    if k == "delete":
        ns = NS_ENUM[cmd.rule["ns"]]
        n, p = cmd.params[0].name, cmd.params[1].name
        lines.append(f"  NameArray r_(names(), {ns}, {n}, {p});")
        lines.append(f"  real.{cmd.short}({n}, r_.data());")
        lines.append(f"  onDelete({ns}, {n}, {p});")
        lines.append("}")
        return lines
    if k == "create":
        args = cmd.args()
        lines.append(f"  const GLuint real_ = real.{cmd.short}({args});")
        kind = "type" if cmd.params else "0"
        lines.append(f"  return onCreate(Cmd::{cmd.short}, real_, {kind});")
        lines.append("}")
        return lines
    if k == "delete1":
        p = cmd.params[0].name
        lines.append(f"  real.{cmd.short}(names().toReal(Ns::Program, {p}));")
        lines.append(f"  onDelete(Ns::Program, 1, &{p});")
        lines.append("}")
        return lines
    if k == "bind":
        ns = NS_ENUM[cmd.rule["ns"]]
        name = cmd.rule["name"]
        target = cmd.rule["target"] or "0"
        lines.append(f"  const GLuint {name}_r = toRealBind({ns}, {target}, {name});")
        call_args = ", ".join(f"{p.name}_r" if p.name == name else p.name for p in cmd.params)
        lines.append(f"  real.{cmd.short}({call_args});")
        lines.append(f"  onBind(Cmd::{cmd.short}, {ns}, {target}, {name});")
        lines.append("}")
        return lines
    if k in ("translate", "unsupported"):
        call = translate_in(cmd, lines)
        if ret_void:
            lines.append(f"  real.{cmd.short}({call});")
        else:
            lines.append(f"  auto ret_ = real.{cmd.short}({call});")
        translate_out(cmd, lines)
        if k == "unsupported":
            lines.append(f'  onUnsupported("{cmd.name}");')
        if not ret_void:
            lines.append("  return ret_;")
        lines.append("}")
        return lines

    # global / object: call through, then record.
    assert k in ("global", "object"), k
    call = translate_in(cmd, lines)
    if ret_void:
        lines.append(f"  real.{cmd.short}({call});")
    else:
        lines.append(f"  auto ret_ = real.{cmd.short}({call});")
    lines.append("  Recorder* rec_ = recorder();")
    lines.append("  if (rec_) {")
    if len(cmd.params) > MAX_ARGS:
        errors.append(f"{cmd.name}: more than {MAX_ARGS} arguments")
    lines.append(f"    Entry& e = rec_->begin(Cmd::{cmd.short}, {len(cmd.params)});")
    for i, p in enumerate(cmd.params):
        if p.is_ptr:
            if not p.is_const:
                errors.append(f"{cmd.name}: recorded command with output pointer {p.name}")
                continue
            ln = len_expr(cmd, p, errors)
            if ln is None:
                continue
            if ln == "RAW":
                lines.append(f"    e.a[{i}] = encode({p.name});")
            elif ln.startswith("PIXELS:"):
                lines.append(f"    e.a[{i}] = rec_->upload(e, {p.name}, {ln[7:]});")
            else:
                lines.append(f"    e.a[{i}] = rec_->copy(e, {p.name}, {ln});")
        else:
            lines.append(f"    e.a[{i}] = encode({p.name});")
    rule = cmd.rule
    group = rule.get("group", cmd.short)
    sel = []
    for s in rule.get("sel", []):
        p = cmd.param(s)
        if p is None:
            errors.append(f"{cmd.name}: selector {s} is not an argument")
            continue
        sel.append(f"hashString({s})" if p.is_ptr else f"encode({s})")
    unit = {"active": "Unit::Active", "client": "Unit::Client"}.get(rule.get("unit"), "Unit::None")
    eye = "true" if rule.get("eye") else "false"
    lines.append(f"    rec_->setKey(e, Group::{group}, {{{', '.join(sel)}}}, {unit}, {eye});")
    if k == "object":
        obj = rule["obj"]
        ns = NS_ENUM[obj[1]]
        if obj[0] == "bound":
            lines.append(f"    rec_->onBoundObject(e, {ns}, {obj[2]});")
        elif obj[0] == "current":
            lines.append(f"    rec_->onBoundObject(e, {ns}, 0);")
        else:
            lines.append(f"    rec_->onNamedObject(e, {ns}, {obj[2]});")
        for dns, dtarget in rule.get("deps", []):
            lines.append(f"    rec_->addDep(e, {NS_ENUM[dns]}, {dtarget});")
        for ref in rule.get("refs", []):
            p = cmd.param(ref)
            lines.append(f"    rec_->addRef(e, {ns_of(p.cls)}, {ref});")
        for cgroup, n in rule.get("clears", []):
            lines.append(f"    rec_->addClear(e, Group::{cgroup}, {n});")
    lines.append("    rec_->commit(e);")
    lines.append("  }")
    if not ret_void:
        lines.append("  return ret_;")
    lines.append("}")
    return lines


def gen_replay(cmd):
    args = []
    for i, p in enumerate(cmd.params):
        ns = ns_of(p.cls) if p.cls else None
        if p.is_ptr:
            ln = cmd.rule.get("ptr", {}).get(p.name)
            if ln == "raw":
                args.append(f"decode<{p.ctype}>(e.a[{i}])")
            else:
                args.append(f"rp.pointer<{p.ctype}>(e, e.a[{i}])")
        elif ns:
            args.append(f"rp.toReal({ns}, decode<GLuint>(e.a[{i}]))")
        elif p.name == "location" and cmd.rule.get("group") == "Uniform":
            args.append(f"rp.location(e, decode<GLint>(e.a[{i}]))")
        else:
            args.append(f"decode<{p.ctype}>(e.a[{i}])")
    return f"    case Cmd::{cmd.short}: real.{cmd.short}({', '.join(args)}); break;"


def main():
    if len(sys.argv) != 3:
        print("usage: gl_gen.py gl.xml OUT_DIR", file=sys.stderr)
        return 2
    cmds = load(sys.argv[1])
    errors = []
    for c in cmds:
        c.rule = gl_rules.rule_for(c.short)
        if c.rule is None:
            errors.append(f"{c.name}: no rule")
            continue
        has_names = any(p.cls in NS_ENUM for p in c.params)
        if c.rule["kind"] == "pass" and has_names:
            c.rule = dict(c.rule, kind="translate")
        if c.rule["kind"] == "pass" and c.ret_cls in NS_ENUM:
            errors.append(f"{c.name}: returns an object name but has no rule")

    wrappers, replays, groups = [], [], set()
    for c in cmds:
        if not c.rule or c.rule["kind"] in ("pass", "custom"):
            continue
        wrappers.append("\n".join(gen_wrapper(c, errors)))
        if c.rule["kind"] in ("global", "object"):
            replays.append(gen_replay(c))
            groups.add(c.rule.get("group", c.short))
    for c in cmds:
        for cg, _ in (c.rule or {}).get("clears", []):
            groups.add(cg)
    groups |= {"Bind", "BindIndexed", "ShaderSource", "LinkProgram", "ActiveTexture",
               "ClientActiveTexture"}
    if errors:
        for e in errors:
            print(f"gl_gen: {e}", file=sys.stderr)
        return 1

    out = sys.argv[2]
    os.makedirs(out, exist_ok=True)
    hdr = ["// Generated by gl_gen.py from the Khronos registry (gl.xml). Do not edit.",
           "#pragma once", "#include <cstdint>", '#include "gl_types.hpp"', "",
           "namespace vmckpt::gl {", "",
           f"inline constexpr int kCommandCount = {len(cmds)};",
           "enum class Cmd : std::uint16_t {"]
    hdr += [f"  {c.short}," for c in cmds]
    hdr += ["};", "", "enum class Group : std::uint16_t {"]
    hdr += [f"  {g}," for g in sorted(groups)]
    hdr += ["};", "", "// The driver's entry points (glvnd's dispatch stubs), resolved lazily.",
            "struct Real {"]
    for c in cmds:
        hdr.append(f"  {c.ret} (*{c.short})({c.sig()});")
    hdr += ["};", "extern Real real;", "",
            "// Resolves real.<cmd>; aborts with a message when the driver lacks it.",
            "void resolve(Cmd cmd);",
            "const char* commandName(Cmd cmd);",
            "// True for the commands this library records (kinds global and object).",
            "bool isRecorded(Cmd cmd);",
            "// The exported wrapper for a GL function name, or nullptr when not wrapped.",
            "void* wrapperFor(const char* name);",
            "struct Entry;", "class Replayer;",
            "// Calls the driver with a recorded entry's arguments (names already mapped).",
            "void replayCall(const Entry& e, Replayer& rp);",
            "", "}  // namespace vmckpt::gl", ""]

    src = ["// Generated by gl_gen.py from the Khronos registry (gl.xml). Do not edit.",
           '#include "gl_generated.hpp"', "", "#include <cstring>", "",
           '#include "recorder.hpp"', '#include "replayer.hpp"', '#include "state.hpp"', "",
           "namespace vmckpt::gl {", "", "Real real;", "",
           "namespace {", "const char* const kNames[] = {"]
    src += [f'  "{c.name}",' for c in cmds]
    src += ["};", "const bool kRecorded[] = {"]
    src += [f"  {'true' if c.rule['kind'] in ('global', 'object') else 'false'},"
            for c in cmds]
    src += ["};", "}  // namespace", "",
            "const char* commandName(Cmd cmd) { return kNames[static_cast<int>(cmd)]; }",
            "bool isRecorded(Cmd cmd) { return kRecorded[static_cast<int>(cmd)]; }", "",
            "void resolve(Cmd cmd) {",
            "  void* p = resolveDriver(kNames[static_cast<int>(cmd)]);",
            "  switch (cmd) {"]
    for c in cmds:
        src.append(f"    case Cmd::{c.short}: real.{c.short} = "
                   f"reinterpret_cast<decltype(real.{c.short})>(p); break;")
    src += ["  }", "}", "", "void replayCall(const Entry& e, Replayer& rp) {",
            "  switch (e.cmd) {"]
    src += replays
    src += ["    default: rp.notReplayable(e); break;", "  }", "}", "",
            "}  // namespace vmckpt::gl", "",
            "using namespace vmckpt::gl;", ""]
    src += wrappers
    src += ["", "// Written by hand in custom.cpp."]
    for c in cmds:
        if c.rule["kind"] == "custom":
            src.append(f'extern "C" {c.ret} {c.name}({c.sig()});')
    src += ["", "namespace vmckpt::gl {", "namespace {",
            "struct Wrapped { const char* name; void* fn; };",
            "const Wrapped kWrapped[] = {"]
    for c in sorted(cmds, key=lambda c: c.name):
        if c.rule["kind"] != "pass":
            src.append(f'  {{"{c.name}", reinterpret_cast<void*>(&::{c.name})}},')
    src += ["};", "}  // namespace", "",
            "void* wrapperFor(const char* name) {",
            "  std::size_t lo = 0, hi = sizeof(kWrapped) / sizeof(kWrapped[0]);",
            "  while (lo < hi) {",
            "    const std::size_t mid = (lo + hi) / 2;",
            "    const int c = std::strcmp(name, kWrapped[mid].name);",
            "    if (c == 0) return kWrapped[mid].fn;",
            "    if (c < 0) hi = mid; else lo = mid + 1;",
            "  }",
            "  return nullptr;", "}", "", "}  // namespace vmckpt::gl", ""]

    with open(os.path.join(out, "gl_generated.hpp"), "w") as f:
        f.write("\n".join(hdr))
    with open(os.path.join(out, "gl_generated.cpp"), "w") as f:
        f.write("\n".join(src))
    counts = {}
    for c in cmds:
        counts[c.rule["kind"]] = counts.get(c.rule["kind"], 0) + 1
    print("gl_gen: " + str(len(cmds)) + " commands: " +
          ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
