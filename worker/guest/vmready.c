/* vmready: per VM readiness; see vmready.h.
 *
 * Entries are allocated when a VM first gets a spec or a step, indexed by
 * VM id. The spec is resolved when a probe starts: the VM's own spec, else
 * the first line of <image dir>/ready, else none (a VM with none is ready
 * as soon as it runs). A spec that does not parse counts as not ready, with
 * the parse error as the detail. */
#include "vmready.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ttproto.h"

typedef struct {
    char spec[TT_READY_MAX + 1];
    probe_t *probe;
    probe_target_t target; /* what the probe dials: a changed one (ports, address) restarts it */
    bool running, ready;
    int64_t ready_at;
    char detail[128];
} s_entry_t;

struct vmready_t {
    s_entry_t **e; /* [TT_VMID_MAX + 1] */
};

vmready_t *vmready_new(void)
{
    vmready_t *self = calloc(1, sizeof *self);
    if (self && !(self->e = calloc(TT_VMID_MAX + 1, sizeof *self->e))) {
        free(self);
        return NULL;
    }
    return self;
}

void vmready_forget(vmready_t *self, uint32_t vm_id)
{
    if (!self || vm_id > TT_VMID_MAX || !self->e[vm_id])
        return;
    probe_destroy(&self->e[vm_id]->probe);
    free(self->e[vm_id]);
    self->e[vm_id] = NULL;
}

void vmready_destroy(vmready_t **self_p)
{
    vmready_t *self = *self_p;
    if (!self)
        return;
    for (uint32_t id = 0; id <= TT_VMID_MAX; id++)
        vmready_forget(self, id);
    free(self->e);
    free(self);
    *self_p = NULL;
}

static s_entry_t *s_entry(vmready_t *self, uint32_t vm_id)
{
    if (vm_id < TT_VMID_MIN || vm_id > TT_VMID_MAX)
        return NULL;
    if (!self->e[vm_id])
        self->e[vm_id] = calloc(1, sizeof **self->e);
    return self->e[vm_id];
}

void vmready_set_spec(vmready_t *self, uint32_t vm_id, const char *spec)
{
    s_entry_t *e = s_entry(self, vm_id);
    if (!e)
        return;
    const char *text = spec ? spec : "";
    if (strcmp(e->spec, text) == 0)
        return;
    snprintf(e->spec, sizeof e->spec, "%s", text);
    probe_destroy(&e->probe); /* a new spec: probe again */
    e->ready = false;
    e->ready_at = 0;
}

/* The image's default: the first line of <image_dir>/ready. */
static void s_image_default(const char *image_dir, char *buf, size_t len)
{
    buf[0] = '\0';
    if (!image_dir)
        return;
    char path[4200];
    snprintf(path, sizeof path, "%s/ready", image_dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return;
    ssize_t n = read(fd, buf, len - 1);
    close(fd);
    buf[n > 0 ? n : 0] = '\0';
    buf[strcspn(buf, "\r\n")] = '\0';
}

int vmready_step(vmready_t *self, uint32_t vm_id, bool running, const probe_target_t *target,
                 const char *image_dir, int64_t now_ms)
{
    s_entry_t *e = s_entry(self, vm_id);
    if (!e)
        return 0;
    if (!running) {
        bool was = e->ready;
        probe_destroy(&e->probe);
        e->running = e->ready = false;
        e->ready_at = 0;
        if (was)
            snprintf(e->detail, sizeof e->detail, "not running");
        return 0; /* the state change that caused it is reported already */
    }
    if (e->ready)
        return 0;
    if (e->probe && memcmp(&e->target, target, sizeof *target) != 0)
        probe_destroy(&e->probe); /* never dial a port the VM no longer holds */
    if (!e->probe) {
        char text[TT_READY_MAX + 1], err[200];
        if (e->spec[0])
            snprintf(text, sizeof text, "%s", e->spec);
        else
            s_image_default(image_dir, text, sizeof text);
        probe_spec_t spec;
        if (probe_spec_parse(text[0] ? text : "none", &spec, err, sizeof err)) {
            snprintf(e->detail, sizeof e->detail, "bad readiness spec: %.100s", err);
            return 0;
        }
        if (spec.kind == PROBE_NONE) {
            e->ready = true;
            e->ready_at = (int64_t)time(NULL);
            snprintf(e->detail, sizeof e->detail, "ready (no probe)");
            return 0; /* the reply that started it carries it */
        }
        e->probe = probe_new(&spec, target, now_ms);
        e->target = *target;
        if (!e->probe) {
            snprintf(e->detail, sizeof e->detail, "out of memory");
            return 0;
        }
    }
    /* a step is due when its fd could be ready or its time has come; the
     * probe never blocks, so stepping each tick is safe */
    int r = probe_step(e->probe, now_ms);
    char before[sizeof e->detail];
    memcpy(before, e->detail, sizeof before);
    snprintf(e->detail, sizeof e->detail, "%s", probe_detail(e->probe));
    if (r == 1) {
        e->ready = true;
        e->ready_at = (int64_t)time(NULL);
        probe_destroy(&e->probe);
        return 1;
    }
    /* A new reason for not being ready is worth reporting too: the fleet
     * sends actuals only when this returns 1, and without it the broker
     * kept the first step's "not probed yet" for as long as the VM stayed
     * not ready (what `--wait ready` prints on its timeout). The reasons
     * carry no counters, so this is a few reports per boot, not one a tick. */
    return strcmp(before, e->detail) != 0;
}

void vmready_fill(const vmready_t *self, uint32_t vm_id, Ttfleet__VmActual *va)
{
    if (!self || vm_id > TT_VMID_MAX || !self->e[vm_id])
        return;
    const s_entry_t *e = self->e[vm_id];
    va->ready = e->ready;
    va->ready_at = e->ready_at;
    va->ready_detail = (char *)e->detail;
}
