/*
 * ttctl_print: human tables and JSON for ttctl. See ttctl_print.h.
 *
 * Tables are built whole before printing so that each column is as wide as
 * its widest cell: a row is an array of strings owned by the table.
 */
#define _GNU_SOURCE
#include "ttctl_print.h"

#include <jansson.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <yaml.h>

#include "pbjson.h"
#include "ttproto.h"

#define TABLE_MAX_COLS 12

typedef struct {
    size_t cols;
    size_t rows;
    size_t alloc;
    char **cells; /* rows * cols strings */
} table_t;

static void s_table_init(table_t *t, size_t cols)
{
    memset(t, 0, sizeof *t);
    t->cols = cols;
}

/* Adds one row of t->cols cells given as printf-formatted strings. */
static void s_table_row(table_t *t, ...)
{
    if (t->rows == t->alloc) {
        t->alloc = t->alloc ? t->alloc * 2 : 16;
        char **cells = realloc(t->cells, t->alloc * t->cols * sizeof *cells);
        if (!cells) {
            fprintf(stderr, "ttctl: out of memory\n");
            exit(3);
        }
        t->cells = cells;
    }
    va_list ap;
    va_start(ap, t);
    for (size_t c = 0; c < t->cols; c++) {
        const char *cell = va_arg(ap, const char *);
        t->cells[t->rows * t->cols + c] = strdup(cell ? cell : "");
    }
    va_end(ap);
    t->rows++;
}

static void s_table_print(FILE *out, table_t *t)
{
    size_t width[TABLE_MAX_COLS] = {0};
    for (size_t r = 0; r < t->rows; r++)
        for (size_t c = 0; c < t->cols && c < TABLE_MAX_COLS; c++) {
            size_t n = strlen(t->cells[r * t->cols + c]);
            if (n > width[c])
                width[c] = n;
        }
    for (size_t r = 0; r < t->rows; r++) {
        for (size_t c = 0; c < t->cols; c++) {
            const char *cell = t->cells[r * t->cols + c];
            if (c + 1 == t->cols)
                fprintf(out, "%s\n", cell);
            else
                fprintf(out, "%-*s  ", (int)width[c], cell);
        }
    }
    for (size_t i = 0; i < t->rows * t->cols; i++)
        free(t->cells[i]);
    free(t->cells);
    memset(t, 0, sizeof *t);
}

/* ISO 8601 in UTC, "-" for 0 (never set). */
static const char *s_iso(int64_t t, char *buf, size_t len)
{
    if (t <= 0) {
        snprintf(buf, len, "-");
        return buf;
    }
    time_t tt = (time_t)t;
    struct tm tm;
    if (!gmtime_r(&tt, &tm) || strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(buf, len, "%lld", (long long)t);
    return buf;
}

static bool s_yaml, s_wide;

void print_set_format(bool yaml, bool wide)
{
    s_yaml = yaml;
    s_wide = wide;
}

/* Whether a YAML reader could take text, written plain, as something other
 * than a string (a number, a time, a boolean, null, YAML 1.1's value "="
 * and merge "<<", which PyYAML's safe_load refuses whole): such text is
 * quoted. Anything that starts like a number or a date is. */
static bool s_yaml_needs_quotes(const char *text)
{
    static const char *const words[] = {"true", "false", "yes",  "no", "on",
                                        "off",  "null",  "y",    "n",  "~",
                                        ".inf", "-.inf", ".nan", "=",  "<<"};
    if (!*text || strchr("0123456789+-.~", text[0]))
        return true;
    for (size_t i = 0; i < sizeof words / sizeof *words; i++)
        if (strcasecmp(text, words[i]) == 0)
            return true;
    return false;
}

static int s_yaml_scalar(yaml_emitter_t *em, const char *text, bool is_string)
{
    yaml_event_t ev;
    bool plain = !is_string || !s_yaml_needs_quotes(text);
    if (!yaml_scalar_event_initialize(&ev, NULL, NULL, (yaml_char_t *)text, (int)strlen(text),
                                      plain, 1, YAML_ANY_SCALAR_STYLE))
        return -1;
    return yaml_emitter_emit(em, &ev) ? 0 : -1;
}

/* The same tree as the JSON output, as YAML events. */
static int s_yaml_node(yaml_emitter_t *em, json_t *v)
{
    yaml_event_t ev;
    char buf[64];
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        if (!yaml_mapping_start_event_initialize(&ev, NULL, NULL, 1, YAML_ANY_MAPPING_STYLE) ||
            !yaml_emitter_emit(em, &ev))
            return -1;
        const char *key;
        json_t *val;
        json_object_foreach(v, key, val)
        {
            if (s_yaml_scalar(em, key, true) || s_yaml_node(em, val))
                return -1;
        }
        return yaml_mapping_end_event_initialize(&ev) && yaml_emitter_emit(em, &ev) ? 0 : -1;
    }
    case JSON_ARRAY: {
        if (!yaml_sequence_start_event_initialize(&ev, NULL, NULL, 1, YAML_ANY_SEQUENCE_STYLE) ||
            !yaml_emitter_emit(em, &ev))
            return -1;
        size_t i;
        json_t *val;
        json_array_foreach(v, i, val)
        {
            if (s_yaml_node(em, val))
                return -1;
        }
        return yaml_sequence_end_event_initialize(&ev) && yaml_emitter_emit(em, &ev) ? 0 : -1;
    }
    case JSON_STRING:
        return s_yaml_scalar(em, json_string_value(v), true);
    case JSON_INTEGER:
        snprintf(buf, sizeof buf, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return s_yaml_scalar(em, buf, false);
    case JSON_REAL:
        snprintf(buf, sizeof buf, "%.17g", json_real_value(v));
        return s_yaml_scalar(em, buf, false);
    case JSON_TRUE:
        return s_yaml_scalar(em, "true", false);
    case JSON_FALSE:
        return s_yaml_scalar(em, "false", false);
    default:
        return s_yaml_scalar(em, "null", false);
    }
}

/* One YAML document ("---" first) of obj on out, with libyaml. */
static int s_yaml_print(FILE *out, json_t *obj)
{
    yaml_emitter_t em;
    yaml_event_t ev;
    if (!yaml_emitter_initialize(&em))
        return -1;
    yaml_emitter_set_output_file(&em, out);
    yaml_emitter_set_unicode(&em, 1);
    int rc = yaml_stream_start_event_initialize(&ev, YAML_UTF8_ENCODING) &&
                     yaml_emitter_emit(&em, &ev) &&
                     yaml_document_start_event_initialize(&ev, NULL, NULL, NULL, 0) &&
                     yaml_emitter_emit(&em, &ev)
                 ? 0
                 : -1;
    if (rc == 0)
        rc = s_yaml_node(&em, obj);
    if (rc == 0)
        rc = yaml_document_end_event_initialize(&ev, 1) && yaml_emitter_emit(&em, &ev) &&
                     yaml_stream_end_event_initialize(&ev) && yaml_emitter_emit(&em, &ev) &&
                     yaml_emitter_flush(&em)
                 ? 0
                 : -1;
    if (rc)
        fprintf(stderr, "ttctl: cannot write YAML: %s\n", em.problem ? em.problem : "error");
    yaml_emitter_delete(&em);
    return rc;
}

static int s_json_print(FILE *out, json_t *obj)
{
    if (!obj) {
        fprintf(stderr, "ttctl: out of memory building JSON\n");
        return -1;
    }
    if (s_yaml) {
        int yrc = s_yaml_print(out, obj);
        json_decref(obj);
        return yrc;
    }
    int rc = json_dumpf(obj, out, JSON_INDENT(2));
    fputc('\n', out);
    json_decref(obj);
    return rc;
}

static void s_join(size_t n, char **s, char *buf, size_t len);

/* The JSON of a reply message: the gateway's dialect (gw/pbjson.h), so
 * ttctl --json, REST and the Python SDK's to_dict() agree field for field. */
static json_t *s_json_pb(const void *msg)
{
    return pbjson_encode((const ProtobufCMessage *)msg);
}

/* "22,80" from a port list; "-" when empty. */
static void s_port_list(size_t n, const uint32_t *ports, char *buf, size_t len)
{
    size_t off = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < n && off < len; i++)
        off += (size_t)snprintf(buf + off, len - off, "%s%u", i ? "," : "", ports[i]);
    if (n == 0)
        snprintf(buf, len, "-");
}

/* "22->40000 80->40001" from a VM's port map. */
static void s_port_map(const Ttfleet__VmInfo *vm, char *buf, size_t len)
{
    size_t off = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < vm->n_ports && off < len; i++)
        off += (size_t)snprintf(buf + off, len - off, "%s%u->%u", i ? " " : "", vm->ports[i]->guest,
                                vm->ports[i]->public_);
    if (vm->n_ports == 0)
        snprintf(buf, len, "-");
}

int print_env(FILE *out, const Ttfleet__EnvInfo *env, bool json)
{
    if (json)
        return s_json_print(out, s_json_pb(env));
    char created[32], expires[32], ports[512];
    s_port_list(env->n_ports, env->ports, ports, sizeof ports);
    fprintf(out, "env       %s (tenant %s)\n", env->name, env->tenant);
    fprintf(out, "state     %s\n", env->state);
    fprintf(out, "created   %s\n", s_iso(env->created_at, created, sizeof created));
    fprintf(out, "expires   %s (lifetime %llu s)\n",
            s_iso(env->expires_at, expires, sizeof expires), (unsigned long long)env->lifetime);
    fprintf(out, "outgoing  %s\n", env->deny_outgoing ? "denied" : "allowed");
    fprintf(out, "ports     %s\n", ports);
    fprintf(out, "vms       %u\n", env->vm_count);
    if (env->n_labels) {
        char labels[TT_MAX_LABELS * (TT_MAX_LABEL + 1) + 1];
        s_join(env->n_labels, env->labels, labels, sizeof labels);
        fprintf(out, "labels    %s\n", labels);
    }
    if (env->queue_position) {
        char deadline[32];
        fprintf(out, "queued    position %u, priority %u, gives up %s\n", env->queue_position,
                env->priority, s_iso(env->queue_deadline, deadline, sizeof deadline));
    }
    if (env->n_vms == 0)
        return 0;
    fputc('\n', out);
    table_t t;
    s_table_init(&t, 12);
    s_table_row(&t, "VMID", "HOST", "IMAGE", "ENGINE", "IP", "MAC", "CPU", "MEM", "DISK", "STATE",
                "PORTS", "READY");
    for (size_t i = 0; i < env->n_vms; i++) {
        const Ttfleet__VmInfo *vm = env->vms[i];
        char id[16], cpu[16], mem[16], disk[16], map[1024];
        snprintf(id, sizeof id, "%u", vm->vm_id);
        snprintf(cpu, sizeof cpu, "%u", vm->cpu);
        snprintf(mem, sizeof mem, "%u", vm->mem_mib);
        snprintf(disk, sizeof disk, "%u", vm->disk_mib);
        s_port_map(vm, map, sizeof map);
        char state[64];
        if (vm->pull_total) /* its host fetches its image (issue 12) */
            snprintf(state, sizeof state, "pulling %llu%%",
                     (unsigned long long)(vm->pull_done * 100 / vm->pull_total));
        else
            snprintf(state, sizeof state, "%s", tt_vm_state_name(vm->state));
        s_table_row(&t, id, vm->host, vm->image, vm->engine, vm->ip, vm->mac, cpu, mem, disk, state,
                    map, vm->ready ? "yes" : "no");
    }
    s_table_print(out, &t);
    return 0;
}

int print_env_list(FILE *out, const Ttfleet__EnvInfoList *list, bool with_tenant, bool json)
{
    if (json) {
        json_t *envs = json_array();
        for (size_t i = 0; i < list->n_envs; i++)
            json_array_append_new(envs, s_json_pb(list->envs[i]));
        return s_json_print(out, json_pack("{s:o}", "envs", envs));
    }
    if (list->n_envs == 0) {
        fprintf(out, "no envs\n");
        return 0;
    }
    table_t t;
    if (s_wide) {
        /* -o wide: the tenant, lifetime, outgoing access, ports and labels too */
        s_table_init(&t, 10);
        s_table_row(&t, "NAME", "TENANT", "STATE", "VMS", "CREATED", "EXPIRES", "LIFETIME",
                    "OUTGOING", "PORTS", "LABELS");
        for (size_t i = 0; i < list->n_envs; i++) {
            const Ttfleet__EnvInfo *env = list->envs[i];
            char vms[16], created[32], expires[32], life[32], ports[512];
            char labels[TT_MAX_LABELS * (TT_MAX_LABEL + 1) + 1];
            s_join(env->n_labels, env->labels, labels, sizeof labels);
            snprintf(vms, sizeof vms, "%u", env->vm_count);
            snprintf(life, sizeof life, "%llus", (unsigned long long)env->lifetime);
            s_port_list(env->n_ports, env->ports, ports, sizeof ports);
            s_iso(env->created_at, created, sizeof created);
            s_iso(env->expires_at, expires, sizeof expires);
            s_table_row(&t, env->name, env->tenant, env->state, vms, created, expires, life,
                        env->deny_outgoing ? "denied" : "allowed", ports, labels);
        }
        s_table_print(out, &t);
        return 0;
    }
    s_table_init(&t, with_tenant ? 6 : 5);
    if (with_tenant)
        s_table_row(&t, "NAME", "TENANT", "STATE", "VMS", "CREATED", "EXPIRES");
    else
        s_table_row(&t, "NAME", "STATE", "VMS", "CREATED", "EXPIRES");
    for (size_t i = 0; i < list->n_envs; i++) {
        const Ttfleet__EnvInfo *env = list->envs[i];
        char vms[16], created[32], expires[32];
        snprintf(vms, sizeof vms, "%u", env->vm_count);
        s_iso(env->created_at, created, sizeof created);
        s_iso(env->expires_at, expires, sizeof expires);
        if (with_tenant)
            s_table_row(&t, env->name, env->tenant, env->state, vms, created, expires);
        else
            s_table_row(&t, env->name, env->state, vms, created, expires);
    }
    s_table_print(out, &t);
    return 0;
}

static void s_join(size_t n, char **s, char *buf, size_t len)
{
    size_t off = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < n && off < len; i++)
        off += (size_t)snprintf(buf + off, len - off, "%s%s", i ? "," : "", s[i]);
    if (n == 0)
        snprintf(buf, len, "-");
}

int print_host(FILE *out, const Ttfleet__HostInfo *h, bool json)
{
    if (json)
        return s_json_print(out, s_json_pb(h));
    char engines[256], images[2048], seen[32];
    s_join(h->n_engines, h->engines, engines, sizeof engines);
    s_join(h->n_images, h->images, images, sizeof images);
    fprintf(out, "host      %s\n", h->id);
    fprintf(out, "state     %s%s\n", h->state, h->draining ? " (draining)" : "");
    fprintf(out, "engines   %s\n", engines);
    for (size_t i = 0; i < h->n_engine_caps; i++) {
        char caps[256];
        s_join(h->engine_caps[i]->n_caps, h->engine_caps[i]->caps, caps, sizeof caps);
        fprintf(out, "%-9s %s: %s\n", i ? "" : "can", h->engine_caps[i]->engine, caps);
    }
    fprintf(out, "accel     %s\n", h->accel && *h->accel ? h->accel : "-");
    fprintf(out, "public    %s\n",
            h->public_address && *h->public_address ? h->public_address : "-");
    fprintf(out, "images    %s\n", images);
    fprintf(out, "cpu       %u / %u\n", h->cpu_used, h->cpu_total);
    fprintf(out, "mem       %llu / %llu MiB\n", (unsigned long long)h->mem_used,
            (unsigned long long)h->mem_total);
    fprintf(out, "disk      %llu / %llu MiB\n", (unsigned long long)h->disk_used,
            (unsigned long long)h->disk_total);
    fprintf(out, "vms       %u\n", h->vm_count);
    fprintf(out, "last seen %s\n", s_iso(h->last_seen, seen, sizeof seen));
    return 0;
}

/* The images of a host for one table cell: the first few names, then how
 * many more ("alpine,debian,+12"); `host show` lists them all. */
static void s_images_short(const Ttfleet__HostInfo *h, char *buf, size_t len)
{
    size_t off = 0, i = 0;
    buf[0] = '\0';
    for (; i < h->n_images; i++) {
        size_t need = strlen(h->images[i]) + 1;
        if (off + need + 8 > len)
            break;
        off += (size_t)snprintf(buf + off, len - off, "%s%s", i ? "," : "", h->images[i]);
    }
    if (i < h->n_images)
        snprintf(buf + off, len - off, "%s+%zu", i ? "," : "", h->n_images - i);
    if (h->n_images == 0)
        snprintf(buf, len, "-");
}

int print_host_list(FILE *out, const Ttfleet__HostInfoList *list, bool json)
{
    if (json) {
        json_t *hosts = json_array();
        for (size_t i = 0; i < list->n_hosts; i++)
            json_array_append_new(hosts, s_json_pb(list->hosts[i]));
        return s_json_print(out, json_pack("{s:o}", "hosts", hosts));
    }
    if (list->n_hosts == 0) {
        fprintf(out, "no hosts\n");
        return 0;
    }
    table_t t;
    s_table_init(&t, 9);
    s_table_row(&t, "ID", "STATE", "ENGINES", "IMAGES", "CPU", "MEM MiB", "DISK MiB", "VMS",
                "LAST SEEN");
    for (size_t i = 0; i < list->n_hosts; i++) {
        const Ttfleet__HostInfo *h = list->hosts[i];
        char state[32], engines[256], images[64], cpu[32], mem[64], disk[64], vms[16], seen[32];
        snprintf(state, sizeof state, "%s%s", h->state, h->draining ? ",draining" : "");
        s_join(h->n_engines, h->engines, engines, sizeof engines);
        s_images_short(h, images, sizeof images);
        snprintf(cpu, sizeof cpu, "%u/%u", h->cpu_used, h->cpu_total);
        snprintf(mem, sizeof mem, "%llu/%llu", (unsigned long long)h->mem_used,
                 (unsigned long long)h->mem_total);
        snprintf(disk, sizeof disk, "%llu/%llu", (unsigned long long)h->disk_used,
                 (unsigned long long)h->disk_total);
        snprintf(vms, sizeof vms, "%u", h->vm_count);
        s_table_row(&t, h->id, state, engines, images, cpu, mem, disk, vms,
                    s_iso(h->last_seen, seen, sizeof seen));
    }
    s_table_print(out, &t);
    return 0;
}

int print_pool(FILE *out, const Ttfleet__PoolStatus *p, bool json)
{
    char started[32];
    if (json)
        return s_json_print(out, s_json_pb(p));
    fprintf(out, "hosts     %u online of %u\n", p->hosts_online, p->hosts_total);
    fprintf(out, "envs      %u\n", p->envs);
    fprintf(out, "vms       %u\n", p->vms);
    fprintf(out, "cpu       %u / %u\n", p->cpu_used, p->cpu_total);
    fprintf(out, "mem       %llu / %llu MiB\n", (unsigned long long)p->mem_used,
            (unsigned long long)p->mem_total);
    fprintf(out, "disk      %llu / %llu MiB\n", (unsigned long long)p->disk_used,
            (unsigned long long)p->disk_total);
    fprintf(out, "started   %s\n", s_iso(p->started_at, started, sizeof started));
    return 0;
}

int print_status(FILE *out, const Ttfleet__PoolStatus *p, const print_member_t *m, int n, bool json)
{
    if (json) {
        json_t *o = json_object();
        char started[32];
        json_t *totals =
            p ? json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:s}",
                          "hosts_total", (json_int_t)p->hosts_total, "hosts_online",
                          (json_int_t)p->hosts_online, "envs", (json_int_t)p->envs, "vms",
                          (json_int_t)p->vms, "cpu_total", (json_int_t)p->cpu_total, "cpu_used",
                          (json_int_t)p->cpu_used, "mem_total", (json_int_t)p->mem_total,
                          "mem_used", (json_int_t)p->mem_used, "disk_total",
                          (json_int_t)p->disk_total, "disk_used", (json_int_t)p->disk_used,
                          "started_at", (json_int_t)p->started_at, "started",
                          s_iso(p->started_at, started, sizeof started))
              : NULL;
        if (o && totals)
            json_object_update(o, totals); /* copies: totals is still ours */
        json_decref(totals);
        json_t *arr = n ? json_array() : NULL;
        for (int i = 0; arr && i < n; i++) {
            const Ttfleet__ClusterStatus *v = m[i].view;
            json_array_append_new(
                arr,
                json_pack("{s:I, s:s, s:s, s:I, s:I, s:I, s:I, s:b}", "id", (json_int_t)m[i].id,
                          "endpoint", m[i].endpoint ? m[i].endpoint : "", "role",
                          v ? v->role : "unreachable", "term", (json_int_t)(v ? v->term : 0),
                          "commit_index", (json_int_t)(v ? v->commit_index : 0), "applied_index",
                          (json_int_t)(v ? v->applied_index : 0), "match_index",
                          (json_int_t)m[i].match_index, "voter", m[i].voter));
        }
        if (o && arr)
            json_object_set_new(o, "cluster", arr);
        return s_json_print(out, o);
    }
    if (p)
        print_pool(out, p, false);
    if (n) {
        fprintf(out, "%sbroker  %-4s %-28s %-11s %6s %10s %10s %10s %s\n", p ? "\n" : "", "id",
                "endpoint", "role", "term", "commit", "applied", "match", "voter");
        for (int i = 0; i < n; i++) {
            const Ttfleet__ClusterStatus *v = m[i].view;
            fprintf(out, "broker  %-4u %-28s %-11s %6llu %10llu %10llu %10llu %s\n", m[i].id,
                    m[i].endpoint ? m[i].endpoint : "", v ? v->role : "unreachable",
                    (unsigned long long)(v ? v->term : 0),
                    (unsigned long long)(v ? v->commit_index : 0),
                    (unsigned long long)(v ? v->applied_index : 0),
                    (unsigned long long)m[i].match_index, m[i].voter ? "yes" : "spare");
        }
    }
    return 0;
}

int print_console(FILE *out, const Ttfleet__ConsoleText *c, bool json)
{
    if (json) {
        /* JSON strings are UTF-8: a console that is not (a guest's binary
         * output) is given filtered, never dropped */
        json_t *text = json_stringn((const char *)c->text.data, c->text.len);
        if (!text) {
            char *buf = NULL;
            size_t len = 0;
            FILE *mem = open_memstream(&buf, &len);
            if (mem) {
                print_console_text(mem, c->text.data, c->text.len);
                fclose(mem);
                text = json_stringn(buf, len);
            }
            free(buf);
        }
        return s_json_print(out, json_pack("{s:s, s:I, s:o, s:b}", "host", c->host, "vm_id",
                                           (json_int_t)c->vm_id, "text", text, "truncated",
                                           c->truncated));
    }
    if (c->truncated)
        fprintf(out, "[... console of VM %u on %s, last %zu bytes ...]\n", c->vm_id, c->host,
                c->text.len);
    print_console_text(out, c->text.data, c->text.len);
    return 0;
}

/* Length of the UTF-8 sequence at s (at most n bytes) if it is well formed
 * and encodes a printable code point (not a C1 control U+0080..U+009F,
 * which some terminals obey like ESC [), else 0. */
static size_t s_utf8_printable(const uint8_t *s, size_t n)
{
    size_t len;
    uint32_t cp;
    if (s[0] >= 0xC2 && s[0] <= 0xDF) {
        len = 2;
        cp = s[0] & 0x1Fu;
    } else if (s[0] >= 0xE0 && s[0] <= 0xEF) {
        len = 3;
        cp = s[0] & 0x0Fu;
    } else if (s[0] >= 0xF0 && s[0] <= 0xF4) {
        len = 4;
        cp = s[0] & 0x07u;
    } else
        return 0;
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3Fu);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
        (cp >= 0xD800 && cp <= 0xDFFF) || (cp >= 0x80 && cp <= 0x9F))
        return 0;
    return len;
}

void print_console_text(FILE *out, const uint8_t *text, size_t len)
{
    for (size_t i = 0; i < len;) {
        uint8_t c = text[i];
        if (c == '\n' || c == '\t' || (c >= 0x20 && c < 0x7F)) {
            fputc(c, out);
            i++;
        } else if (c == '\r' && i + 1 < len && text[i + 1] == '\n') {
            i++; /* a serial console ends lines with CR LF */
        } else if (c < 0x20 || c == 0x7F) {
            /* ESC and every other control byte shown, never obeyed */
            fprintf(out, "^%c", c == 0x7F ? '?' : c + 0x40);
            i++;
        } else {
            size_t n = s_utf8_printable(text + i, len - i);
            if (n) {
                fwrite(text + i, 1, n, out);
                i += n;
            } else {
                fprintf(out, "\\x%02X", c);
                i++;
            }
        }
    }
}

int print_mmi(FILE *out, const char *service, const char *code, bool json)
{
    if (json)
        return s_json_print(out, json_pack("{s:s, s:s}", "service", service, "code", code));
    fprintf(out, "%s %s\n", service, code);
    return 0;
}

int print_done(FILE *out, const char *message, bool json)
{
    if (json)
        return s_json_print(out, json_pack("{s:b, s:s}", "ok", 1, "message", message));
    fprintf(out, "%s\n", message);
    return 0;
}

int print_host_op(FILE *out, const char *message, const Ttfleet__HostInfo *host, bool json)
{
    if (json) {
        json_t *obj = json_pack("{s:b, s:s}", "ok", 1, "message", message ? message : "");
        if (obj && host)
            json_object_set_new(obj, "host", s_json_pb(host));
        return s_json_print(out, obj);
    }
    fprintf(out, "%s\n", message && *message ? message : "done");
    if (host) {
        fputc('\n', out);
        return print_host(out, host, false);
    }
    return 0;
}

int print_event(FILE *out, const Ttfleet__Event *ev, bool json)
{
    if (json) {
        json_t *obj = s_json_pb(ev);
        if (!obj)
            return -1;
        if (s_yaml) /* one YAML document per event */
            return s_json_print(out, obj);
        int rc = json_dumpf(obj, out, JSON_COMPACT);
        fputc('\n', out);
        json_decref(obj);
        return rc;
    }
    char when[32];
    fprintf(out, "%s %-13s", s_iso(ev->time, when, sizeof when), ev->kind);
    if (*ev->env)
        fprintf(out, " env=%s/%s", ev->tenant, ev->env);
    if (ev->vm_id)
        fprintf(out, " vm=%u", ev->vm_id);
    if (*ev->host)
        fprintf(out, " host=%s", ev->host);
    if (*ev->state)
        fprintf(out, " state=%s", ev->state);
    if (*ev->message)
        fprintf(out, " (%s)", ev->message);
    fputc('\n', out);
    return 0;
}

/* ---- admission ---- */

static void s_limit(int64_t limit, char *buf, size_t len)
{
    if (limit < 0)
        snprintf(buf, len, "-");
    else
        snprintf(buf, len, "%lld", (long long)limit);
}

/* "used/limit" for one dimension; "used/-" without a limit. */
static void s_used_of(int64_t used, int64_t limit, char *buf, size_t len)
{
    char l[32];
    s_limit(limit, l, sizeof l);
    snprintf(buf, len, "%lld/%s", (long long)used, l);
}

int print_quota_list(FILE *out, const Ttfleet__QuotaInfoList *list, bool json)
{
    if (json) {
        json_t *arr = json_array();
        for (size_t i = 0; i < list->n_quotas; i++) {
            const Ttfleet__QuotaInfo *q = list->quotas[i];
            const Ttfleet__QuotaUsage *u = q->used;
            json_t *used =
                u ? json_pack("{s:I, s:I, s:I, s:I, s:I}", "envs", (json_int_t)u->envs, "vms",
                              (json_int_t)u->vms, "cpu", (json_int_t)u->cpu, "mem",
                              (json_int_t)u->mem_mib, "disk", (json_int_t)u->disk_mib)
                  : json_null();
            json_array_append_new(
                arr, json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:o}", "tenant", q->tenant,
                               "envs", (json_int_t)q->envs, "vms", (json_int_t)q->vms, "cpu",
                               (json_int_t)q->cpu, "mem", (json_int_t)q->mem_mib, "disk",
                               (json_int_t)q->disk_mib, "max_lifetime", (json_int_t)q->max_lifetime,
                               "max_priority", (json_int_t)q->max_priority, "used", used));
        }
        return s_json_print(out, json_pack("{s:o}", "quotas", arr));
    }
    if (list->n_quotas == 0) {
        fprintf(out, "no quotas\n");
        return 0;
    }
    table_t t;
    s_table_init(&t, 8);
    s_table_row(&t, "TENANT", "ENVS", "VMS", "CPU", "MEM", "DISK", "LIFETIME", "PRIO");
    for (size_t i = 0; i < list->n_quotas; i++) {
        const Ttfleet__QuotaInfo *q = list->quotas[i];
        static const Ttfleet__QuotaUsage zero = TTFLEET__QUOTA_USAGE__INIT;
        const Ttfleet__QuotaUsage *u = q->used ? q->used : &zero;
        char envs[48], vms[48], cpu[48], mem[48], disk[48], life[32], prio[32];
        s_used_of(u->envs, q->envs, envs, sizeof envs);
        s_used_of(u->vms, q->vms, vms, sizeof vms);
        s_used_of(u->cpu, q->cpu, cpu, sizeof cpu);
        s_used_of(u->mem_mib, q->mem_mib, mem, sizeof mem);
        s_used_of(u->disk_mib, q->disk_mib, disk, sizeof disk);
        s_limit(q->max_lifetime, life, sizeof life);
        s_limit(q->max_priority, prio, sizeof prio);
        s_table_row(&t, q->tenant, envs, vms, cpu, mem, disk, life, prio);
    }
    s_table_print(out, &t);
    return 0;
}

int print_queue(FILE *out, const Ttfleet__QueueEntryList *list, bool json)
{
    if (json) {
        json_t *arr = json_array();
        for (size_t i = 0; i < list->n_entries; i++) {
            const Ttfleet__QueueEntry *e = list->entries[i];
            json_array_append_new(
                arr, json_pack("{s:I, s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:b}",
                               "position", (json_int_t)e->position, "tenant", e->tenant, "env",
                               e->env, "request_id", e->request_id, "priority",
                               (json_int_t)e->priority, "enqueued_at", (json_int_t)e->enqueued_at,
                               "deadline", (json_int_t)e->deadline, "cpu", (json_int_t)e->cpu,
                               "mem", (json_int_t)e->mem_mib, "disk", (json_int_t)e->disk_mib,
                               "vms", (json_int_t)e->vms, "blocked_head", e->blocked_head));
        }
        return s_json_print(
            out, json_pack("{s:o, s:I}", "entries", arr, "total", (json_int_t)list->total));
    }
    if (list->n_entries == 0) {
        fprintf(out, "queue empty (%u queued in all)\n", list->total);
        return 0;
    }
    table_t t;
    s_table_init(&t, 9);
    s_table_row(&t, "POS", "TENANT", "ENV", "PRIO", "VMS", "CPU", "MEM", "QUEUED", "GIVES UP");
    for (size_t i = 0; i < list->n_entries; i++) {
        const Ttfleet__QueueEntry *e = list->entries[i];
        char pos[24], prio[16], vms[16], cpu[16], mem[24], since[32], until[32];
        snprintf(pos, sizeof pos, "%u%s", e->position, e->blocked_head ? "*" : "");
        snprintf(prio, sizeof prio, "%u", e->priority);
        snprintf(vms, sizeof vms, "%u", e->vms);
        snprintf(cpu, sizeof cpu, "%u", e->cpu);
        snprintf(mem, sizeof mem, "%llu", (unsigned long long)e->mem_mib);
        s_iso(e->enqueued_at, since, sizeof since);
        s_iso(e->deadline, until, sizeof until);
        s_table_row(&t, pos, e->tenant, e->env, prio, vms, cpu, mem, since, until);
    }
    s_table_print(out, &t);
    fprintf(out, "%u queued in all; * holds the capacity reservation\n", list->total);
    return 0;
}

int print_audit(FILE *out, const Ttfleet__AuditRecordList *list, bool json)
{
    if (json) {
        json_t *arr = json_array();
        for (size_t i = 0; i < list->n_records; i++) {
            const Ttfleet__AuditRecord *r = list->records[i];
            json_array_append_new(
                arr, json_pack("{s:I, s:I, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "id",
                               (json_int_t)r->id, "time", (json_int_t)r->time, "tenant", r->tenant,
                               "role", r->role, "key", r->key, "op", r->op, "target", r->target,
                               "request_id", r->request_id, "status", tt_status_name(r->status),
                               "message", r->message));
        }
        return s_json_print(out, json_pack("{s:o}", "audit", arr));
    }
    if (list->n_records == 0) {
        fprintf(out, "no audit records\n");
        return 0;
    }
    table_t t;
    s_table_init(&t, 8);
    s_table_row(&t, "TIME", "TENANT", "ROLE", "OP", "TARGET", "REQUEST", "STATUS", "MESSAGE");
    for (size_t i = 0; i < list->n_records; i++) {
        const Ttfleet__AuditRecord *r = list->records[i];
        char when[32];
        s_iso(r->time, when, sizeof when);
        s_table_row(&t, when, r->tenant, r->role, r->op, r->target, r->request_id,
                    tt_status_name(r->status), *r->message ? r->message : "-");
    }
    s_table_print(out, &t);
    return 0;
}

int print_key_list(FILE *out, const Ttfleet__KeyInfoList *list, bool json)
{
    if (json) {
        json_t *keys = json_array();
        for (size_t i = 0; i < list->n_keys; i++) {
            const Ttfleet__KeyInfo *k = list->keys[i];
            json_array_append_new(keys, json_pack("{s:s, s:s, s:s, s:I, s:s}", "public_key",
                                                  k->public_key, "tenant", k->tenant, "role",
                                                  k->role, "added_at", (json_int_t)k->added_at,
                                                  "added_by", k->added_by));
        }
        return s_json_print(out, json_pack("{s:o}", "keys", keys));
    }
    if (list->n_keys == 0) {
        fprintf(out, "no keys\n");
        return 0;
    }
    fprintf(out, "%-40s  %-8s  %-20s  %s\n", "PUBLIC KEY", "ROLE", "TENANT", "ADDED BY");
    for (size_t i = 0; i < list->n_keys; i++) {
        const Ttfleet__KeyInfo *k = list->keys[i];
        fprintf(out, "%-40s  %-8s  %-20s  %s\n", k->public_key, k->role, k->tenant, k->added_by);
    }
    return 0;
}

/* ---- images (issue 12) ---- */

static json_t *s_image_json(const Ttfleet__ImageInfo *im)
{
    json_t *blobs = json_array();
    for (size_t i = 0; i < im->n_blobs; i++)
        json_array_append_new(blobs, json_pack("{s:s, s:I, s:s}", "digest", im->blobs[i]->digest,
                                               "size", (json_int_t)im->blobs[i]->size, "file",
                                               im->blobs[i]->file));
    json_t *hosts = json_array();
    for (size_t i = 0; i < im->n_hosts; i++)
        json_array_append_new(hosts, json_string(im->hosts[i]));
    const Ttfleet__ImageDefaults *d = im->defaults;
    json_t *tmpl = json_array();
    for (size_t i = 0; i < im->n_templates; i++) {
        const Ttfleet__TemplateInfo *t = im->templates[i];
        json_array_append_new(tmpl, json_pack("{s:s, s:i, s:i, s:I, s:I, s:i}", "host", t->host,
                                              "cpu", (int)t->cpu, "mem_mib", (int)t->mem_mib,
                                              "bytes", (json_int_t)t->bytes, "created",
                                              (json_int_t)t->created, "users", (int)t->users));
    }
    return json_pack("{s:s, s:s, s:s, s:s, s:I, s:s, s:b, s:I, s:o, s:o, s:o, s:i, s:{s:s, s:s, "
                     "s:i}}",
                     "name", im->name, "tag", im->tag, "digest", im->digest, "kind", im->kind,
                     "size", (json_int_t)im->size, "owner", im->owner, "pool", !*im->owner,
                     "created_at", (json_int_t)im->created_at, "blobs", blobs, "hosts", hosts,
                     "templates", tmpl, "users", (int)im->users, "defaults", "readiness",
                     d && d->readiness ? d->readiness : "", "user", d && d->user ? d->user : "",
                     "min_disk_mib", d ? (int)d->min_disk_mib : 0);
}

int print_image(FILE *out, const Ttfleet__ImageInfo *im, bool json)
{
    if (json)
        return s_json_print(out, s_image_json(im));
    fprintf(out, "image   %s:%s\n", im->name, im->tag);
    fprintf(out, "digest  %s\n", im->digest);
    fprintf(out, "kind    %s\n", im->kind);
    fprintf(out, "size    %llu bytes\n", (unsigned long long)im->size);
    fprintf(out, "owner   %s\n", *im->owner ? im->owner : "(pool)");
    fprintf(out, "users   %u VM(s)\n", im->users);
    for (size_t i = 0; i < im->n_blobs; i++)
        fprintf(out, "blob    %s %12llu %s\n", im->blobs[i]->digest,
                (unsigned long long)im->blobs[i]->size, im->blobs[i]->file);
    for (size_t i = 0; i < im->n_templates; i++) {
        const Ttfleet__TemplateInfo *t = im->templates[i];
        fprintf(out, "template host %s cpu %u mem %u MiB, %llu MiB, %u clone(s)\n", t->host, t->cpu,
                t->mem_mib, (unsigned long long)(t->bytes >> 20), t->users);
    }
    return 0;
}

int print_image_list(FILE *out, const Ttfleet__ImageInfoList *list, bool json)
{
    if (json) {
        json_t *a = json_array();
        for (size_t i = 0; i < list->n_images; i++)
            json_array_append_new(a, s_image_json(list->images[i]));
        return s_json_print(out, json_pack("{s:o}", "images", a));
    }
    if (list->n_images == 0) {
        fprintf(out, "no images\n");
        return 0;
    }
    fprintf(out, "%-32s  %-5s  %12s  %-10s  %s\n", "NAME:TAG", "KIND", "SIZE", "OWNER", "DIGEST");
    for (size_t i = 0; i < list->n_images; i++) {
        const Ttfleet__ImageInfo *im = list->images[i];
        char nt[140];
        snprintf(nt, sizeof nt, "%s:%s", im->name, im->tag);
        fprintf(out, "%-32s  %-5s  %12llu  %-10s  %.19s\n", nt, im->kind,
                (unsigned long long)im->size, *im->owner ? im->owner : "(pool)", im->digest);
    }
    return 0;
}

/* ---- exec and copy ---- */

static void s_json_bytes(json_t *obj, const char *key, const uint8_t *data, size_t len)
{
    json_t *text = json_stringn(len ? (const char *)data : "", len);
    if (text) {
        json_object_set_new(obj, key, text);
        return;
    }
    /* not UTF-8: base64, under KEY_base64 */
    char *buf = malloc(4 * ((len + 2) / 3) + 1);
    if (!buf)
        return;
    int o = EVP_EncodeBlock((unsigned char *)buf, data, (int)len);
    char name[64];
    snprintf(name, sizeof name, "%s_base64", key);
    json_object_set_new(obj, name, json_stringn(buf, o > 0 ? (size_t)o : 0));
    free(buf);
}

static json_t *s_exec_list;

void print_exec_list(bool open)
{
    json_decref(s_exec_list);
    s_exec_list = open ? json_array() : NULL;
}

int print_exec_list_print(FILE *out)
{
    json_t *list = s_exec_list;
    s_exec_list = NULL;
    return s_json_print(out, list ? json_pack("{s:o}", "results", list) : NULL);
}

int print_exec_json(FILE *out, uint32_t vm_id, const char *status, const char *message,
                    const char *host, int exit_code, int signal, const uint8_t *o, size_t olen,
                    bool otrunc, const uint8_t *e, size_t elen, bool etrunc)
{
    json_t *obj =
        json_pack("{s:I,s:s,s:s,s:s,s:i,s:i,s:I,s:b,s:I,s:b}", "vm_id", (json_int_t)vm_id, "status",
                  status, "message", message ? message : "", "host", host ? host : "", "exit_code",
                  exit_code, "signal", signal, "stdout_size", (json_int_t)olen, "stdout_truncated",
                  otrunc, "stderr_size", (json_int_t)elen, "stderr_truncated", etrunc);
    if (obj) {
        s_json_bytes(obj, "stdout", o, olen);
        s_json_bytes(obj, "stderr", e, elen);
    }
    if (s_exec_list && obj)
        return json_array_append_new(s_exec_list, obj);
    return s_json_print(out, obj);
}

int print_copy_json(FILE *out, const char *direction, const char *guest_path, const char *local,
                    size_t bytes, const uint8_t sha[32])
{
    char hex[65];
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", sha[i]);
    return s_json_print(out, json_pack("{s:b,s:s,s:s,s:s,s:I,s:s}", "ok", 1, "direction", direction,
                                       "path", guest_path, "local", local, "bytes",
                                       (json_int_t)bytes, "sha256", hex));
}
