/*
 * workers: the broker's side of the TTW01 worker protocol.
 *
 * A host is known by the host id in its READY, not by the connection: a
 * worker that reconnects (after its own restart, a network cut or the
 * broker's restart) replaces its old routing id and is the same host.
 *
 * READY starts reconciliation. The worker's inventory is the truth about
 * what runs; the broker's rows are the truth about what should. The broker
 * takes each VM's actual state from the inventory, then sends one COMMAND
 * with the desired spec of every VM it has on the host (the worker starts
 * what died, re-creates what it lost and applies changed ports, leases and
 * hardware) plus ABSENT for every VM it does not know (left over from a
 * create that was rolled back, an env deleted while the host was away, or
 * a broker crash between commit and send).
 *
 * Liveness: a host that sends nothing for two heartbeats is `suspect`; for
 * `liveness` heartbeats it is `down`, its VMs are `lost` and every op that
 * waits for it fails at once.
 */
#include "workers.h"
#include "blobsrv.h"
#include "ttblob.h"
#include "op.h"
#include "outq.h"
#include "persist.h"
#include "scheduler.h"
#include "ttframe.h"
#include "wcmd.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void s_forget_route(broker_t *self, host_t *host)
{
    if (!host->routing)
        return;
    char *hex = zframe_strhex(host->routing);
    if (hex && zhashx_lookup(self->routes, hex) == host)
        zhashx_delete(self->routes, hex);
    free(hex);
    zframe_destroy(&host->routing);
}

static void s_free_names(char **names, int *n)
{
    for (int i = 0; i < *n; i++)
        free(names[i]);
    *n = 0;
}

/* What each engine of host declared in READY: the entry naming it (the
 * first, if a worker repeats one), its known capability names; an engine
 * without an entry declares nothing. Bounded by the engines kept and by
 * the message size the worker protocol allows. */
static void s_engine_caps(host_t *host, const Ttfleet__WorkerHello *hello)
{
    for (int i = 0; i < host->n_engines; i++) {
        host->engine_caps[i] = 0;
        for (size_t k = 0; k < hello->n_engine_caps; k++) {
            const Ttfleet__EngineCaps *ec = hello->engine_caps[k];
            if (!ec->engine || strcmp(ec->engine, host->engines[i]) != 0)
                continue;
            for (size_t c = 0; c < ec->n_caps; c++)
                host->engine_caps[i] |= tt_cap_parse(ec->caps[c]);
            break;
        }
    }
    host->caps_said = true;
}

/* Copy a worker's engine or image names: valid names only, each once, at
 * most max (the rest is dropped with a warning). */
static void s_copy_names(char **dst, int *n, int max, char **src, size_t n_src, const char *what,
                         const char *host)
{
    s_free_names(dst, n);
    size_t bad = 0, dup = 0;
    for (size_t i = 0; i < n_src && *n < max; i++) {
        if (!tt_name_valid(src[i])) {
            bad++;
            continue;
        }
        bool seen = false;
        for (int k = 0; k < *n && !seen; k++)
            seen = strcmp(dst[k], src[i]) == 0;
        if (seen) {
            dup++;
            continue;
        }
        char *copy = strdup(src[i]);
        if (copy)
            dst[(*n)++] = copy;
    }
    if (bad || dup)
        zsys_warning("host %s: ignored %zu invalid and %zu repeated %s names", host, bad, dup,
                     what);
    if (n_src > (size_t)max)
        zsys_warning("host %s: advertised %zu %ss; only the first %d are kept", host, n_src, what,
                     max);
}

/* A capacity figure a worker advertised, clipped to a sane maximum (a
 * compromised worker must not pull every placement onto its host by
 * claiming a million cpus; an admin can pin lower with `host set`). */
static uint64_t s_clip(const char *host, const char *what, uint64_t v, uint64_t max)
{
    if (v <= max)
        return v;
    zsys_warning("host %s: advertised %s %llu is over %llu; clipped", host, what,
                 (unsigned long long)v, (unsigned long long)max);
    return max;
}

/* Is a READY's inventory within bounds? Every entry must name a VM id of
 * the host's range, at most once, with bounded strings; a worker that says
 * otherwise is not trusted with any of it. */
static bool s_inventory_valid(const Ttfleet__WorkerHello *hello, char *why, size_t len)
{
    if (hello->n_inventory > TT_MAX_INVENTORY) {
        snprintf(why, len, "%zu VMs in the inventory (at most %d)", hello->n_inventory,
                 TT_MAX_INVENTORY);
        return false;
    }
    uint8_t *seen = calloc(65536 / 8, 1);
    if (!seen) {
        snprintf(why, len, "out of memory");
        return false;
    }
    bool ok = true;
    for (size_t i = 0; i < hello->n_inventory && ok; i++) {
        const Ttfleet__VmActual *va = hello->inventory[i];
        if (va->vm_id < TT_VMID_MIN || va->vm_id > TT_VMID_MAX) {
            snprintf(why, len, "inventory entry %zu has VM id %u (outside %d..%d)", i, va->vm_id,
                     TT_VMID_MIN, TT_VMID_MAX);
            ok = false;
        } else if (seen[va->vm_id >> 3] & (1u << (va->vm_id & 7))) {
            snprintf(why, len, "VM id %u is in the inventory twice", va->vm_id);
            ok = false;
        } else if ((va->env && strlen(va->env) > 2 * TT_MAX_NAME + 1) ||
                   (va->message && strlen(va->message) > TT_MAX_WORKER_MESSAGE)) {
            snprintf(why, len, "inventory entry for VM %u has an oversized env or message",
                     va->vm_id);
            ok = false;
        } else
            seen[va->vm_id >> 3] |= (uint8_t)(1u << (va->vm_id & 7));
    }
    free(seen);
    return ok;
}

/* Mark every VM of host lost and tell the watchers. */
static void s_host_lost(broker_t *self, host_t *host)
{
    zlistx_t *envs = model_host_envs(host);
    for (env_t *e = zlistx_first(envs); e; e = zlistx_next(envs)) {
        bool hit = false;
        for (int i = 0; i < e->n_vms; i++) {
            vm_t *vm = e->vms[i];
            if (vm->host != host || vm->state == TTFLEET__VM_STATE__VM_LOST)
                continue;
            model_vm_set_state(vm, TTFLEET__VM_STATE__VM_LOST);
            persist_vm_update(self, vm);
            outq_event(self, "vm.state", e, vm, host, "lost", "host down");
            hit = true;
        }
        if (hit)
            outq_event(self, "env.state", e, NULL, NULL, model_env_state(e), "host down");
    }
    zlistx_destroy(&envs);
}

static void s_host_down(broker_t *self, host_t *host, const char *why)
{
    zsys_warning("host %s is down: %s", host->id, why);
    host->state = HOST_DOWN;
    s_forget_route(self, host);
    wcmd_freeing_drop(self, host); /* its READY says what it still holds */
    outq_event(self, "host.down", NULL, NULL, host, "down", why);
    op_host_down(self, host);
    s_host_lost(self, host);
}

static void s_reconcile(broker_t *self, host_t *host, Ttfleet__WorkerHello *hello)
{
    /* unknown VMs: destroy */
    size_t n_unknown = 0;
    Ttfleet__VmSpec *absent = calloc(hello->n_inventory + 1, sizeof *absent);
    Ttfleet__VmSpec **absent_p = calloc(hello->n_inventory + 1, sizeof *absent_p);
    char (*ips)[16] = calloc(hello->n_inventory + 1, sizeof *ips);
    if (!absent || !absent_p || !ips)
        goto done;
    for (size_t i = 0; i < hello->n_inventory; i++) {
        Ttfleet__VmActual *va = hello->inventory[i];
        if (va->vm_id < TT_VMID_MIN || va->vm_id > TT_VMID_MAX)
            continue;
        vm_t *vm = model_vm_find(self, host->id, va->vm_id);
        if (vm && !vm->doomed) {
            int st = va->state == TTFLEET__VM_STATE__VM_ABSENT ? TTFLEET__VM_STATE__VM_LOST
                                                               : (int)va->state;
            if (st >= 0 && st <= TTFLEET__VM_STATE__VM_SUSPENDED && st != vm->state) {
                model_vm_set_state(vm, st);
                persist_vm_update(self, vm);
                outq_event(self, "vm.state", vm->env, vm, host, tt_vm_state_name(st),
                             "reconciled");
            }
            op_vm_ready(self, vm, va);
            continue;
        }
        if (va->state == TTFLEET__VM_STATE__VM_ABSENT)
            continue;
        Ttfleet__VmSpec *s = &absent[n_unknown];
        ttfleet__vm_spec__init(s);
        s->vm_id = va->vm_id;
        s->env = va->env && tt_name_valid(va->env) ? va->env : "unknown";
        s->image = "unknown";
        s->engine = "unknown";
        tt_vm_ip(va->vm_id, ips[n_unknown], sizeof ips[n_unknown]);
        s->ip = ips[n_unknown];
        s->mac = "52:54:00:00:00:00";
        s->desired = TTFLEET__VM_STATE__VM_ABSENT;
        absent_p[n_unknown++] = s;
    }
    /* in chunks of 500, like the known VMs below */
    for (size_t off = 0; off < n_unknown; off += 500) {
        Ttfleet__WorkerCommand cmd = TTFLEET__WORKER_COMMAND__INIT;
        cmd.op_id = ++self->next_op_id;
        cmd.n_vms = n_unknown - off > 500 ? 500 : n_unknown - off;
        cmd.vms = absent_p + off;
        if (wcmd_send_raw(self, host, &cmd))
            break; /* the next READY finds them again */
    }
    if (n_unknown)
        zsys_info("host %s: %zu VM(s) are not ours any more; destroying them", host->id,
                  n_unknown);
    /* known VMs: send the desired state of each (idempotent on the worker) */
    wcmd_resync(self, host);
done:
    free(absent);
    free(absent_p);
    free(ips);
}

/* A host's image cache as it advertises it (READY, or an EVENT after a
 * fetch or an eviction): valid digests only, at most 100,000. */
static void s_image_cache(broker_t *self, host_t *host, char **digests, size_t n, uint64_t mib,
                          uint64_t used_mib)
{
    bool had = host->image_cache_mib > 0;
    host->image_cache_mib = mib;
    host->image_cache_used_mib = used_mib;
    if (!host->image_digests)
        host->image_digests = zhashx_new();
    if (!host->image_digests)
        return;
    zhashx_purge(host->image_digests);
    for (size_t i = 0; i < n && i < 100000; i++)
        if (tt_digest_valid(digests[i]))
            zhashx_update(host->image_digests, digests[i], (void *)1);
    if (had != (mib > 0))
        sched_invalidate(self);
}

/* Every string a worker sends reaches clients (messages, ready_detail,
 * events): in place, a byte that is not part of well-formed UTF-8, a C0
 * control other than tab and newline, DEL and a C1 control become '?'. A
 * protobuf client that checks strings (Python) refuses a whole reply with
 * one bad byte, so a host must not be able to spoil other hosts' replies
 * (an admin's env list), nor send escapes to a terminal. */
static void s_clean_text(char *s)
{
    unsigned char *p = (unsigned char *)s;
    while (*p) {
        unsigned char c = *p;
        if (c < 0x80) {
            if ((c < 0x20 && c != '\t' && c != '\n') || c == 0x7f)
                *p = '?';
            p++;
            continue;
        }
        size_t len = c >= 0xC2 && c <= 0xDF   ? 2
                     : c >= 0xE0 && c <= 0xEF ? 3
                     : c >= 0xF0 && c <= 0xF4 ? 4
                                              : 0;
        uint32_t cp = len == 2 ? c & 0x1Fu : len == 3 ? c & 0x0Fu : c & 0x07u;
        size_t i = 1;
        for (; len && i < len && (p[i] & 0xC0) == 0x80; i++)
            cp = cp << 6 | (p[i] & 0x3Fu);
        bool ok = len && i == len && !(len == 3 && cp < 0x800) &&
                  !(len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) &&
                  !(cp >= 0xD800 && cp <= 0xDFFF) && !(cp >= 0x80 && cp <= 0x9F);
        if (!ok) {
            *p++ = '?';
            continue;
        }
        p += len;
    }
}

static void s_clean_message(ProtobufCMessage *m, int depth)
{
    if (!m || depth > 16)
        return;
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->type != PROTOBUF_C_TYPE_STRING && f->type != PROTOBUF_C_TYPE_MESSAGE)
            continue;
        char *at = (char *)m + f->offset;
        if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
            *(uint32_t *)((char *)m + f->quantifier_offset) != f->id)
            continue;
        size_t n = 1;
        void **items = (void **)at;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            n = *(size_t *)((char *)m + f->quantifier_offset);
            items = *(void ***)at;
        }
        for (size_t k = 0; items && k < n; k++) {
            if (!items[k])
                continue;
            if (f->type == PROTOBUF_C_TYPE_STRING)
                s_clean_text(items[k]);
            else
                s_clean_message(items[k], depth + 1);
        }
    }
}

/* A host's templates as it advertises them: well-formed entries only,
 * at most HOST_MAX_TEMPLATES. */
static void s_templates(host_t *host, Ttfleet__TemplateInfo **ti, size_t n)
{
    free(host->tmpl);
    host->tmpl = NULL;
    host->n_tmpl = 0;
    if (n > HOST_MAX_TEMPLATES)
        n = HOST_MAX_TEMPLATES;
    if (!n || !(host->tmpl = calloc(n, sizeof *host->tmpl)))
        return;
    for (size_t i = 0; i < n; i++) {
        const Ttfleet__TemplateInfo *t = ti[i];
        if (!t || !t->image || !tt_name_valid(t->image) || !t->image_digest ||
            (*t->image_digest && !tt_digest_valid(t->image_digest)) || t->cpu == 0 ||
            t->cpu > TT_MAX_CPU || t->mem_mib == 0 || t->mem_mib > TT_MAX_MEM_MIB)
            continue;
        host_tmpl_t *h = &host->tmpl[host->n_tmpl++];
        snprintf(h->image, sizeof h->image, "%s", t->image);
        snprintf(h->digest, sizeof h->digest, "%s", t->image_digest);
        h->cpu = t->cpu;
        h->mem_mib = t->mem_mib;
        h->users = t->users;
        h->bytes = t->bytes;
        h->created = t->created;
    }
}

static void s_ready(broker_t *self, zframe_t *routing, const char *hex, zframe_t *body)
{
    if (!body) {
        zsys_warning("worker READY without a body; ignored");
        return;
    }
    Ttfleet__WorkerHello *hello =
        ttfleet__worker_hello__unpack(NULL, zframe_size(body), zframe_data(body));
    if (!hello) {
        zsys_warning("worker READY with an undecodable body; ignored");
        return;
    }
    s_clean_message(&hello->base, 0);
    if (!tt_name_valid(hello->host_id) || hello->cpu_total == 0 || hello->mem_total == 0) {
        zsys_warning("worker READY with an invalid host id or no capacity; disconnecting it");
        outq_worker_raw(self, routing, TT_W_DISCONNECT);
        ttfleet__worker_hello__free_unpacked(hello, NULL);
        return;
    }
    char why[160];
    if (!s_inventory_valid(hello, why, sizeof why)) {
        zsys_warning("worker READY for host '%s' refused: %s; disconnecting it", hello->host_id,
                     why);
        outq_worker_raw(self, routing, TT_W_DISCONNECT);
        ttfleet__worker_hello__free_unpacked(hello, NULL);
        return;
    }
    const char *xkey = self->curve ? zframe_meta(body, "X-Key") : NULL;
    if (self->curve) {
        const char *user = zframe_meta(body, "User-Id");
        const char *bound = user && strncmp(user, "worker:", 7) == 0 ? user + 7 : NULL;
        if (!bound || (strcmp(bound, "*") != 0 && strcmp(bound, hello->host_id) != 0)) {
            zsys_warning("worker key is not allowed to act as host '%s'; disconnecting it",
                         hello->host_id);
            outq_worker_raw(self, routing, TT_W_DISCONNECT);
            ttfleet__worker_hello__free_unpacked(hello, NULL);
            return;
        }
        /* the handshake was good, but the key may have left --worker-keys
         * since: this connection says READY again after it was cut */
        if (self->worker_keys && (!xkey || !zhashx_lookup(self->worker_keys, xkey))) {
            zsys_warning("worker READY for host '%s' on a connection whose key was removed "
                         "from --worker-keys; disconnecting it", hello->host_id);
            outq_worker_raw(self, routing, TT_W_DISCONNECT);
            ttfleet__worker_hello__free_unpacked(hello, NULL);
            return;
        }
    }
    host_t *host = model_host_ensure(self, hello->host_id);
    if (!host) {
        ttfleet__worker_hello__free_unpacked(hello, NULL);
        return;
    }
    wcmd_freeing_drop(self, host); /* the inventory below is what it holds */
    bool was_up = host->routing != NULL;
    if (was_up) {
        /* the same host on a new connection: the old one is dead */
        op_host_down(self, host);
        s_forget_route(self, host);
    }
    host->routing = zframe_dup(routing);
    snprintf(host->zap_user, sizeof host->zap_user, "%s",
             self->curve && zframe_meta(body, "User-Id") ? zframe_meta(body, "User-Id") : "");
    snprintf(host->zap_key, sizeof host->zap_key, "%s",
             xkey && strlen(xkey) == TT_KEY_LEN ? xkey : "");
    zhashx_update(self->routes, hex, host);
    host->state = HOST_ONLINE;
    host->adv_cpu = (uint32_t)s_clip(host->id, "cpu", hello->cpu_total, TT_MAX_HOST_CPU);
    host->adv_mem = s_clip(host->id, "mem MiB", hello->mem_total, TT_MAX_HOST_MEM_MIB);
    host->adv_disk = s_clip(host->id, "disk MiB", hello->disk_total, TT_MAX_HOST_DISK_MIB);
    model_host_caps(host);
    if (host->pin_cpu || host->pin_mem || host->pin_disk)
        zsys_info("host %s: capacity pinned by an admin (cpu %u, mem %llu, disk %llu MiB; 0 = "
                  "as advertised)",
                  host->id, host->pin_cpu, (unsigned long long)host->pin_mem,
                  (unsigned long long)host->pin_disk);
    s_copy_names(host->engines, &host->n_engines, BROKER_MAX_ENGINES, hello->engines,
                 hello->n_engines, "engine", host->id);
    s_engine_caps(host, hello);
    s_copy_names(host->images, &host->n_images, BROKER_MAX_IMAGES, hello->images, hello->n_images,
                 "image", host->id);
    snprintf(host->accel, sizeof host->accel, "%s",
             hello->accel && (strcmp(hello->accel, "kvm") == 0 || strcmp(hello->accel, "tcg") == 0)
                 ? hello->accel
                 : "");
    struct in_addr pa; /* only a dotted IPv4 address is kept */
    snprintf(host->public_address, sizeof host->public_address, "%s",
             hello->public_address && strlen(hello->public_address) < sizeof host->public_address &&
                     inet_pton(AF_INET, hello->public_address, &pa) == 1
                 ? hello->public_address
                 : "");
    s_image_cache(self, host, hello->image_digests, hello->n_image_digests, hello->image_cache_mib,
                  hello->image_cache_used_mib);
    s_templates(host, hello->templates, hello->n_templates);
    host->last_seen = tt_now();
    host->last_recv_ms = tt_mono_ms();
    sched_invalidate(self);
    persist_host(self, host);
    zsys_info("host %s is up: %u cpu, %llu MiB mem, %llu MiB disk, %d engines, %d images, %zu "
              "VMs held",
              host->id, host->cpu_total, (unsigned long long)host->mem_total,
              (unsigned long long)host->disk_total, host->n_engines, host->n_images,
              hello->n_inventory);
    outq_event(self, "host.up", NULL, NULL, host, "online", NULL);
    s_reconcile(self, host, hello);
    ttfleet__worker_hello__free_unpacked(hello, NULL);
}

static void s_event(broker_t *self, host_t *host, zframe_t *body)
{
    Ttfleet__WorkerEvent *ev =
        body ? ttfleet__worker_event__unpack(NULL, zframe_size(body), zframe_data(body)) : NULL;
    if (!ev) {
        zsys_warning("host %s: undecodable EVENT; ignored", host->id);
        return;
    }
    s_clean_message(&ev->base, 0);
    if (ev->image_cache_mib)
        s_image_cache(self, host, ev->image_digests, ev->n_image_digests, ev->image_cache_mib,
                      ev->image_cache_used_mib);
    if (ev->templates_set)
        s_templates(host, ev->templates, ev->n_templates);
    for (size_t i = 0; i < ev->n_vms; i++) {
        Ttfleet__VmActual *va = ev->vms[i];
        vm_t *vm = model_vm_find(self, host->id, va->vm_id);
        if (!vm || vm->doomed)
            continue;
        if (va->pull_total) {
            /* its image is being fetched: progress only, the state stays
             * PENDING until the create's reply */
            if (vm->state == TTFLEET__VM_STATE__VM_PENDING) {
                bool first = vm->pull_total == 0;
                uint64_t before = vm->pull_done;
                vm->pull_done = va->pull_done < va->pull_total ? va->pull_done : va->pull_total;
                vm->pull_total = va->pull_total;
                char m[160];
                snprintf(m, sizeof m, "pulling %s: %llu/%llu MiB", vm->image,
                         (unsigned long long)(vm->pull_done >> 20),
                         (unsigned long long)(vm->pull_total >> 20));
                outq_event(self, first ? "vm.pulling" : "vm.pull", vm->env, vm, host, "pulling",
                           m);
                /* bytes are moving: the create waiting for this host gets
                 * another --worker-timeout-ms (a stalled fetch still times
                 * out, and its VMs are re-placed) */
                op_t *op = vm->env->busy;
                int64_t until = tt_mono_ms() + self->cfg.worker_timeout_ms;
                if (op && (first || vm->pull_done > before) && op->deadline_ms < until)
                    op->deadline_ms = until;
            }
            continue;
        }
        int st = va->state == TTFLEET__VM_STATE__VM_ABSENT ? TTFLEET__VM_STATE__VM_LOST
                                                           : (int)va->state;
        if (st < 0 || st > TTFLEET__VM_STATE__VM_SUSPENDED)
            continue;
        if (st == vm->state) {
            op_vm_ready(self, vm, va);
            continue;
        }
        model_vm_set_state(vm, st);
        persist_vm_update(self, vm);
        outq_event(self, "vm.state", vm->env, vm, host, tt_vm_state_name(st), va->message);
        outq_event(self, "env.state", vm->env, NULL, NULL, model_env_state(vm->env),
                     va->message);
        op_vm_ready(self, vm, va);
    }
    ttfleet__worker_event__free_unpacked(ev, NULL);
}

void workers_handle(broker_t *self, zmsg_t *msg)
{
    ttframe_worker_t w;
    if (ttframe_worker_parse(msg, true, TT_MAX_WORKER_BODY, &w)) {
        if (self->cfg.verbose)
            zsys_warning("malformed worker message (%zu frames); dropped", zmsg_size(msg));
        return;
    }
    zframe_t *routing = w.routing, *body = w.body;
    int cmd = w.cmd;
    char *hex = zframe_strhex(routing);
    host_t *host = hex ? zhashx_lookup(self->routes, hex) : NULL;
    if (cmd == TT_W_READY) {
        s_ready(self, routing, hex, body);
    } else if (!host) {
        /* not READY'd (or forgotten after a restart / timeout): ask it to start over */
        if (cmd != TT_W_DISCONNECT)
            outq_worker_raw(self, routing, TT_W_DISCONNECT);
    } else {
        host->last_recv_ms = tt_mono_ms();
        host->last_seen = tt_now();
        if (host->state == HOST_SUSPECT)
            host->state = HOST_ONLINE;
        switch (cmd) {
        case TT_W_HEARTBEAT:
            break;
        case TT_W_REPLY: {
            Ttfleet__WorkerReply *rep =
                body ? ttfleet__worker_reply__unpack(NULL, zframe_size(body), zframe_data(body))
                     : NULL;
            if (rep) {
                s_clean_message(&rep->base, 0);
                op_worker_reply(self, host, rep);
                ttfleet__worker_reply__free_unpacked(rep, NULL);
            } else
                zsys_warning("host %s: undecodable REPLY; ignored", host->id);
            break;
        }
        case TT_W_EVENT:
            s_event(self, host, body);
            break;
        case TT_W_DISCONNECT:
            s_host_down(self, host, "worker disconnected");
            break;
        default:
            zsys_warning("host %s: unknown command 0x%02x; ignored", host->id, cmd);
        }
    }
    free(hex);
}

void workers_keys_update(broker_t *self, const void *keys, size_t n)
{
    zhashx_t *set = zhashx_new();
    if (!set)
        return;
    const char *p = keys;
    for (size_t i = 0; i + TT_KEY_LEN <= n; i += TT_KEY_LEN) {
        char k[TT_KEY_LEN + 1];
        memcpy(k, p + i, TT_KEY_LEN);
        k[TT_KEY_LEN] = '\0';
        if (tt_key_valid(k))
            zhashx_update(set, k, (void *)"");
    }
    zhashx_destroy(&self->worker_keys);
    self->worker_keys = set;
    if (self->blobsrv)
        blobsrv_worker_keys(self->blobsrv, keys, n);
    zlistx_t *cut = zlistx_new();
    for (host_t *h = zhashx_first(self->hosts); h; h = zhashx_next(self->hosts))
        if (h->routing && h->zap_key[0] && !zhashx_lookup(set, h->zap_key))
            zlistx_add_end(cut, h);
    for (host_t *h = zlistx_first(cut); h; h = zlistx_next(cut)) {
        outq_worker_raw(self, h->routing, TT_W_DISCONNECT);
        s_host_down(self, h, "its worker key was removed from --worker-keys");
    }
    zlistx_destroy(&cut);
}

void workers_tick(broker_t *self, int64_t now_ms)
{
    int64_t hb = self->cfg.heartbeat_ms;
    zlistx_t *dead = zlistx_new();
    for (host_t *h = zhashx_first(self->hosts); h; h = zhashx_next(self->hosts)) {
        if (!h->routing)
            continue;
        int64_t silent = now_ms - h->last_recv_ms;
        if (silent > hb * self->cfg.liveness) {
            zlistx_add_end(dead, h);
            continue;
        }
        if (silent > 2 * hb && h->state == HOST_ONLINE) {
            h->state = HOST_SUSPECT;
            outq_event(self, "host.suspect", NULL, NULL, h, "suspect", NULL);
        }
        if (h->resync)
            wcmd_resync(self, h); /* commands were refused: one full resend */
        if (now_ms - h->last_sent_ms >= hb)
            outq_worker(self, h, TT_W_HEARTBEAT, NULL, 0);
    }
    for (host_t *h = zlistx_first(dead); h; h = zlistx_next(dead))
        s_host_down(self, h, "missed heartbeats");
    zlistx_destroy(&dead);
    if (wcmd_freeing_tick(self, now_ms))
        self->admit_wanted = true; /* the reaper's tick runs admission */
}
