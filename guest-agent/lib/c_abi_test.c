/* Builds as C99 against vmckpt/plugin.h and links libvmckpt.so: the C ABI is usable
 * from C. Checks the argument validation and the error for a missing agent. */
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
    case VMCKPT_PRESUSPEND:
    case VMCKPT_PRECHECKPOINT:
    case VMCKPT_RESUME:
    case VMCKPT_RESTART: return VMCKPT_DONE;
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
  vmckpt_unregister(); /* not registered: does nothing */

  if (strcmp(vmckpt_event_name(VMCKPT_RESTART), "RESTART") != 0) {
    fprintf(stderr, "FAIL vmckpt_event_name\n");
    ++failures;
  }
  if (failures == 0) printf("c abi ok\n");
  return failures == 0 ? 0 : 1;
}
