/*
 * vmckpt OpenGL plugin (libvmckpt-gl.so): record-prune-replay of OpenGL driver state.
 *
 * Load it with LD_PRELOAD into a program that uses libEGL + libGL/libOpenGL. It records
 * every call that creates, changes or deletes driver state, prunes what later calls make
 * irrelevant, and on RESTART replays the rest into a new context, which may come from
 * another driver. The program keeps its EGLContext and its GL object names.
 *
 * With the guest agent running, the plugin registers as "gl" and handles the agent's
 * events. The functions below are also exported for programs and test harnesses that
 * want to drive it themselves. A program that must run without the plugin looks them up
 * with dlsym(RTLD_DEFAULT, "vmckpt_gl_...") instead of linking them.
 *
 * Threading: GL state belongs to the thread that has the context current. The agent's
 * events arrive on another thread, so the render thread parks itself at a frame
 * boundary: eglSwapBuffers, or vmckpt_gl_frame_boundary() for programs that render
 * off-screen without swapping.
 */
#ifndef VMCKPT_GL_H
#define VMCKPT_GL_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Call between frames on the render thread. Returns at once unless a checkpoint is
 * pending; then it quiesces (glFinish), waits for RESUME or RESTART, replays on RESTART,
 * and returns 1 when the context was replaced (0 otherwise, -1 on a failed replay). */
int vmckpt_gl_frame_boundary(void);

/* Standalone checkpoint on the render thread (context current): glFinish, then capture
 * the state that is read back rather than recorded (matrix stacks, current vertex
 * attributes of compatibility contexts). Returns 0, or -1 with a reason on stderr. */
int vmckpt_gl_checkpoint(void);

/* Standalone restart on the render thread after vmckpt_gl_checkpoint: destroys the
 * current context, creates one of the same version and profile, replays the pruned log
 * and makes it current in place of the old one. gallium_driver, when not NULL, switches
 * Mesa's software driver ("llvmpipe", "softpipe") by re-initialising the EGL display
 * (surfaceless contexts only). Returns 0, or -1 with a reason on stderr. */
int vmckpt_gl_restart(const char* gallium_driver);

/* Bytes the pruned log holds now (calls, their arguments and copied data). */
size_t vmckpt_gl_log_bytes(void);

/* Number of entries (calls) in the pruned log. */
size_t vmckpt_gl_log_entries(void);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* VMCKPT_GL_H */
