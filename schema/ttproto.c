/*
 * ttproto: shared wire rules. See ttproto.h.
 *
 * Validation is strict on purpose: the broker trusts nothing that comes
 * from a socket, and a request that passes tt_request_validate() can be
 * used without any further range checks on its fields.
 */
#include "ttproto.h"
#include "ttblob.h"

#include "ttguest.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

static const char *s_status_names[] = {
    "OK",           "BAD_REQUEST",   "NOT_FOUND", "ALREADY_EXISTS",  "NO_CAPACITY",
    "TOO_SOON",     "INVALID_STATE", "FORBIDDEN", "IN_PROGRESS",     "WORKER_FAILED",
    "TIMEOUT",      "INTERNAL",      "UNKNOWN_SERVICE", "UNAVAILABLE", "TOO_LARGE",
};

const char *tt_status_name(int status)
{
    switch (status) { /* admission codes live at 30..34 */
    case TTFLEET__STATUS__QUOTA_EXCEEDED:
        return "QUOTA_EXCEEDED";
    case TTFLEET__STATUS__QUEUED:
        return "QUEUED";
    case TTFLEET__STATUS__QUEUE_FULL:
        return "QUEUE_FULL";
    case TTFLEET__STATUS__QUEUE_EXPIRED:
        return "QUEUE_EXPIRED";
    case TTFLEET__STATUS__QUEUE_CANCELLED:
        return "QUEUE_CANCELLED";
    case TTFLEET__STATUS__RATE_LIMITED:
        return "RATE_LIMITED";
    case TTFLEET__STATUS__NOT_LEADER:
        return "NOT_LEADER";
    default:
        break;
    }
    /* the guest area's codes (20-24) */
    if (status == TTFLEET__STATUS__GUEST_UNREACHABLE)
        return "GUEST_UNREACHABLE";
    if (status == TTFLEET__STATUS__GUEST_FAILED)
        return "GUEST_FAILED";
    if (status == TTFLEET__STATUS__CHECKSUM_MISMATCH)
        return "CHECKSUM_MISMATCH";
    /* the images area's codes (25-29) */
    if (status == TTFLEET__STATUS__IMAGE_IN_USE)
        return "IMAGE_IN_USE";
    if (status == TTFLEET__STATUS__DIGEST_MISMATCH)
        return "DIGEST_MISMATCH";
    if (status == TTFLEET__STATUS__INCOMPLETE)
        return "INCOMPLETE";
    if (status < 0 || (size_t)status >= sizeof s_status_names / sizeof *s_status_names)
        return "UNKNOWN";
    return s_status_names[status];
}

static const char *s_state_names[] = {"absent", "running", "stopped", "paused",
                                      "dead",   "pending", "lost",    "suspended"};

const char *tt_vm_state_name(int state)
{
    if (state < 0 || (size_t)state >= sizeof s_state_names / sizeof *s_state_names)
        return "unknown";
    return s_state_names[state];
}

static const char *const s_cap_names[] = {"catalog", "bootstrap", "guest",  "snapshots",
                                          "nic-tap", "nic-veth",  "hostfwd"};

uint32_t tt_cap_parse(const char *name)
{
    for (size_t i = 0; name && i < sizeof s_cap_names / sizeof *s_cap_names; i++)
        if (strcmp(name, s_cap_names[i]) == 0)
            return 1u << i;
    return 0;
}

size_t tt_cap_names(uint32_t caps, const char **names, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < sizeof s_cap_names / sizeof *s_cap_names && n < max; i++)
        if (caps & (1u << i))
            names[n++] = s_cap_names[i];
    return n;
}

bool tt_name_valid(const char *s)
{
    if (!s || !*s || *s == '.')
        return false;
    size_t n = 0;
    for (const char *p = s; *p; p++, n++) {
        char c = *p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '-';
        if (!ok || n >= TT_MAX_NAME)
            return false;
    }
    return true;
}

static bool s_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

bool tt_label_valid(const char *s)
{
    if (!s || !s_alnum(*s))
        return false;
    const char *eq = strchr(s, '=');
    if (!eq || eq - s > TT_MAX_LABEL_KEY || strlen(eq + 1) > TT_MAX_LABEL_VALUE)
        return false;
    for (const char *p = s; p < eq; p++)
        if (!s_alnum(*p) && *p != '.' && *p != '_' && *p != '-' && *p != '/')
            return false;
    for (const char *p = eq + 1; *p; p++)
        if (!s_alnum(*p) && *p != '.' && *p != '_' && *p != '-')
            return false;
    return true;
}

int tt_labels_check(char *const *labels, size_t n, char *err, size_t errlen)
{
    if (n > TT_MAX_LABELS) {
        snprintf(err, errlen, "too many labels: %zu (at most %d)", n, TT_MAX_LABELS);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        if (!tt_label_valid(labels[i])) {
            snprintf(err, errlen,
                     "invalid label '%.80s': KEY=VALUE, KEY 1..%d of A-Z a-z 0-9 . _ - / "
                     "starting with a letter or digit, VALUE 0..%d of A-Z a-z 0-9 . _ -",
                     labels[i] ? labels[i] : "", TT_MAX_LABEL_KEY, TT_MAX_LABEL_VALUE);
            return -1;
        }
        size_t klen = (size_t)(strchr(labels[i], '=') - labels[i]);
        for (size_t k = 0; k < i; k++)
            if (strncmp(labels[k], labels[i], klen + 1) == 0) {
                snprintf(err, errlen, "label key '%.*s' given twice", (int)klen, labels[i]);
                return -1;
            }
    }
    return 0;
}

bool tt_key_valid(const char *s)
{
    static const char z85[] = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                              ".-:+=^!/*?&<>()[]{}@%$#";
    if (!s || strlen(s) != TT_KEY_LEN)
        return false;
    for (const char *p = s; *p; p++)
        if (!strchr(z85, *p))
            return false;
    /* each group of five encodes 32 bits: the largest is "%nSc0" */
    for (int g = 0; g < TT_KEY_LEN; g += 5) {
        uint64_t v = 0;
        for (int i = 0; i < 5; i++)
            v = v * 85 + (uint64_t)(strchr(z85, s[g + i]) - z85);
        if (v > 0xffffffffu)
            return false;
    }
    return true;
}

bool tt_key_role_valid(const char *s)
{
    return s && (strcmp(s, "user") == 0 || strcmp(s, "admin") == 0 || strcmp(s, "gateway") == 0);
}

bool tt_request_id_valid(const char *s)
{
    if (!s || !*s)
        return false;
    size_t n = 0;
    for (const char *p = s; *p; p++, n++)
        if (*p <= ' ' || *p > '~' || n >= TT_MAX_REQUEST_ID)
            return false;
    return true;
}

void tt_vm_ip(uint32_t vm_id, char *buf, size_t len)
{
    snprintf(buf, len, "10.10.%u.%u", (vm_id >> 8) & 0xff, vm_id & 0xff);
}

int64_t tt_now(void)
{
    return (int64_t)time(NULL);
}

int64_t tt_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#define FAIL(...)                                                                              \
    do {                                                                                       \
        snprintf(err, errlen, __VA_ARGS__);                                                    \
        return -1;                                                                             \
    } while (0)

static int s_ports_valid(size_t n, const uint32_t *ports, char *err, size_t errlen)
{
    if (n > TT_MAX_PORTS_PER_VM)
        FAIL("too many ports: %zu (at most %d)", n, TT_MAX_PORTS_PER_VM);
    for (size_t i = 0; i < n; i++) {
        if (ports[i] == 0 || ports[i] > 65535)
            FAIL("port %u out of range 1..65535", ports[i]);
        for (size_t j = 0; j < i; j++)
            if (ports[j] == ports[i])
                FAIL("port %u given twice", ports[i]);
    }
    return 0;
}

static int s_env_name_valid(const char *name, char *err, size_t errlen)
{
    if (!tt_name_valid(name))
        FAIL("invalid env name '%.80s': use 1..64 of [A-Za-z0-9._-], not starting with '.'",
             name ? name : "");
    return 0;
}

static int s_hw_valid(uint32_t cpu, uint32_t mem, uint32_t disk, char *err, size_t errlen)
{
    if (cpu > TT_MAX_CPU)
        FAIL("cpu %u out of range 1..%d", cpu, TT_MAX_CPU);
    if (mem > TT_MAX_MEM_MIB)
        FAIL("mem %u MiB out of range 1..%u", mem, TT_MAX_MEM_MIB);
    if (disk > TT_MAX_DISK_MIB)
        FAIL("disk %u MiB out of range 1..%u", disk, TT_MAX_DISK_MIB);
    return 0;
}

static int s_create_valid(const Ttfleet__EnvCreate *c, char *err, size_t errlen)
{
    if (s_env_name_valid(c->name, err, errlen))
        return -1;
    if (c->boot && *c->boot && strcmp(c->boot, "auto") != 0 && strcmp(c->boot, "snapshot") != 0 &&
        strcmp(c->boot, "cold") != 0)
        FAIL("boot '%.20s' is not auto, snapshot or cold", c->boot);
    if (tt_labels_check(c->labels, c->n_labels, err, errlen))
        return -1;
    if (c->n_images == 0)
        FAIL("at least one image is required");
    if (c->n_images > TT_MAX_IMAGES_PER_ENV)
        FAIL("too many images: %zu (at most %d)", c->n_images, TT_MAX_IMAGES_PER_ENV);
    uint64_t total = 0;
    for (size_t i = 0; i < c->n_images; i++) {
        const Ttfleet__ImageCount *ic = c->images[i];
        tt_image_ref_t ref;
        char why[160];
        /* a host-local image is a plain name; a catalog image may also be
         * NAME:TAG or NAME@sha256:<hex> (ttblob.h) */
        if (!tt_name_valid(ic->image) &&
            (!ic->image || tt_image_ref_parse(ic->image, &ref, why, sizeof why)))
            FAIL("invalid image name '%.80s'", ic->image ? ic->image : "");
        total += ic->dup ? ic->dup : 1;
        if (total > TT_MAX_VMS_PER_ENV)
            FAIL("too many VMs: more than %d in one env", TT_MAX_VMS_PER_ENV);
    }
    if (c->engine && *c->engine && !tt_name_valid(c->engine))
        FAIL("invalid engine name '%.80s'", c->engine);
    if (s_hw_valid(c->cpu, c->mem_mib, c->disk_mib, err, errlen))
        return -1;
    if (s_ports_valid(c->n_ports, c->ports, err, errlen))
        return -1;
    if (c->lifetime > (uint64_t)TT_MAX_LIFETIME_ADMIN)
        FAIL("lifetime %llu s is over the limit of %lld s", (unsigned long long)c->lifetime,
             TT_MAX_LIFETIME_ADMIN);
    if (c->priority > TT_PRIO_MAX)
        FAIL("priority %u out of range 0..%d", c->priority, TT_PRIO_MAX);
    if (c->max_wait > TT_QUEUE_WAIT_MAX)
        FAIL("max-wait %u s out of range 0..%lld s", c->max_wait, TT_QUEUE_WAIT_MAX);
    if (!c->queue && (c->max_wait || c->priority))
        FAIL("max-wait and priority need queue");
    return tt_guest_create_valid(c, err, errlen);
}

/* One optional quota limit: absent, -1 (no limit) or 0..max. */
static int s_quota_value_valid(const Ttfleet__QuotaLimit *l, int64_t max, const char *what,
                               char *err, size_t errlen)
{
    if (l && (l->value < -1 || l->value > max))
        FAIL("quota %s %lld out of range: -1 (no limit) or 0..%lld", what, (long long)l->value,
             (long long)max);
    return 0;
}

static int s_quota_set_valid(const Ttfleet__QuotaSet *q, char *err, size_t errlen)
{
    if (!tt_name_valid(q->tenant))
        FAIL("invalid tenant '%.80s'", q->tenant ? q->tenant : "");
    if (s_quota_value_valid(q->envs, TT_QUOTA_MAX_ENVS, "envs", err, errlen) ||
        s_quota_value_valid(q->vms, TT_QUOTA_MAX_VMS, "vms", err, errlen) ||
        s_quota_value_valid(q->cpu, TT_QUOTA_MAX_CPU, "cpu", err, errlen) ||
        s_quota_value_valid(q->mem_mib, TT_QUOTA_MAX_MEM_MIB, "mem", err, errlen) ||
        s_quota_value_valid(q->disk_mib, TT_QUOTA_MAX_DISK_MIB, "disk", err, errlen) ||
        s_quota_value_valid(q->max_lifetime, TT_MAX_LIFETIME_ADMIN, "max-lifetime", err,
                            errlen) ||
        s_quota_value_valid(q->max_priority, TT_PRIO_MAX, "max-priority", err, errlen))
        return -1;
    if (q->max_lifetime && q->max_lifetime->value == 0)
        FAIL("quota max-lifetime 0 would refuse every env: give 1.. or -1");
    if (!q->envs && !q->vms && !q->cpu && !q->mem_mib && !q->disk_mib && !q->max_lifetime &&
        !q->max_priority)
        FAIL("quota set changes nothing: give at least one limit");
    return 0;
}

/* One VM of an env: env name, VM id, optional host id. */
static int s_vm_ref_valid(const char *name, uint32_t vm_id, const char *host, char *err,
                          size_t errlen)
{
    if (s_env_name_valid(name, err, errlen))
        return -1;
    if (vm_id < TT_VMID_MIN || vm_id > TT_VMID_MAX)
        FAIL("VM id %u out of range", vm_id);
    if (host && *host && !tt_name_valid(host))
        FAIL("invalid host id");
    return 0;
}

int tt_request_validate(const Ttfleet__Request *req, char *err, size_t errlen)
{
    if (!tt_request_id_valid(req->request_id))
        FAIL("invalid request id: 1..64 printable characters without spaces");
    if (!tt_name_valid(req->tenant))
        FAIL("invalid tenant '%.80s': use 1..64 of [A-Za-z0-9._-]", req->tenant ? req->tenant : "");
    switch (req->op_case) {
    case TTFLEET__REQUEST__OP_ENV_CREATE:
        return s_create_valid(req->env_create, err, errlen);
    case TTFLEET__REQUEST__OP_ENV_SHOW:
        return s_env_name_valid(req->env_show->name, err, errlen);
    case TTFLEET__REQUEST__OP_ENV_STOP:
        return s_env_name_valid(req->env_stop->name, err, errlen);
    case TTFLEET__REQUEST__OP_ENV_START:
        return s_env_name_valid(req->env_start->name, err, errlen);
    case TTFLEET__REQUEST__OP_ENV_PAUSE:
        return s_env_name_valid(req->env_pause->name, err, errlen);
    case TTFLEET__REQUEST__OP_ENV_RESUME:
        return s_env_name_valid(req->env_resume->name, err, errlen);
    case TTFLEET__REQUEST__OP_ENV_SUSPEND:
        return s_env_name_valid(req->env_suspend->name, err, errlen);
    case TTFLEET__REQUEST__OP_ENV_DELETE:
        return s_env_name_valid(req->env_delete->name, err, errlen);
    case TTFLEET__REQUEST__OP_ENV_LIST:
        return tt_labels_check(req->env_list->labels, req->env_list->n_labels, err, errlen);
    case TTFLEET__REQUEST__OP_HOST_LIST:
    case TTFLEET__REQUEST__OP_POOL_STATUS:
        return 0;
    case TTFLEET__REQUEST__OP_ENV_EXTEND:
        if (s_env_name_valid(req->env_extend->name, err, errlen))
            return -1;
        if (req->env_extend->lifetime == 0 ||
            req->env_extend->lifetime > (uint64_t)TT_MAX_LIFETIME_ADMIN)
            FAIL("lifetime %llu s out of range 1..%lld",
                 (unsigned long long)req->env_extend->lifetime, TT_MAX_LIFETIME_ADMIN);
        return 0;
    case TTFLEET__REQUEST__OP_ENV_UPDATE: {
        const Ttfleet__EnvUpdate *u = req->env_update;
        if (s_env_name_valid(u->name, err, errlen))
            return -1;
        if (s_hw_valid(u->cpu, u->mem_mib, u->disk_mib, err, errlen))
            return -1;
        if (!u->set_ports && u->n_ports)
            FAIL("ports given without set_ports");
        if (s_ports_valid(u->n_ports, u->ports, err, errlen))
            return -1;
        if (u->outgoing != TTFLEET__OUTGOING_MODE__OUTGOING_UNCHANGED &&
            u->outgoing != TTFLEET__OUTGOING_MODE__OUTGOING_DENY &&
            u->outgoing != TTFLEET__OUTGOING_MODE__OUTGOING_ALLOW)
            FAIL("unknown outgoing mode %d", (int)u->outgoing);
        if (!u->cpu && !u->mem_mib && !u->disk_mib && !u->set_ports &&
            u->outgoing == TTFLEET__OUTGOING_MODE__OUTGOING_UNCHANGED)
            FAIL("nothing to update");
        return 0;
    }
    case TTFLEET__REQUEST__OP_ENV_RM_VM: {
        const Ttfleet__EnvRmVm *r = req->env_rm_vm;
        if (s_env_name_valid(r->name, err, errlen))
            return -1;
        bool by_prefix = r->image_prefix && *r->image_prefix;
        if (by_prefix == (r->n_vm_ids > 0))
            FAIL("give either VM ids or an image prefix");
        if (r->n_vm_ids > TT_MAX_VMS_PER_ENV)
            FAIL("too many VM ids");
        for (size_t i = 0; i < r->n_vm_ids; i++)
            if (r->vm_ids[i] < TT_VMID_MIN || r->vm_ids[i] > TT_VMID_MAX)
                FAIL("VM id %u out of range", r->vm_ids[i]);
        if (by_prefix && strlen(r->image_prefix) > TT_MAX_NAME)
            FAIL("image prefix too long");
        if (r->host && *r->host && !tt_name_valid(r->host))
            FAIL("invalid host id");
        return 0;
    }
    case TTFLEET__REQUEST__OP_ENV_CONSOLE: {
        const Ttfleet__EnvConsole *c = req->env_console;
        if (s_vm_ref_valid(c->name, c->vm_id, c->host, err, errlen))
            return -1;
        if (c->max_bytes > TT_CONSOLE_MAX)
            FAIL("max_bytes %u over %d", c->max_bytes, TT_CONSOLE_MAX);
        return 0;
    }
    case TTFLEET__REQUEST__OP_ENV_EXEC: {
        const Ttfleet__EnvExec *x = req->env_exec;
        if (s_vm_ref_valid(x->name, x->vm_id, x->host, err, errlen))
            return -1;
        return tt_exec_valid(x, err, errlen);
    }
    case TTFLEET__REQUEST__OP_ENV_COPY: {
        const Ttfleet__EnvCopy *x = req->env_copy;
        if (s_vm_ref_valid(x->name, x->vm_id, x->host, err, errlen))
            return -1;
        return tt_copy_valid(x, err, errlen);
    }
    case TTFLEET__REQUEST__OP_HOST_DRAIN:
        if (!tt_name_valid(req->host_drain->id))
            FAIL("invalid host id '%.80s'", req->host_drain->id ? req->host_drain->id : "");
        if (req->host_drain->undo && req->host_drain->evacuate)
            FAIL("undo and evacuate exclude each other");
        return 0;
    case TTFLEET__REQUEST__OP_HOST_REMOVE:
        if (!tt_name_valid(req->host_remove->id))
            FAIL("invalid host id '%.80s'", req->host_remove->id ? req->host_remove->id : "");
        return 0;
    case TTFLEET__REQUEST__OP_KEY_LIST:
        return 0;
    case TTFLEET__REQUEST__OP_KEY_ADD: {
        const Ttfleet__KeyAdd *k = req->key_add;
        if (!tt_key_valid(k->public_key))
            FAIL("public key is not 40 characters of Z85 (a CURVE public key)");
        if (!tt_name_valid(k->tenant))
            FAIL("invalid tenant '%.80s': use 1..64 of [A-Za-z0-9._-]", k->tenant ? k->tenant : "");
        if (!tt_key_role_valid(k->role))
            FAIL("invalid role '%.16s': user, admin or gateway", k->role ? k->role : "");
        return 0;
    }
    case TTFLEET__REQUEST__OP_KEY_RM:
        if (!tt_key_valid(req->key_rm->public_key))
            FAIL("public key is not 40 characters of Z85 (a CURVE public key)");
        return 0;
    case TTFLEET__REQUEST__OP_HOST_SET: {
        const Ttfleet__HostSet *h = req->host_set;
        if (!tt_name_valid(h->id))
            FAIL("invalid host id '%.80s'", h->id ? h->id : "");
        if (h->unpin && (h->cpu || h->mem_mib || h->disk_mib))
            FAIL("unpin takes no cpu, mem or disk");
        if (!h->unpin && !h->cpu && !h->mem_mib && !h->disk_mib)
            FAIL("give cpu, mem or disk to pin, or unpin");
        if (h->cpu > TT_MAX_HOST_CPU)
            FAIL("cpu %u over %d", h->cpu, TT_MAX_HOST_CPU);
        if (h->mem_mib > TT_MAX_HOST_MEM_MIB)
            FAIL("mem %llu MiB over %llu", (unsigned long long)h->mem_mib, TT_MAX_HOST_MEM_MIB);
        if (h->disk_mib > TT_MAX_HOST_DISK_MIB)
            FAIL("disk %llu MiB over %llu", (unsigned long long)h->disk_mib,
                 TT_MAX_HOST_DISK_MIB);
        return 0;
    }
    case TTFLEET__REQUEST__OP_HOST_SHOW:
        if (!tt_name_valid(req->host_show->id))
            FAIL("invalid host id '%.80s'", req->host_show->id ? req->host_show->id : "");
        return 0;
    case TTFLEET__REQUEST__OP_QUOTA_SET:
        return s_quota_set_valid(req->quota_set, err, errlen);
    case TTFLEET__REQUEST__OP_QUOTA_SHOW:
        if (req->quota_show->tenant && *req->quota_show->tenant &&
            !tt_name_valid(req->quota_show->tenant))
            FAIL("invalid tenant '%.80s'", req->quota_show->tenant);
        return 0;
    case TTFLEET__REQUEST__OP_QUEUE_LIST:
    case TTFLEET__REQUEST__OP_BROKER_STATS:
    case TTFLEET__REQUEST__OP_CLUSTER_STATUS:
        return 0;
    case TTFLEET__REQUEST__OP_CLUSTER_ADD: {
        /* the broker checks the values (cluster_ops.c); here only sizes */
        const Ttfleet__ClusterAdd *ca = req->cluster_add;
        if ((ca->raft && strlen(ca->raft) > 127) || (ca->clients && strlen(ca->clients) > 255) ||
            (ca->workers && strlen(ca->workers) > 255))
            FAIL("cluster add: the Raft address is at most 127 characters, each endpoint 255");
        return 0;
    }
    case TTFLEET__REQUEST__OP_CLUSTER_REMOVE:
        return 0;
    case TTFLEET__REQUEST__OP_EVENT_HISTORY: {
        const Ttfleet__EventQuery *q = req->event_history;
        if (q->env && *q->env && !tt_name_valid(q->env))
            FAIL("invalid env name '%.80s'", q->env);
        if (q->topic && strlen(q->topic) > TT_MAX_NAME)
            FAIL("topic: at most %d characters", TT_MAX_NAME);
        if (q->since < 0)
            FAIL("since %lld is negative", (long long)q->since);
        return 0;
    }
    case TTFLEET__REQUEST__OP_AUDIT_QUERY: {
        const Ttfleet__AuditQuery *a = req->audit_query;
        if (a->tenant && *a->tenant && !tt_name_valid(a->tenant))
            FAIL("invalid tenant '%.80s'", a->tenant);
        if (a->env && *a->env && !tt_name_valid(a->env))
            FAIL("invalid env name '%.80s'", a->env);
        if (a->since < 0)
            FAIL("since %lld is negative", (long long)a->since);
        if (a->limit > TT_AUDIT_LIMIT_MAX)
            FAIL("limit %u over %d", a->limit, TT_AUDIT_LIMIT_MAX);
        return 0;
    }
    /* images (issue 12): the shape here, the rules in broker/ops/image_ops.c */
    case TTFLEET__REQUEST__OP_IMAGE_PUSH:
    case TTFLEET__REQUEST__OP_IMAGE_COMMIT: {
        const Ttfleet__ImagePush *p = req->op_case == TTFLEET__REQUEST__OP_IMAGE_PUSH
                                          ? req->image_push
                                          : req->image_commit;
        if (!p->ref || strlen(p->ref) > 200 || !p->kind || strlen(p->kind) > 8 || !p->digest ||
            strlen(p->digest) > 80 || p->n_blobs > 4)
            FAIL("malformed image push (ref, kind, digest or blobs out of bounds)");
        for (size_t i = 0; i < p->n_blobs; i++)
            if (!p->blobs[i]->digest || strlen(p->blobs[i]->digest) > 80 ||
                (p->blobs[i]->file && strlen(p->blobs[i]->file) > 15))
                FAIL("malformed image blob");
        return 0;
    }
    case TTFLEET__REQUEST__OP_IMAGE_LIST:
        return 0;
    case TTFLEET__REQUEST__OP_IMAGE_SHOW:
    case TTFLEET__REQUEST__OP_IMAGE_RM: {
        const Ttfleet__ImageRef *r = req->op_case == TTFLEET__REQUEST__OP_IMAGE_SHOW
                                         ? req->image_show
                                         : req->image_rm;
        if (!r->ref || strlen(r->ref) > 200)
            FAIL("image reference missing or over 200 characters");
        return 0;
    }
    case TTFLEET__REQUEST__OP_IMAGE_PULL:
        if (!req->image_pull->ref || strlen(req->image_pull->ref) > 200 ||
            req->image_pull->n_hosts > 1024)
            FAIL("malformed image pull");
        return 0;
    case TTFLEET__REQUEST__OP_IMAGE_PREPARE:
        if (!req->image_prepare->ref || strlen(req->image_prepare->ref) > 200 ||
            req->image_prepare->n_hosts > 1024)
            FAIL("malformed image prepare");
        if (req->image_prepare->cpu > TT_MAX_CPU)
            FAIL("image prepare: cpu %u out of range (1..%u)", req->image_prepare->cpu, TT_MAX_CPU);
        if (req->image_prepare->mem_mib && (req->image_prepare->mem_mib < 16 ||
                                            req->image_prepare->mem_mib > TT_MAX_MEM_MIB))
            FAIL("image prepare: mem %u MiB out of range (16..%u)", req->image_prepare->mem_mib,
                 TT_MAX_MEM_MIB);
        return 0;
    default:
        FAIL("request has no known operation");
    }
}
