/*
 * model: hosts, envs and VMs in memory, their accounting and allocations.
 *
 * Allocation bitmaps are per host (VM ids 2..65534, public ports
 * 40000..59999) and pool-wide for MACs (52:54:00 + 24 bits). Cursors move
 * round-robin so an id freed a moment ago is the last to be handed out
 * again: a late packet or a slow worker never meets a new owner at once.
 * The schema's UNIQUE constraints are the second line of defence.
 */
#include "model.h"
#include "ttguest.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BIT_GET(map, i) (((map)[(i) >> 3] >> ((i)&7)) & 1)
#define BIT_SET(map, i) ((map)[(i) >> 3] |= (uint8_t)(1u << ((i)&7)))
#define BIT_CLR(map, i) ((map)[(i) >> 3] &= (uint8_t) ~(1u << ((i)&7)))

host_t *model_host_get(broker_t *self, const char *id)
{
    return zhashx_lookup(self->hosts, id);
}

host_t *model_host_ensure(broker_t *self, const char *id)
{
    host_t *host = zhashx_lookup(self->hosts, id);
    if (host)
        return host;
    host = calloc(1, sizeof *host);
    if (!host)
        return NULL;
    snprintf(host->id, sizeof host->id, "%s", id);
    host->state = HOST_DOWN;
    host->vmid_cursor = TT_VMID_MIN;
    zhashx_insert(self->hosts, id, host);
    return host;
}

void model_host_caps(host_t *host)
{
    host->cpu_total = host->pin_cpu ? host->pin_cpu : host->adv_cpu;
    host->mem_total = host->pin_mem ? host->pin_mem : host->adv_mem;
    host->disk_total = host->pin_disk ? host->pin_disk : host->adv_disk;
}

/* Whether h holds every blob of a catalog image (its "digest size file"
 * lines). */
bool model_host_holds(const host_t *h, const char *blobs)
{
    if (!h->image_digests)
        return false;
    for (const char *p = blobs; *p;) {
        char d[72];
        size_t n = strcspn(p, " \n");
        if (n != 71)
            return false;
        memcpy(d, p, n);
        d[n] = 0;
        if (!zhashx_lookup(h->image_digests, d))
            return false;
        p = strchr(p, '\n');
        if (!p)
            break;
        p++;
    }
    return true;
}

void model_vm_set_image(vm_t *vm, const vm_t *from)
{
    memcpy(vm->image_digest, from->image_digest, sizeof vm->image_digest);
    memcpy(vm->image_kind, from->image_kind, sizeof vm->image_kind);
    memcpy(vm->image_blobs, from->image_blobs, sizeof vm->image_blobs);
}

bool model_host_has_engine(const host_t *host, const char *engine)
{
    for (int i = 0; i < host->n_engines; i++)
        if (strcmp(host->engines[i], engine) == 0)
            return true;
    return false;
}

bool model_host_has(const host_t *host, const char *engine, const char *image)
{
    bool eng = false, img = false;
    for (int i = 0; i < host->n_engines && !eng; i++)
        eng = strcmp(host->engines[i], engine) == 0;
    for (int i = 0; i < host->n_images && !img; i++)
        img = strcmp(host->images[i], image) == 0;
    return eng && img;
}

static void s_env_key(const char *tenant, const char *name, char *key, size_t len)
{
    snprintf(key, len, "%s/%s", tenant, name);
}

env_t *model_env_get(broker_t *self, const char *tenant, const char *name)
{
    char key[2 * TT_MAX_NAME + 2];
    s_env_key(tenant, name, key, sizeof key);
    return zhashx_lookup(self->envs, key);
}

env_t *model_env_new(broker_t *self, const char *tenant, const char *name)
{
    env_t *env = calloc(1, sizeof *env);
    if (!env)
        return NULL;
    snprintf(env->tenant, sizeof env->tenant, "%s", tenant);
    snprintf(env->name, sizeof env->name, "%s", name);
    char key[2 * TT_MAX_NAME + 2];
    s_env_key(tenant, name, key, sizeof key);
    zhashx_insert(self->envs, key, env);
    return env;
}

void model_env_free(broker_t *self, env_t **env_p)
{
    env_t *env = *env_p;
    if (!env)
        return;
    while (env->n_vms > 0)
        model_vm_remove(self, env->vms[env->n_vms - 1]);
    char key[2 * TT_MAX_NAME + 2];
    s_env_key(env->tenant, env->name, key, sizeof key);
    zhashx_delete(self->envs, key);
    model_env_set_guest(env, NULL, 0, NULL, 0, NULL, NULL);
    free(env->vms);
    free(env);
    *env_p = NULL;
}

bool model_vm_holds_cpu(const vm_t *vm)
{
    return tt_vm_state_reserves_cpu(vm->state); /* the rule lives in schema/ttproto.h */
}

static void s_account(vm_t *vm, int sign, bool cpu_mem, bool disk)
{
    host_t *h = vm->host;
    if (cpu_mem) {
        h->cpu_used += (uint32_t)(sign * (int64_t)vm->cpu);
        h->mem_used += (uint64_t)(sign * (int64_t)vm->mem);
    }
    if (disk)
        h->disk_used += (uint64_t)(sign * (int64_t)vm->disk);
}

/* Each host keeps the list of its VMs (host->vms, linked through
 * vm->host_next / host_prev), so "this host's VMs" never scans every env. */
static void s_host_link(host_t *host, vm_t *vm)
{
    vm->host_prev = NULL;
    vm->host_next = host->vms;
    if (host->vms)
        host->vms->host_prev = vm;
    host->vms = vm;
}

static void s_host_unlink(vm_t *vm)
{
    if (vm->host_prev)
        vm->host_prev->host_next = vm->host_next;
    else if (vm->host->vms == vm)
        vm->host->vms = vm->host_next;
    if (vm->host_next)
        vm->host_next->host_prev = vm->host_prev;
    vm->host_prev = vm->host_next = NULL;
}

vm_t *model_vm_add(broker_t *self, env_t *env, host_t *host, uint32_t vm_id, uint64_t mac)
{
    if (env->n_vms == env->cap_vms) {
        int cap = env->cap_vms ? env->cap_vms * 2 : 4;
        vm_t **vms = realloc(env->vms, (size_t)cap * sizeof *vms);
        if (!vms)
            return NULL;
        env->vms = vms;
        env->cap_vms = cap;
    }
    vm_t *vm = calloc(1, sizeof *vm);
    if (!vm)
        return NULL;
    vm->env = env;
    vm->host = host;
    vm->vm_id = vm_id;
    vm->state = TTFLEET__VM_STATE__VM_STOPPED; /* holds nothing until set */
    tt_vm_ip(vm_id, vm->ip, sizeof vm->ip);
    alloc_mac_format(mac, vm->mac, sizeof vm->mac);
    alloc_vm_id_mark(host, vm_id, true);
    alloc_mac_mark(self, mac, true);
    host->vm_count++;
    s_host_link(host, vm);
    env->vms[env->n_vms++] = vm;
    char key[TT_MAX_NAME + 16];
    snprintf(key, sizeof key, "%s/%u", host->id, vm_id);
    zhashx_update(self->vm_index, key, vm);
    return vm;
}

zlistx_t *model_host_envs(const host_t *host)
{
    zlistx_t *envs = zlistx_new();
    zhashx_t *seen = zhashx_new();
    for (vm_t *vm = host->vms; envs && seen && vm; vm = vm->host_next) {
        char key[32];
        snprintf(key, sizeof key, "%p", (void *)vm->env);
        if (zhashx_insert(seen, key, vm->env) == 0)
            zlistx_add_end(envs, vm->env);
    }
    zhashx_destroy(&seen);
    return envs;
}

vm_t *model_vm_find(broker_t *self, const char *host, uint32_t vm_id)
{
    char key[TT_MAX_NAME + 16];
    snprintf(key, sizeof key, "%s/%u", host, vm_id);
    return zhashx_lookup(self->vm_index, key);
}

void model_vm_remove(broker_t *self, vm_t *vm)
{
    env_t *env = vm->env;
    char key[TT_MAX_NAME + 16];
    snprintf(key, sizeof key, "%s/%u", vm->host->id, vm->vm_id);
    if (zhashx_lookup(self->vm_index, key) == vm)
        zhashx_delete(self->vm_index, key);
    s_account(vm, -1, model_vm_holds_cpu(vm), true);
    alloc_vm_ports_release(vm);
    alloc_vm_id_mark(vm->host, vm->vm_id, false);
    uint64_t mac;
    if (alloc_mac_parse(vm->mac, &mac) == 0)
        alloc_mac_mark(self, mac, false);
    vm->host->vm_count--;
    s_host_unlink(vm);
    for (int i = 0; i < env->n_vms; i++)
        if (env->vms[i] == vm) {
            memmove(&env->vms[i], &env->vms[i + 1], (size_t)(env->n_vms - i - 1) * sizeof vm);
            env->n_vms--;
            break;
        }
    free(vm);
}

int model_vm_move(broker_t *self, vm_t *vm, host_t *to, uint32_t vm_id, uint64_t mac,
                  const uint32_t *gports, int n_gports)
{
    char key[TT_MAX_NAME + 16];
    snprintf(key, sizeof key, "%s/%u", vm->host->id, vm->vm_id);
    if (zhashx_lookup(self->vm_index, key) == vm)
        zhashx_delete(self->vm_index, key);
    bool holds = model_vm_holds_cpu(vm);
    s_account(vm, -1, holds, true);
    alloc_vm_ports_release(vm);
    alloc_vm_id_mark(vm->host, vm->vm_id, false);
    uint64_t old_mac;
    if (alloc_mac_parse(vm->mac, &old_mac) == 0)
        alloc_mac_mark(self, old_mac, false);
    vm->host->vm_count--;
    s_host_unlink(vm);

    vm->host = to;
    s_host_link(to, vm);
    vm->vm_id = vm_id;
    tt_vm_ip(vm_id, vm->ip, sizeof vm->ip);
    alloc_mac_format(mac, vm->mac, sizeof vm->mac);
    alloc_vm_id_mark(to, vm_id, true);
    alloc_mac_mark(self, mac, true);
    to->vm_count++;
    s_account(vm, 1, holds, true);
    snprintf(key, sizeof key, "%s/%u", to->id, vm_id);
    zhashx_update(self->vm_index, key, vm);
    return alloc_vm_ports(vm, gports, n_gports);
}

void model_vm_set_state(vm_t *vm, int state)
{
    bool before = model_vm_holds_cpu(vm);
    vm->state = state;
    if (state != TTFLEET__VM_STATE__VM_PENDING)
        vm->pull_done = vm->pull_total = 0; /* a fetch shows only while pending */
    if (state != TTFLEET__VM_STATE__VM_RUNNING) {
        vm->ready = false; /* probed again after start / resume */
        vm->ready_at = 0;
    }
    bool after = model_vm_holds_cpu(vm);
    if (before != after)
        s_account(vm, after ? 1 : -1, true, false);
}

void model_vm_set_hw(vm_t *vm, uint32_t cpu, uint32_t mem, uint32_t disk)
{
    bool holds = model_vm_holds_cpu(vm);
    s_account(vm, -1, holds, true);
    vm->cpu = cpu;
    vm->mem = mem;
    vm->disk = disk;
    s_account(vm, 1, holds, true);
}

int model_vm_desired(const vm_t *vm)
{
    if (vm->doomed)
        return TTFLEET__VM_STATE__VM_ABSENT;
    switch (vm->env->target) {
    case TARGET_STOPPED:
        return TTFLEET__VM_STATE__VM_STOPPED;
    case TARGET_PAUSED:
        return TTFLEET__VM_STATE__VM_PAUSED;
    case TARGET_SUSPENDED:
        return TTFLEET__VM_STATE__VM_SUSPENDED;
    default:
        return TTFLEET__VM_STATE__VM_RUNNING;
    }
}

static const char *s_target_names[] = {"creating", "running", "stopped", "paused", "suspended"};
#define S_N_TARGETS ((int)(sizeof s_target_names / sizeof *s_target_names))

const char *model_target_name(env_target_t t)
{
    return (int)t >= 0 && (int)t < S_N_TARGETS ? s_target_names[t] : "unknown";
}

int model_target_parse(const char *s)
{
    for (int i = 0; i < S_N_TARGETS; i++)
        if (strcmp(s, s_target_names[i]) == 0)
            return i;
    return -1;
}

const char *model_env_state(const env_t *env)
{
    if (env->busy) {
        switch (env->busy->kind) {
        case OP_CREATE:
            return "creating";
        case OP_STOP:
            return "stopping";
        case OP_START:
            return "starting";
        case OP_PAUSE:
            return "pausing";
        case OP_RESUME:
            return "resuming";
        case OP_SUSPEND:
            return "suspending";
        default:
            break;
        }
    }
    if (env->target == TARGET_CREATING)
        return model_target_name(env->target);
    for (int i = 0; i < env->n_vms; i++)
        if (env->vms[i]->state != model_vm_desired(env->vms[i]))
            return "degraded";
    return model_target_name(env->target);
}

void model_env_set_labels(env_t *env, char *const *labels, size_t n)
{
    env->n_labels = 0;
    for (size_t i = 0; i < n && env->n_labels < TT_MAX_LABELS; i++)
        if (tt_label_valid(labels[i]))
            snprintf(env->labels[env->n_labels++], TT_MAX_LABEL + 1, "%s", labels[i]);
}

void model_env_set_labels_text(env_t *env, const char *text)
{
    env->n_labels = 0;
    while (text && *text && env->n_labels < TT_MAX_LABELS) {
        const char *nl = strchr(text, '\n');
        size_t len = nl ? (size_t)(nl - text) : strlen(text);
        char label[TT_MAX_LABEL + 2];
        if (len <= TT_MAX_LABEL) {
            memcpy(label, text, len);
            label[len] = 0;
            if (tt_label_valid(label))
                memcpy(env->labels[env->n_labels++], label, len + 1);
        }
        text = nl ? nl + 1 : text + len;
    }
}

void model_env_labels_text(const env_t *env, char *buf, size_t len)
{
    size_t off = 0;
    buf[0] = 0;
    for (int i = 0; i < env->n_labels && off < len; i++)
        off += (size_t)snprintf(buf + off, len - off, "%s%s", i ? "\n" : "", env->labels[i]);
}

bool model_env_has_labels(const env_t *env, char *const *want, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        bool found = false;
        for (int i = 0; i < env->n_labels && !found; i++)
            found = strcmp(env->labels[i], want[k]) == 0;
        if (!found)
            return false;
    }
    return true;
}

/* ---- allocations ---- */

void alloc_vm_id_mark(host_t *host, uint32_t vm_id, bool used)
{
    if (vm_id > 65535)
        return;
    if (used)
        BIT_SET(host->vmid_used, vm_id);
    else
        BIT_CLR(host->vmid_used, vm_id);
}

/* Whether a VM of env other than skip has that id (on any host). */
static bool s_env_has_vm_id(const env_t *env, const vm_t *skip, uint32_t vm_id)
{
    for (int i = 0; env && i < env->n_vms; i++)
        if (env->vms[i] != skip && env->vms[i]->vm_id == vm_id)
            return true;
    return false;
}

int alloc_vm_id_in_env(host_t *host, const env_t *env, const vm_t *skip, uint32_t *vm_id)
{
    uint32_t span = TT_VMID_MAX - TT_VMID_MIN + 1;
    for (uint32_t i = 0; i < span; i++) {
        uint32_t c = host->vmid_cursor;
        if (c < TT_VMID_MIN || c > TT_VMID_MAX)
            c = TT_VMID_MIN;
        host->vmid_cursor = c + 1;
        if (!BIT_GET(host->vmid_used, c) && !s_env_has_vm_id(env, skip, c)) {
            *vm_id = c;
            return 0;
        }
    }
    return -1;
}

void alloc_port_mark(host_t *host, uint32_t port, bool used)
{
    if (port < TT_PORT_MIN || port > TT_PORT_MAX)
        return;
    uint32_t i = port - TT_PORT_MIN;
    if (used)
        BIT_SET(host->port_used, i);
    else
        BIT_CLR(host->port_used, i);
}

int alloc_port(host_t *host, uint32_t *port)
{
    for (uint32_t n = 0; n < BROKER_NPORTS; n++) {
        uint32_t i = host->port_cursor % BROKER_NPORTS;
        host->port_cursor = i + 1;
        if (!BIT_GET(host->port_used, i)) {
            BIT_SET(host->port_used, i);
            *port = TT_PORT_MIN + i;
            return 0;
        }
    }
    return -1;
}

int alloc_vm_ports(vm_t *vm, const uint32_t *gports, int n)
{
    alloc_vm_ports_release(vm);
    for (int i = 0; i < n; i++) {
        uint32_t p;
        if (alloc_port(vm->host, &p)) {
            alloc_vm_ports_release(vm);
            return -1;
        }
        vm->ports[i].guest = gports[i];
        vm->ports[i].public_port = p;
        vm->n_ports = i + 1;
    }
    return 0;
}

int alloc_vm_ports_plan(vm_t *vm, const uint32_t *gports, int n, portmap_t *next, bool *fresh)
{
    for (int g = 0; g < n; g++) {
        next[g].guest = gports[g];
        next[g].public_port = 0;
        fresh[g] = false;
        for (int o = 0; o < vm->n_ports; o++)
            if (vm->ports[o].guest == gports[g])
                next[g].public_port = vm->ports[o].public_port;
    }
    /* free the dropped ones first, so a full host can still swap ports */
    for (int o = 0; o < vm->n_ports; o++) {
        bool kept = false;
        for (int g = 0; g < n; g++)
            kept |= next[g].public_port == vm->ports[o].public_port;
        if (!kept)
            alloc_port_mark(vm->host, vm->ports[o].public_port, false);
    }
    for (int g = 0; g < n; g++)
        if (!next[g].public_port) {
            if (alloc_port(vm->host, &next[g].public_port)) {
                next[g].public_port = 0;
                alloc_vm_ports_unplan(vm, next, fresh, n);
                return -1;
            }
            fresh[g] = true;
        }
    return 0;
}

void alloc_vm_ports_unplan(vm_t *vm, const portmap_t *next, const bool *fresh, int n)
{
    for (int g = 0; g < n; g++)
        if (fresh[g])
            alloc_port_mark(vm->host, next[g].public_port, false);
    for (int o = 0; o < vm->n_ports; o++)
        alloc_port_mark(vm->host, vm->ports[o].public_port, true);
}

void alloc_vm_ports_apply(vm_t *vm, const portmap_t *next, int n)
{
    for (int g = 0; g < n; g++)
        vm->ports[g] = next[g];
    vm->n_ports = n;
}

void alloc_vm_ports_release(vm_t *vm)
{
    for (int i = 0; i < vm->n_ports; i++)
        alloc_port_mark(vm->host, vm->ports[i].public_port, false);
    vm->n_ports = 0;
}

#define MAC_SPACE (1u << 24)

void alloc_mac_mark(broker_t *self, uint64_t mac, bool used)
{
    uint32_t i = (uint32_t)(mac & (MAC_SPACE - 1));
    if (used)
        BIT_SET(self->mac_used, i);
    else
        BIT_CLR(self->mac_used, i);
}

int alloc_mac(broker_t *self, uint64_t *mac)
{
    for (uint32_t n = 0; n < MAC_SPACE; n++) {
        uint32_t i = self->mac_cursor % MAC_SPACE;
        self->mac_cursor = i + 1;
        if (i == 0)
            continue;
        if (!BIT_GET(self->mac_used, i)) {
            *mac = i;
            return 0;
        }
    }
    return -1;
}

void alloc_mac_format(uint64_t mac, char *buf, size_t len)
{
    snprintf(buf, len, "52:54:00:%02x:%02x:%02x", (unsigned)(mac >> 16) & 0xff,
             (unsigned)(mac >> 8) & 0xff, (unsigned)mac & 0xff);
}

int alloc_mac_parse(const char *s, uint64_t *mac)
{
    unsigned a, b, c;
    if (sscanf(s, "52:54:00:%2x:%2x:%2x", &a, &b, &c) != 3)
        return -1;
    *mac = ((uint64_t)a << 16) | ((uint64_t)b << 8) | c;
    return 0;
}

/* ---- guest inputs (issue 11) ---- */

int model_env_set_guest(env_t *env, char *const *keys, int n_keys, const uint8_t *ud, size_t ud_len,
                        const char *ready, const char *group_ready)
{
    for (int i = 0; i < env->n_ssh_keys; i++)
        free(env->ssh_keys[i]);
    free(env->ssh_keys);
    free(env->user_data);
    free(env->ready);
    free(env->group_ready);
    env->ssh_keys = NULL;
    env->n_ssh_keys = 0;
    env->user_data = NULL;
    env->user_data_len = 0;
    env->ready = env->group_ready = NULL;
    if (n_keys > 0) {
        env->ssh_keys = calloc((size_t)n_keys, sizeof *env->ssh_keys);
        if (!env->ssh_keys)
            return -1;
        for (int i = 0; i < n_keys; i++) {
            env->ssh_keys[i] = strdup(keys[i]);
            if (!env->ssh_keys[i])
                return -1;
            env->n_ssh_keys = i + 1;
        }
    }
    if (ud_len > 0) {
        env->user_data = malloc(ud_len);
        if (!env->user_data)
            return -1;
        memcpy(env->user_data, ud, ud_len);
        env->user_data_len = ud_len;
    }
    if (ready && *ready && !(env->ready = strdup(ready)))
        return -1;
    if (group_ready && *group_ready && !(env->group_ready = strdup(group_ready)))
        return -1;
    return 0;
}

char *model_vm_ready_spec(const vm_t *vm)
{
    char spec[TT_READY_MAX + 1];
    const char *g = vm->env->group_ready;
    size_t il = strlen(vm->image);
    while (g && *g) {
        const char *nl = strchr(g, '\n');
        size_t ll = nl ? (size_t)(nl - g) : strlen(g);
        if (ll > il && strncmp(g, vm->image, il) == 0 && g[il] == '\t') {
            size_t sl = ll - il - 1;
            if (sl > TT_READY_MAX)
                sl = TT_READY_MAX;
            memcpy(spec, g + il + 1, sl);
            spec[sl] = '\0';
            return strdup(spec);
        }
        g = nl ? nl + 1 : NULL;
    }
    return strdup(vm->env->ready ? vm->env->ready : "");
}

uint32_t model_host_engine_caps(const host_t *host, const char *engine)
{
    for (int i = 0; engine && i < host->n_engines; i++)
        if (strcmp(host->engines[i], engine) == 0)
            return host->engine_caps[i];
    return 0;
}

uint32_t model_engine_caps(broker_t *self, const char *engine, bool *said)
{
    uint32_t caps = 0;
    *said = false;
    for (host_t *h = zhashx_first(self->hosts); h; h = zhashx_next(self->hosts))
        if (h->caps_said && model_host_has_engine(h, engine)) {
            caps |= model_host_engine_caps(h, engine);
            *said = true;
        }
    return caps;
}

const char *model_host_engine_with(const host_t *host, uint32_t caps)
{
    for (int i = 0; i < host->n_engines; i++)
        if ((model_host_engine_caps(host, host->engines[i]) & caps) == caps)
            return host->engines[i];
    return NULL;
}
