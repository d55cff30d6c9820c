/*
 * wcmd: worker commands. See wcmd.h.
 *
 * Commands are declarative: each VmSpec carries the full desired state of
 * one VM, so re-sending is harmless and every READY re-sends them all.
 * That also gives the per-host bound its defined behaviour: what one batch
 * queues to a host is capped (WCMD_HOST_BATCH_BYTES); beyond it commands
 * are refused and the host gets one full resync at the next tick instead.
 */
#include "wcmd.h"
#include "blobsrv.h"
#include "outq.h"
#include "ttblob.h"
#include "ttframe.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- worker commands ---- */

/* Under CURVE: lets host's key fetch the blobs of vm's catalog image
 * (with each spec sent to it). */
static void s_fetch_grant(broker_t *self, const host_t *host, const vm_t *vm)
{
    if (!self->curve || !self->blobsrv || !vm->image_digest[0] || !host->zap_user[0])
        return;
    for (const char *p = vm->image_blobs; *p;) {
        char d[TT_DIGEST_LEN + 1];
        if (strlen(p) > TT_DIGEST_LEN) {
            memcpy(d, p, TT_DIGEST_LEN);
            d[TT_DIGEST_LEN] = 0;
            blobsrv_fetch_grant(self->blobsrv, d, host->zap_user);
        }
        p = strchr(p, '\n');
        if (!p)
            break;
        p++;
    }
}

/* The blob server's endpoint (what workers fetch from), "" without one. */
static const char *s_blobs_endpoint(broker_t *self)
{
    return self->blobsrv ? blobsrv_endpoint(self->blobsrv) : "";
}

void wcmd_vm_spec(const vm_t *vm, int desired, Ttfleet__VmSpec *spec, Ttfleet__PortMap *pm_store,
                  Ttfleet__PortMap **pm_ptrs)
{
    char env_key[2 * TT_MAX_NAME + 2];
    ttfleet__vm_spec__init(spec);
    spec->vm_id = vm->vm_id;
    snprintf(env_key, sizeof env_key, "%s/%s", vm->env->tenant, vm->env->name);
    spec->env = strdup(env_key); /* freed by wcmd_send */
    spec->image = (char *)vm->image;
    spec->engine = (char *)vm->engine;
    spec->cpu = vm->cpu;
    spec->mem_mib = vm->mem;
    spec->disk_mib = vm->disk;
    spec->ip = (char *)vm->ip;
    spec->mac = (char *)vm->mac;
    spec->deny_outgoing = vm->env->deny_outgoing;
    spec->expires_at = vm->env->expires_at;
    spec->desired = (Ttfleet__VmState)desired;
    spec->n_ssh_keys = (size_t)vm->env->n_ssh_keys;
    spec->ssh_keys = vm->env->ssh_keys;
    spec->user_data.data = vm->env->user_data;
    spec->user_data.len = vm->env->user_data_len;
    spec->ready = model_vm_ready_spec(vm); /* freed by wcmd_send */
    for (int i = 0; i < vm->n_ports; i++) {
        ttfleet__port_map__init(&pm_store[i]);
        pm_store[i].guest = vm->ports[i].guest;
        pm_store[i].public_ = vm->ports[i].public_port;
        pm_ptrs[i] = &pm_store[i];
    }
    spec->n_ports = (size_t)vm->n_ports;
    spec->ports = pm_ptrs;
}

/* A catalog image's fields on spec (issue 12): digest, kind, its blobs
 * (parsed from the catalog's "digest size file" lines) and where to fetch
 * them. The blobs live in *img, which must outlive the packing. */
typedef struct {
    Ttfleet__ImageBlob b[4];
    Ttfleet__ImageBlob *p[4];
    char digest[4][72];
    char file[4][16];
} s_spec_img_t;

static void s_spec_image(broker_t *self, const vm_t *vm, Ttfleet__VmSpec *spec, s_spec_img_t *img)
{
    if (!vm->image_digest[0])
        return;
    spec->image_digest = (char *)vm->image_digest;
    spec->image_kind = (char *)vm->image_kind;
    spec->blobs_endpoint = (char *)s_blobs_endpoint(self);
    s_fetch_grant(self, vm->host, vm);
    size_t n = 0;
    for (const char *p = vm->image_blobs; *p && n < 4;) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        char line[200];
        unsigned long long size = 0;
        if (len < sizeof line) {
            memcpy(line, p, len);
            line[len] = 0;
            img->file[n][0] = 0;
            if (sscanf(line, "%71s %llu %15s", img->digest[n], &size, img->file[n]) >= 2) {
                ttfleet__image_blob__init(&img->b[n]);
                img->b[n].digest = img->digest[n];
                img->b[n].size = size;
                img->b[n].file = img->file[n];
                img->p[n] = &img->b[n];
                n++;
            }
        }
        if (!nl)
            break;
        p = nl + 1;
    }
    spec->n_image_blobs = n;
    spec->image_blobs = img->p;
}

static int s_send_raw(broker_t *self, host_t *host, const Ttfleet__WorkerCommand *cmd,
                      bool bounded)
{
    /* every command carries this leader's Raft term (0 alone): a worker
     * refuses one older than the newest it has seen */
    Ttfleet__WorkerCommand termed = *cmd;
    termed.term = self->ha_term;
    size_t len;
    uint8_t *buf = ttframe_pack_buf(&termed.base, &len);
    if (!buf)
        return -1;
    if (host->cmd_batch != self->batch_no) {
        host->cmd_batch = self->batch_no;
        host->cmd_bytes = 0;
    }
    if (bounded && host->cmd_bytes + len > WCMD_HOST_BATCH_BYTES) {
        if (!host->resync)
            zsys_warning("host %s: over %u bytes of commands in one batch; refusing more and "
                         "resending every spec at the next tick",
                         host->id, WCMD_HOST_BATCH_BYTES);
        host->resync = true;
        free(buf);
        return -1;
    }
    host->cmd_bytes += len;
    outq_worker(self, host, TT_W_COMMAND, buf, len);
    free(buf);
    return 0;
}

int wcmd_send_raw(broker_t *self, host_t *host, const Ttfleet__WorkerCommand *cmd)
{
    return s_send_raw(self, host, cmd, true);
}

static uint64_t s_send(broker_t *self, host_t *host, vm_t **vms, const int *desired, int n,
                       bool bounded);

void wcmd_resync(broker_t *self, host_t *host)
{
    host->resync = false;
    size_t n = host->vm_count;
    if (!n)
        return;
    vm_t **vms = calloc(n, sizeof *vms);
    size_t k = 0;
    for (vm_t *vm = host->vms; vms && vm && k < n; vm = vm->host_next)
        if (!vm->doomed)
            vms[k++] = vm;
    /* in chunks, to keep each command well under the size limit */
    for (size_t off = 0; vms && off < k; off += 500)
        s_send(self, host, vms + off, NULL, (int)(k - off > 500 ? 500 : k - off), false);
    free(vms);
}

uint64_t wcmd_send(broker_t *self, host_t *host, vm_t **vms, const int *desired, int n)
{
    return s_send(self, host, vms, desired, n, true);
}

/* ---- capacity being freed (see wcmd.h) ---- */

typedef struct {
    char host[TT_MAX_NAME + 1]; /* by id: a host may be removed and come back */
    uint32_t cpu;
    uint64_t mem, disk;
    int64_t deadline_ms;
} s_hold_t;

static void s_hold_free(void **item)
{
    free(*item);
    *item = NULL;
}

static void s_hold_release(broker_t *self, const s_hold_t *hold)
{
    host_t *h = model_host_get(self, hold->host);
    if (!h)
        return;
    h->cpu_freeing -= hold->cpu < h->cpu_freeing ? hold->cpu : h->cpu_freeing;
    h->mem_freeing -= hold->mem < h->mem_freeing ? hold->mem : h->mem_freeing;
    h->disk_freeing -= hold->disk < h->disk_freeing ? hold->disk : h->disk_freeing;
}

/* Command op_id to host destroys the VMs of vms[] whose desired state is
 * ABSENT: keep what the model charges for them on host until the answer. */
static void s_hold(broker_t *self, host_t *host, uint64_t op_id, vm_t **vms, const int *desired,
                   int n)
{
    s_hold_t hold = {"", 0, 0, 0, 0};
    for (int i = 0; i < n; i++) {
        int d = desired ? desired[i] : model_vm_desired(vms[i]);
        if (d != TTFLEET__VM_STATE__VM_ABSENT || vms[i]->host != host)
            continue;
        if (model_vm_holds_cpu(vms[i])) {
            hold.cpu += vms[i]->cpu;
            hold.mem += vms[i]->mem;
        }
        hold.disk += vms[i]->disk;
    }
    if (!hold.cpu && !hold.mem && !hold.disk)
        return;
    if (!self->freeing) {
        self->freeing = zhashx_new();
        if (!self->freeing)
            return;
        zhashx_set_destructor(self->freeing, s_hold_free);
    }
    s_hold_t *h = malloc(sizeof *h);
    if (!h)
        return; /* out of memory: placement sees the room a little early */
    *h = hold;
    snprintf(h->host, sizeof h->host, "%s", host->id);
    h->deadline_ms = tt_mono_ms() + self->cfg.worker_timeout_ms;
    char k[32];
    snprintf(k, sizeof k, "%llu", (unsigned long long)op_id);
    if (zhashx_insert(self->freeing, k, h)) {
        free(h);
        return;
    }
    host->cpu_freeing += h->cpu;
    host->mem_freeing += h->mem;
    host->disk_freeing += h->disk;
}

bool wcmd_freed(broker_t *self, const host_t *host, uint64_t op_id)
{
    if (!self->freeing)
        return false;
    char k[32];
    snprintf(k, sizeof k, "%llu", (unsigned long long)op_id);
    s_hold_t *h = zhashx_lookup(self->freeing, k);
    if (!h || strcmp(h->host, host->id) != 0)
        return false; /* not a destroy, or not this host's to answer */
    s_hold_release(self, h);
    zhashx_delete(self->freeing, k);
    return true;
}

void wcmd_freeing_drop(broker_t *self, const host_t *host)
{
    if (self->freeing) {
        zlistx_t *keys = zhashx_keys(self->freeing);
        for (const char *k = zlistx_first(keys); k; k = zlistx_next(keys)) {
            s_hold_t *h = zhashx_lookup(self->freeing, k);
            if (strcmp(h->host, host->id) == 0)
                zhashx_delete(self->freeing, k);
        }
        zlistx_destroy(&keys);
    }
    host_t *live = model_host_get(self, host->id);
    if (live) {
        live->cpu_freeing = 0;
        live->mem_freeing = live->disk_freeing = 0;
    }
}

bool wcmd_freeing_tick(broker_t *self, int64_t now_ms)
{
    if (!self->freeing || zhashx_size(self->freeing) == 0)
        return false;
    bool any = false;
    zlistx_t *keys = zhashx_keys(self->freeing);
    for (const char *k = zlistx_first(keys); k; k = zlistx_next(keys)) {
        s_hold_t *h = zhashx_lookup(self->freeing, k);
        if (h->deadline_ms > now_ms)
            continue;
        zsys_warning("host %s: no answer to destroy command %s in %d ms; its capacity counts "
                     "as free again",
                     h->host, k, self->cfg.worker_timeout_ms);
        s_hold_release(self, h);
        zhashx_delete(self->freeing, k);
        any = true;
    }
    zlistx_destroy(&keys);
    return any;
}

static uint64_t s_send(broker_t *self, host_t *host, vm_t **vms, const int *desired, int n,
                       bool bounded)
{
    int rc = -1;
    Ttfleet__WorkerCommand cmd = TTFLEET__WORKER_COMMAND__INIT;
    cmd.op_id = ++self->next_op_id;
    cmd.n_vms = (size_t)n;
    cmd.vms = calloc((size_t)n + 1, sizeof *cmd.vms);
    Ttfleet__VmSpec *specs = calloc((size_t)n + 1, sizeof *specs);
    Ttfleet__PortMap *pms = calloc((size_t)n * TT_MAX_PORTS_PER_VM + 1, sizeof *pms);
    Ttfleet__PortMap **pmp = calloc((size_t)n * TT_MAX_PORTS_PER_VM + 1, sizeof *pmp);
    s_spec_img_t *imgs = calloc((size_t)n + 1, sizeof *imgs);
    if (cmd.vms && specs && pms && pmp && imgs) {
        for (int i = 0; i < n; i++) {
            wcmd_vm_spec(vms[i], desired ? desired[i] : model_vm_desired(vms[i]), &specs[i],
                         &pms[i * TT_MAX_PORTS_PER_VM], &pmp[i * TT_MAX_PORTS_PER_VM]);
            s_spec_image(self, vms[i], &specs[i], &imgs[i]);
            cmd.vms[i] = &specs[i];
        }
        rc = s_send_raw(self, host, &cmd, bounded);
        if (rc == 0)
            s_hold(self, host, cmd.op_id, vms, desired, n);
        for (int i = 0; i < n; i++) {
            free(specs[i].env);
            free(specs[i].ready);
        }
    }
    free(cmd.vms);
    free(specs);
    free(pms);
    free(pmp);
    free(imgs);
    return rc == 0 ? cmd.op_id : 0;
}

/* Send the desired state of vms[] to their hosts, one command per host,
 * without waiting for the answers (they update VM states as they come). */
void wcmd_send_specs(broker_t *self, vm_t **vms, int n)
{
    bool *sent = calloc((size_t)n + 1, sizeof *sent);
    vm_t **group = calloc((size_t)n + 1, sizeof *group);
    if (!sent || !group) {
        free(sent);
        free(group);
        return;
    }
    for (int i = 0; i < n; i++) {
        if (sent[i])
            continue;
        host_t *h = vms[i]->host;
        int g = 0;
        for (int j = i; j < n; j++)
            if (!sent[j] && vms[j]->host == h) {
                group[g++] = vms[j];
                sent[j] = true;
            }
        if (h->routing && h->state != HOST_DOWN)
            wcmd_send(self, h, group, NULL, g);
    }
    free(sent);
    free(group);
}

uint64_t wcmd_pull(broker_t *self, host_t *host, const vm_t *image)
{
    Ttfleet__WorkerCommand cmd = TTFLEET__WORKER_COMMAND__INIT;
    Ttfleet__VmSpec spec = TTFLEET__VM_SPEC__INIT;
    s_spec_img_t img;
    vm_t tmp = *image;
    tmp.host = host; /* whose key the fetch is granted to */
    spec.image = (char *)image->image;
    spec.env = "";
    spec.engine = "";
    spec.ip = "";
    spec.mac = "";
    s_spec_image(self, &tmp, &spec, &img);
    cmd.op_id = ++self->next_op_id;
    cmd.pull = &spec;
    return wcmd_send_raw(self, host, &cmd) == 0 ? cmd.op_id : 0;
}

uint64_t wcmd_console(broker_t *self, host_t *host, uint32_t vm_id, uint32_t max_bytes)
{
    Ttfleet__WorkerCommand cmd = TTFLEET__WORKER_COMMAND__INIT;
    cmd.op_id = ++self->next_op_id;
    cmd.console_vm_id = vm_id;
    cmd.console_max = max_bytes;
    return wcmd_send_raw(self, host, &cmd) == 0 ? cmd.op_id : 0;
}

uint64_t wcmd_guest(broker_t *self, host_t *host, Ttfleet__EnvExec *exec, Ttfleet__EnvCopy *copy)
{
    Ttfleet__WorkerCommand cmd = TTFLEET__WORKER_COMMAND__INIT;
    cmd.op_id = ++self->next_op_id;
    cmd.exec = exec;
    cmd.copy = copy;
    return wcmd_send_raw(self, host, &cmd) == 0 ? cmd.op_id : 0;
}
