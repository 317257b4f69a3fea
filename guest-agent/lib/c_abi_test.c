/* Builds as C99 against vmckpt/plugin.h and links libvmckpt.so: the C ABI is usable
 * from C. Checks the argument validation, the error for a missing agent, and that the
 * version 2 functions are exported and refuse to work outside a hook. */
#define _POSIX_C_SOURCE 200112L /* setenv */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmckpt/plugin.h"

static vmckpt_result hook(void* ctx, vmckpt_event ev, const char* device_map_json, char* reason,
                          size_t reason_len) {
  (void)ctx;
  (void)device_map_json;
  switch (ev) {
    case VMCKPT_PRESUSPEND: return VMCKPT_DONE; /* drain; a release closes at PRECHECKPOINT */
    case VMCKPT_PRECHECKPOINT:
      if (vmckpt_release_requested()) (void)vmckpt_publish("{\"released\":true}");
      return VMCKPT_DONE;
    case VMCKPT_RESUME: return VMCKPT_DONE;
    case VMCKPT_RESTART:
      if (vmckpt_connect_follows()) (void)vmckpt_publish("{\"qpn\":17}");
      return VMCKPT_DONE;
    case VMCKPT_CONNECT: return VMCKPT_DONE;
  }
  if (reason_len > 0) reason[0] = '\0';
  return VMCKPT_NOT_MINE;
}

static int failures = 0;

static void expect(int got, int want, const char* what) {
  if (got != want) {
    fprintf(stderr, "FAIL %s: got %d, want %d\n", what, got, want);
    ++failures;
  }
}

int main(void) {
  vmckpt_plugin_descriptor d;
  memset(&d, 0, sizeof d);
  d.api_version = VMCKPT_PLUGIN_API_VERSION;
  d.name = "c-test";
  d.hook = hook;

  expect(vmckpt_register(NULL), -EINVAL, "NULL descriptor");
  d.api_version = VMCKPT_PLUGIN_API_VERSION + 1;
  expect(vmckpt_register(&d), -EINVAL, "newer api_version");
  d.api_version = VMCKPT_PLUGIN_API_VERSION;
  d.name = "has space";
  expect(vmckpt_register(&d), -EINVAL, "bad name");
  d.name = "c-test";

  setenv("VMCKPT_AGENT_SOCKET", "/nonexistent/vmckpt-c-abi-test.sock", 1);
  expect(vmckpt_register(&d), -ENOENT, "no agent");
  d.api_version = 1; /* still accepted */
  expect(vmckpt_register(&d), -ENOENT, "api_version 1, no agent");
  d.api_version = 0;
  expect(vmckpt_register(&d), -EINVAL, "api_version 0");
  vmckpt_unregister(); /* not registered: does nothing */

  if (strcmp(vmckpt_event_name(VMCKPT_RESTART), "RESTART") != 0 ||
      strcmp(vmckpt_event_name(VMCKPT_CONNECT), "CONNECT") != 0) {
    fprintf(stderr, "FAIL vmckpt_event_name\n");
    ++failures;
  }
  expect(vmckpt_publish("{\"qpn\":17}"), -EPERM, "publish outside a hook");
  expect(vmckpt_connect_follows(), 0, "connect_follows outside a hook");
  expect(vmckpt_release_requested(), 0, "release_requested outside a hook");
  expect(VMCKPT_PLUGIN_API_VERSION, 2, "api version");
  expect(VMCKPT_PUBLISH_MAX, 32768, "publish max");
  if (failures == 0) printf("c abi ok\n");
  return failures == 0 ? 0 : 1;
}
