"""What each OpenGL command does to driver state, for gl_gen.py.

Every command of OpenGL 1.0-3.3 (compatibility profile included) in the Khronos registry
gets exactly one rule: the first pattern below that matches its name (without the `gl`
prefix). The generator refuses to build when a command matches no rule, or when a
recorded command has a pointer argument whose length it cannot work out, so a registry
update cannot silently leave state unrecorded.

Rule kinds:
  pass         not state, or state read back at checkpoint (matrices, current colour...):
               not wrapped at all, the application calls the driver directly. Commands
               with object-name arguments become `translate` automatically.
  translate    wrapped only to turn the application's object names into the driver's.
  global       context state; `key` selects which calls overwrite each other.
  object       state of one object: `obj` says which (see below); `key` as above.
  bind         a binding (object becomes current for a target); hand code in recorder.cpp.
  gen/delete   glGen* / glDelete* of namespace `ns`.
  create       glCreateShader / glCreateProgram.
  delete1      glDeleteShader / glDeleteProgram.
  custom       written by hand in custom.cpp (the generator still lists it for
               eglGetProcAddress).
  unsupported  state the plugin does not record (display lists, attribute stacks...):
               the call is passed on and the log is marked, so that a restart says the
               replay is incomplete instead of pretending.

Keys: `group` (defaults to the command) plus selector argument names; a later call with
the same object, group and selector values replaces the earlier one. `unit: 'active'` or
`'client'` adds the active (client) texture unit as a selector and replays it.
obj: ('bound', ns, target_param_or_GL_constant) | ('current', ns) | ('arg', ns, param).
`clears`: (group, n) removes the object's entries of that group whose first n selectors
match this call's (a full upload drops the partial ones). `deps`: bindings the call reads
and the replay must restore, (ns, target). `refs`: object-name arguments whose objects
must outlive this entry. `ptr`: how a pointer argument is recorded when the registry's
`len` is not enough: 'raw' (the pointer value: offsets into bound buffers, or client
memory that survives in the process), 'pixels' (an image upload: size from the unpack
state, or an offset when a pixel-unpack buffer is bound), 'string' (NUL-terminated).
"""

import re

OBJ_NS = ["buffer", "texture", "framebuffer", "renderbuffer", "vertex array", "program",
          "sampler", "query"]


def R(kind, **kw):
    kw["kind"] = kind
    return kw


# (regex over the name without "gl", rule). First match wins.
RULES = [
    # ---- hand-written -----------------------------------------------------------------
    (r"ShaderSource|GetUniformLocation|GetIntegerv|BindBuffer|BindTexture|BindFramebuffer|"
     r"BindBufferBase|BindBufferRange|LinkProgram|MapBuffer|MapBufferRange|UnmapBuffer|"
     r"FlushMappedBufferRange|FenceSync|DeleteSync|IsSync|ClientWaitSync|WaitSync|GetSynciv|"
     r"ActiveTexture|ClientActiveTexture|TransformFeedbackVaryings",
     R("custom")),

    # ---- objects: creation and deletion --------------------------------------------------
    (r"GenBuffers", R("gen", ns="buffer")),
    (r"GenTextures", R("gen", ns="texture")),
    (r"GenFramebuffers", R("gen", ns="framebuffer")),
    (r"GenRenderbuffers", R("gen", ns="renderbuffer")),
    (r"GenVertexArrays", R("gen", ns="vertex array")),
    (r"GenSamplers", R("gen", ns="sampler")),
    (r"GenQueries", R("gen", ns="query")),
    (r"DeleteBuffers", R("delete", ns="buffer")),
    (r"DeleteTextures", R("delete", ns="texture")),
    (r"DeleteFramebuffers", R("delete", ns="framebuffer")),
    (r"DeleteRenderbuffers", R("delete", ns="renderbuffer")),
    (r"DeleteVertexArrays", R("delete", ns="vertex array")),
    (r"DeleteSamplers", R("delete", ns="sampler")),
    (r"DeleteQueries", R("delete", ns="query")),
    (r"CreateShader|CreateProgram", R("create", ns="program")),
    (r"DeleteShader|DeleteProgram", R("delete1", ns="program")),

    # ---- bindings ---------------------------------------------------------------------
    (r"BindRenderbuffer", R("bind", ns="renderbuffer", target="target", name="renderbuffer")),
    (r"BindVertexArray", R("bind", ns="vertex array", target=None, name="array")),
    (r"UseProgram", R("bind", ns="program", target=None, name="program")),
    (r"BindSampler", R("bind", ns="sampler", target="unit", name="sampler")),

    # ---- texture objects (the texture bound to `target` on the active unit) -----------
    (r"TexParameter(f|i|fv|iv|Iiv|Iuiv)",
     R("object", obj=("bound", "texture", "target"), group="TexParameter", sel=["pname"])),
    (r"TexImage(1D|2D|3D)",
     R("object", obj=("bound", "texture", "target"), group="TexImage", sel=["target", "level"],
       clears=[("TexSubImage", 2)], ptr={"pixels": "pixels"})),
    (r"TexSubImage1D",
     R("object", obj=("bound", "texture", "target"), group="TexSubImage",
       sel=["target", "level", "xoffset", "width"], ptr={"pixels": "pixels"})),
    (r"TexSubImage2D",
     R("object", obj=("bound", "texture", "target"), group="TexSubImage",
       sel=["target", "level", "xoffset", "yoffset", "width", "height"], ptr={"pixels": "pixels"})),
    (r"TexSubImage3D",
     R("object", obj=("bound", "texture", "target"), group="TexSubImage",
       sel=["target", "level", "xoffset", "yoffset", "zoffset", "width", "height", "depth"],
       ptr={"pixels": "pixels"})),
    (r"CompressedTexImage(1D|2D|3D)",
     R("object", obj=("bound", "texture", "target"), group="TexImage", sel=["target", "level"],
       clears=[("TexSubImage", 2)], ptr={"data": "unpack"})),
    (r"CompressedTexSubImage1D",
     R("object", obj=("bound", "texture", "target"), group="TexSubImage",
       sel=["target", "level", "xoffset", "width"], ptr={"data": "unpack"})),
    (r"CompressedTexSubImage2D",
     R("object", obj=("bound", "texture", "target"), group="TexSubImage",
       sel=["target", "level", "xoffset", "yoffset", "width", "height"], ptr={"data": "unpack"})),
    (r"CompressedTexSubImage3D",
     R("object", obj=("bound", "texture", "target"), group="TexSubImage",
       sel=["target", "level", "xoffset", "yoffset", "zoffset", "width", "height", "depth"],
       ptr={"data": "unpack"})),
    # Storage is right after a replay; the copied pixels are whatever the framebuffer holds.
    (r"CopyTexImage(1D|2D)",
     R("object", obj=("bound", "texture", "target"), group="TexImage", sel=["target", "level"],
       clears=[("TexSubImage", 2)])),
    (r"TexImage(2D|3D)Multisample",
     R("object", obj=("bound", "texture", "target"), group="TexImage", sel=["target"])),
    (r"GenerateMipmap",
     R("object", obj=("bound", "texture", "target"), group="GenerateMipmap", sel=["target"])),
    (r"TexBuffer",
     R("object", obj=("bound", "texture", "target"), group="TexBuffer", refs=["buffer"])),

    # ---- buffer objects ----------------------------------------------------------------
    (r"BufferData",
     R("object", obj=("bound", "buffer", "target"), group="BufferData",
       clears=[("BufferSubData", 0)])),
    (r"BufferSubData",
     R("object", obj=("bound", "buffer", "target"), group="BufferSubData", sel=["offset", "size"])),
    (r"CopyBufferSubData",
     R("object", obj=("bound", "buffer", "writeTarget"), group="CopyBufferSubData",
       sel=["writeOffset", "size"], deps=[("buffer", "readTarget")])),

    # ---- vertex array objects (the bound one; 0 is the default VAO of compatibility) ----
    (r"VertexAttribI?Pointer",
     R("object", obj=("current", "vertex array"), group="AttribPointer", sel=["index"],
       deps=[("buffer", "GL_ARRAY_BUFFER")], ptr={"pointer": "raw"})),
    (r"(Enable|Disable)VertexAttribArray",
     R("object", obj=("current", "vertex array"), group="AttribEnable", sel=["index"])),
    (r"VertexAttribDivisor",
     R("object", obj=("current", "vertex array"), group="AttribDivisor", sel=["index"])),
    (r"TexCoordPointer",
     R("object", obj=("current", "vertex array"), unit="client",
       deps=[("buffer", "GL_ARRAY_BUFFER")], ptr={"pointer": "raw"})),
    (r"(Vertex|Normal|Color|SecondaryColor|FogCoord|Index|EdgeFlag)Pointer",
     R("object", obj=("current", "vertex array"),
       deps=[("buffer", "GL_ARRAY_BUFFER")], ptr={"pointer": "raw"})),
    (r"(Enable|Disable)ClientState",
     R("object", obj=("current", "vertex array"), group="ClientState", sel=["array"], unit="client")),
    (r"InterleavedArrays", R("unsupported")),

    # ---- program and shader objects -------------------------------------------------
    (r"CompileShader", R("object", obj=("arg", "program", "shader"), group="CompileShader")),
    (r"AttachShader",
     R("object", obj=("arg", "program", "program"), group="AttachShader", sel=["shader"],
       refs=["shader"])),
    (r"DetachShader",
     R("object", obj=("arg", "program", "program"), group="DetachShader", sel=["shader"],
       refs=["shader"])),
    (r"BindAttribLocation",
     R("object", obj=("arg", "program", "program"), group="BindAttribLocation", sel=["name"],
       ptr={"name": "string"})),
    (r"BindFragDataLocation(Indexed)?",
     R("object", obj=("arg", "program", "program"), group="BindFragDataLocation", sel=["name"],
       ptr={"name": "string"})),
    (r"UniformBlockBinding",
     R("object", obj=("arg", "program", "program"), group="UniformBlockBinding",
       sel=["uniformBlockIndex"])),
    (r"Uniform(Matrix)?\w+",
     R("object", obj=("current", "program"), group="Uniform", sel=["location"])),

    # ---- framebuffer and renderbuffer objects ----------------------------------------
    (r"FramebufferTexture(1D|2D|3D|Layer)?",
     R("object", obj=("bound", "framebuffer", "target"), group="FbAttach", sel=["attachment"],
       refs=["texture"])),
    (r"FramebufferRenderbuffer",
     R("object", obj=("bound", "framebuffer", "target"), group="FbAttach", sel=["attachment"],
       refs=["renderbuffer"])),
    (r"DrawBuffers?",
     R("object", obj=("bound", "framebuffer", "GL_DRAW_FRAMEBUFFER"), group="DrawBuffer")),
    (r"ReadBuffer", R("object", obj=("bound", "framebuffer", "GL_READ_FRAMEBUFFER"))),
    (r"RenderbufferStorage(Multisample)?",
     R("object", obj=("bound", "renderbuffer", "target"), group="RenderbufferStorage")),

    # ---- sampler objects --------------------------------------------------------------
    (r"SamplerParameter\w+",
     R("object", obj=("arg", "sampler", "sampler"), group="SamplerParameter", sel=["pname"])),

    # ---- context state ------------------------------------------------------------------
    (r"Enable|Disable", R("global", group="Cap", sel=["cap"], unit="active")),
    (r"Enablei|Disablei", R("global", group="Capi", sel=["target", "index"])),
    (r"BlendFunc(Separate)?", R("global", group="BlendFunc")),
    (r"BlendEquation(Separate)?", R("global", group="BlendEquation")),
    (r"(StencilFunc|StencilOp|StencilMask)Separate", R("global", sel=["face"])),
    (r"PixelStore[fi]", R("global", group="PixelStore", sel=["pname"])),
    (r"PixelTransfer[fi]", R("global", group="PixelTransfer", sel=["pname"])),
    (r"PointParameter\w+", R("global", group="PointParameter", sel=["pname"])),
    (r"Hint|ClampColor", R("global", sel=["target"])),
    (r"PolygonMode", R("global", sel=["face"])),
    (r"ColorMaski", R("global", sel=["index"])),
    (r"SampleMaski", R("global", sel=["maskNumber"])),
    (r"(VertexAttrib[1-4]\w*|VertexAttribI[1-4]\w*|VertexAttribP[1-4]\w*)",
     R("global", group="VertexAttrib", sel=["index"])),
    # Fixed function. Light positions, spot directions, clip and eye planes are taken
    # through the modelview matrix of the moment: the recorder keeps that matrix.
    (r"Light[fi]v?", R("global", group="Light", sel=["light", "pname"], eye=True)),
    (r"LightModel[fi]v?", R("global", group="LightModel", sel=["pname"])),
    (r"Material[fi]v?", R("global", group="Material", sel=["face", "pname"])),
    (r"Fog[fi]v?", R("global", group="Fog", sel=["pname"])),
    (r"TexEnv[fi]v?", R("global", group="TexEnv", sel=["target", "pname"], unit="active")),
    (r"TexGen[dfi]v?", R("global", group="TexGen", sel=["coord", "pname"], unit="active", eye=True)),
    (r"ClipPlane", R("global", sel=["plane"], eye=True)),
    (r"PolygonStipple", R("global", ptr={"mask": "stipple"})),
    (r"CullFace|FrontFace|LineWidth|PointSize|ClearColor|ClearStencil|ClearDepth|StencilMask|"
     r"ColorMask|DepthMask|BlendColor|LogicOp|StencilFunc|StencilOp|DepthFunc|DepthRange|"
     r"Viewport|Scissor|ShadeModel|AlphaFunc|PolygonOffset|SampleCoverage|PrimitiveRestartIndex|"
     r"ProvokingVertex|LineStipple|PixelZoom|IndexMask|ClearIndex|ClearAccum|ColorMaterial|"
     r"MatrixMode|ListBase",
     R("global")),

    # ---- not recorded, and said so ----------------------------------------------------------
    (r"NewList|EndList|GenLists|DeleteLists|PushAttrib|PopAttrib|PushClientAttrib|"
     r"PopClientAttrib|Map[12][df]|MapGrid\w+|PixelMap\w+|FeedbackBuffer|SelectBuffer|"
     r"RenderMode|InitNames|LoadName|PopName|PushName|PassThrough|PrioritizeTextures",
     R("unsupported")),

    # ---- everything else: drawing, queries, immediate mode, matrices ------------------
    (r".*", R("pass")),
]


def rule_for(short_name):
    for pattern, rule in RULES:
        if re.fullmatch(pattern, short_name):
            return rule
    return None
