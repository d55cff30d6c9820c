/* vmready: the readiness of each VM on this host (issue 11).
 *
 * One entry per VM id: the spec the broker sent (VmSpec.ready; "" = the
 * image's `ready` file, else none), the probe (probe.c) while the VM runs,
 * and the outcome reported in every VmActual. The fleet steps it from its
 * tick (never blocking: a probe is a non-blocking state machine); a VM that
 * leaves RUNNING loses its probe and its ready, and gets a new probe when
 * it runs again. */
#ifndef TT_WORKER_VMREADY_H
#define TT_WORKER_VMREADY_H

#include <stdbool.h>
#include <stdint.h>

#include "probe.h"
#include "ttfleet.pb-c.h"

typedef struct vmready_t vmready_t;

vmready_t *vmready_new(void);
void vmready_destroy(vmready_t **self_p);

/* Keep the spec text for vm_id (from its VmSpec; NULL or "" = image default). */
void vmready_set_spec(vmready_t *self, uint32_t vm_id, const char *spec);

/* Drop everything about vm_id (destroyed). */
void vmready_forget(vmready_t *self, uint32_t vm_id);

/* One step for vm_id: running says whether it runs now; target says where
 * to probe; image_dir is the VM's image directory (for its `ready` file),
 * or NULL. Returns 1 when a probe succeeded in this step or the reason a
 * running VM is not ready changed (either is worth an event), else 0: a VM
 * with spec none is ready at once and a VM that stopped loses ready, both
 * reported by the reply to the command that did it. */
int vmready_step(vmready_t *self, uint32_t vm_id, bool running, const probe_target_t *target,
                 const char *image_dir, int64_t now_ms);

/* Put vm_id's ready, ready_at and ready_detail into va. */
void vmready_fill(const vmready_t *self, uint32_t vm_id, Ttfleet__VmActual *va);

#endif
