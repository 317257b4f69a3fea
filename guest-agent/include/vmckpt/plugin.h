/*
 * vmckpt guest plugin API (C ABI), version 2 (adds CONNECT, vmckpt_publish,
 * vmckpt_connect_follows and vmckpt_release_requested; a plugin built against version 1
 * keeps working).
 *
 * A process that drives a device (InfiniBand, CUDA, OpenGL, ...) registers one plugin
 * with the in-guest agent, vmckpt-agent. The library connects to the agent's unix socket
 * (path from $VMCKPT_AGENT_SOCKET, default /run/vmckpt/agent.sock) and answers the
 * agent's events on a thread of its own by calling the plugin's hook:
 *
 *   checkpoint:  PRESUSPEND (stop new work, drain) -> PRECHECKPOINT (save device state
 *                into this process's memory) -> the host captures the guest ->
 *                RESUME (same hardware) or, after a restore, RESTART (rebuild, maybe on
 *                other hardware; device_map_json says what maps to what)
 *   rollback:    a failed or late quiesce sends RESUME to every process that got
 *                PRESUSPEND
 *   group:       restore: RESTART (connect follows) -> CONNECT -> (running). Snapshot
 *                with release: PRESUSPEND (release requested: drain, keep the devices
 *                open: the peers still drain against them) ... the host waits until
 *                every member drained ... PRECHECKPOINT (release requested: close the
 *                devices now, publish) -> capture -> RESUME (connect follows: rebuild,
 *                publish) -> CONNECT -> RESUME
 *
 * VMCKPT_PLUGIN_API_VERSION is bumped on any change to this file. Link with -lvmckpt
 * (libvmckpt.so.1 or libvmckpt.a). The header compiles as C99 and as C++.
 */
#ifndef VMCKPT_PLUGIN_H
#define VMCKPT_PLUGIN_H

#include <stddef.h>

#define VMCKPT_PLUGIN_API_VERSION 2

/* Default path of the agent's socket; $VMCKPT_AGENT_SOCKET overrides it. */
#define VMCKPT_AGENT_SOCKET_DEFAULT "/run/vmckpt/agent.sock"

/* Longest plugin name, in bytes. Names use only A-Z a-z 0-9 _ . - */
#define VMCKPT_PLUGIN_NAME_MAX 64

/* Size of the reason buffer handed to the hook (bytes, including the NUL). */
#define VMCKPT_REASON_MAX 512

/* Longest JSON object vmckpt_publish accepts, in bytes (without the NUL). */
#define VMCKPT_PUBLISH_MAX 32768

#if defined(__GNUC__)
#define VMCKPT_API __attribute__((visibility("default")))
#else
#define VMCKPT_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

typedef enum vmckpt_event {
  VMCKPT_PRESUSPEND = 1,    /* stop starting new work and drain what is in flight */
  VMCKPT_PRECHECKPOINT = 2, /* put device state into process memory; the guest is captured next */
  VMCKPT_RESUME = 3,        /* same hardware: carry on (also the rollback of a failed quiesce) */
  VMCKPT_RESTART = 4,       /* restored, possibly on other hardware: rebuild device state */
  VMCKPT_CONNECT = 5        /* API version 2; group restore or snapshot only, after every
                               member handled RESTART or RESUME (connect follows): connect
                               to the peers' published ids */
} vmckpt_event;

typedef enum vmckpt_result {
  VMCKPT_DONE = 0,     /* handled */
  VMCKPT_FAILED = 1,   /* could not; write a one-line reason. PRESUSPEND/PRECHECKPOINT
                          failures make the agent roll the quiesce back */
  VMCKPT_NOT_MINE = 2, /* nothing to do for this process (e.g. the device is not in use) */
  /* Not a result: makes every int a valid vmckpt_result, so that a C hook returning
     something else (the agent reports it as a failure) is no undefined behaviour for the
     C++ code that receives it. */
  VMCKPT_RESULT_INT_RANGE_ = 0x7fffffff
} vmckpt_result;

/*
 * The event hook, a switch over `ev`. It runs on the library's thread, one event at a
 * time, and must return: the agent's quiesce deadline counts while it runs.
 *   ctx              the descriptor's ctx
 *   device_map_json  RESTART: the host's device map, a JSON object; CONNECT: a JSON
 *                    array of every object published under this plugin's name by the
 *                    group's members (this process's own included) in the host's order,
 *                    "[]" when none. NUL-terminated, valid during the call; NULL for
 *                    every other event
 *   reason           a zeroed buffer of reason_len bytes (VMCKPT_REASON_MAX) for a
 *                    one-line, NUL-terminated reason when returning VMCKPT_FAILED
 * An event this API version does not know is answered VMCKPT_NOT_MINE without a call;
 * a plugin registered with api_version 1 is never called with CONNECT.
 */
typedef vmckpt_result (*vmckpt_hook_fn)(void* ctx, vmckpt_event ev, const char* device_map_json,
                                        char* reason, size_t reason_len);

/* One per plugin. vmckpt_register copies it; ctx must stay valid until unregistered. */
typedef struct vmckpt_plugin_descriptor {
  unsigned int api_version; /* VMCKPT_PLUGIN_API_VERSION (1 is still accepted) */
  const char* name;         /* e.g. "ib", "cuda", "gl"; see VMCKPT_PLUGIN_NAME_MAX */
  vmckpt_hook_fn hook;
  void* ctx;
} vmckpt_plugin_descriptor;

/*
 * Connects to the agent, registers the plugin, and starts the thread that answers
 * events. Waits at most 5 s for the agent's answer. Returns 0, or -errno:
 *   -EINVAL     bad descriptor (version not 1 or 2, name or hook)
 *   -EBUSY      this process already registered a plugin (one per process)
 *   -ENOENT, -ECONNREFUSED, ...   the agent's socket cannot be reached
 *   -EPROTO     the agent refused the registration
 *   -ETIMEDOUT  no answer in time
 * If the agent goes away later (restarted), the thread reconnects and registers again.
 * Not async-signal-safe; a forked child does not inherit the registration.
 */
VMCKPT_API int vmckpt_register(const vmckpt_plugin_descriptor* desc);

/* Stops the thread and closes the connection (the agent then forgets this process).
 * Does nothing when not registered. Must not be called from the hook. */
VMCKPT_API void vmckpt_unregister(void);

/* "PRESUSPEND", "PRECHECKPOINT", "RESUME", "RESTART", "CONNECT", or "UNKNOWN". */
VMCKPT_API const char* vmckpt_event_name(vmckpt_event ev);

/* Inside a RESTART or RESUME hook: 1 when this is part of a group restore or snapshot
 * and CONNECT follows once every member has handled this event; else 0 (also 0 outside
 * a hook). */
VMCKPT_API int vmckpt_connect_follows(void);

/* Inside a PRESUSPEND or PRECHECKPOINT hook: 1 when the host asks the plugin to release
 * its devices (close them) before the capture; else 0 (also 0 outside a hook). In
 * PRESUSPEND the plugin drains and keeps the devices open: other members of the group
 * may still be draining against them. PRECHECKPOINT comes once every member has
 * drained: close them there. After the capture the host sends RESUME with connect
 * follows (rebuild, publish), CONNECT, then a plain RESUME; a quiesce that fails, at
 * either event, is rolled back with a plain RESUME alone. */
VMCKPT_API int vmckpt_release_requested(void);

/*
 * Inside a RESTART hook, a RESUME hook with vmckpt_connect_follows() == 1, or a
 * PRESUSPEND or PRECHECKPOINT hook with vmckpt_release_requested() == 1 (on the
 * library's thread, during the call): attaches `json_object`, a JSON object of at most
 * VMCKPT_PUBLISH_MAX bytes, to this process's reply; the host gets it, and hands what a
 * group's members published after RESTART or RESUME to every member in CONNECT. A
 * second call replaces the first.
 * Returns 0, or
 *   -EINVAL  NULL, not a JSON object, or longer than VMCKPT_PUBLISH_MAX
 *   -EPERM   not inside one of those hooks
 */
VMCKPT_API int vmckpt_publish(const char* json_object);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* VMCKPT_PLUGIN_H */
