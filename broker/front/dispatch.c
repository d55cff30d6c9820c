/*
 * dispatch: the table of handlers and the request path. See dispatch.h.
 */
#include "dispatch.h"
#include "ttops.h"
#include "adm_ops.h"
#include "admission.h"
#include "stats_ops.h"
#include "cluster_ops.h"
#include "env_ops.h"
#include "guest_ops.h"
#include "host_ops.h"
#include "image_ops.h"
#include "keys.h"
#include "outq.h"
#include "persist.h"
#include "rate.h"
#include "reply.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the table of handlers ----
 *
 * One row per Request.op case, expanded from the registry
 * (schema/ops.def: its header says what each flag means). The dispatcher
 * does what every handler would otherwise repeat: the admin check
 * (TT_OPF_ADMIN), idempotency records (TT_OPF_RECORD), the audit row
 * (TT_OPF_AUDIT; exec and copy write theirs when the command goes to the
 * worker), the rate limit (TT_OPF_RECORD or TT_OPF_RATE). Nothing else
 * dispatches on op_case. */
typedef struct {
    int op_case;
    handler_fn *handler;
    unsigned flags;
} handler_def_t;

static const handler_def_t s_handlers[] = {
#define TT_OP(CASE, field, handler, service, flags, method, path, params, query, ok, cli)          \
    {TTFLEET__REQUEST__OP_##CASE, handler, flags},
#include "ops.def"
#undef TT_OP
};

/* The audit's op and target, read from the request generically: the op is
 * the name of the Request.op field with its first '_' made a '.'
 * ("env_create" -> "env.create"), the target the first of the fields
 * name, id, tenant, image that the op's message has and sets. A new op
 * needs nothing here. */
static void s_audit_names(const Ttfleet__Request *req, char *op, size_t oplen,
                          const char **target)
{
    *target = "";
    snprintf(op, oplen, "op%d", (int)req->op_case);
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field(&ttfleet__request__descriptor, req->op_case);
    if (!f)
        return;
    snprintf(op, oplen, "%s", f->name);
    char *us = strchr(op, '_');
    if (us)
        *us = '.';
    if (f->type != PROTOBUF_C_TYPE_MESSAGE)
        return;
    const ProtobufCMessage *m = *(const ProtobufCMessage *const *)((const char *)req + f->offset);
    if (!m)
        return;
    static const char *const fields[] = {"name", "id", "tenant", "image", "public_key", "key"};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        const ProtobufCFieldDescriptor *g =
            protobuf_c_message_descriptor_get_field_by_name(m->descriptor, fields[i]);
        if (!g || g->type != PROTOBUF_C_TYPE_STRING || g->label == PROTOBUF_C_LABEL_REPEATED)
            continue;
        const char *v = *(const char *const *)((const char *)m + g->offset);
        if (v && *v) {
            *target = v;
            return;
        }
    }
}

static void s_run(broker_t *self, handler_ctx_t *cp, const handler_def_t *def, bool record);

static const handler_def_t *s_handler_find(int op_case)
{
    for (size_t i = 0; i < sizeof s_handlers / sizeof s_handlers[0]; i++)
        if (s_handlers[i].op_case == op_case)
            return &s_handlers[i];
    return NULL;
}

void dispatch_request(broker_t *self, zmsg_t *envelope, const char *service, Ttfleet__Request *req,
                      bool admin)
{
    handler_ctx_t c = {self,  envelope, service, req, req->tenant, req->request_id,
                       admin, false,    ""};
    const handler_def_t *def = s_handler_find(req->op_case);
    if (!def) {
        reply_send(self, envelope, service, c.tenant, c.rid, TTFLEET__STATUS__BAD_REQUEST,
                   "request has no known operation", NULL, false);
        return;
    }
    bool record = def->flags & TT_OPF_RECORD;
    char opname[64];
    audit_ctx_t actx = {opname, "", admin ? "admin" : "user", self->cur_key};
    if (def->flags & TT_OPF_AUDIT) {
        s_audit_names(req, opname, sizeof opname, &actx.target);
        self->cur_audit = &actx;
    }
    s_run(self, &c, def, record);
    self->cur_audit = NULL;
    /* capacity freed by this request goes to the queue at once, outside
     * the request's savepoint: its own outcome is already decided */
    if (self->admit_wanted)
        admission_run(self, tt_now());
}

/* fp = SHA-1 of req packed without its request id and tenant. 0 / -1. */
static int s_fingerprint(const Ttfleet__Request *req, uint8_t fp[20])
{
    Ttfleet__Request bare = *req; /* shallow: the op is shared, only packed */
    bare.request_id = (char *)"";
    bare.tenant = (char *)"";
    size_t len = protobuf_c_message_get_packed_size(&bare.base);
    uint8_t *buf = malloc(len ? len : 1);
    zdigest_t *d = buf ? zdigest_new() : NULL;
    if (!d) {
        free(buf);
        return -1;
    }
    protobuf_c_message_pack(&bare.base, buf);
    zdigest_update(d, buf, len);
    memcpy(fp, zdigest_data(d), 20);
    zdigest_destroy(&d);
    free(buf);
    return 0;
}

/* After a recorded request ran: its record (made by the handler or its
 * reply) remembers which request it answers. */
static void s_fingerprint_keep(broker_t *self, const handler_ctx_t *c, const uint8_t *fp)
{
    if (!fp || !c->rid || !*c->rid)
        return;
    request_rec_t *rec = reply_record_find(self, c->tenant, c->rid);
    if (rec && !rec->has_fp) {
        memcpy(rec->fp, fp, sizeof rec->fp);
        rec->has_fp = true;
        persist_request_fp(self, c->tenant, c->rid, fp);
    }
}

static void s_run(broker_t *self, handler_ctx_t *cp, const handler_def_t *def, bool record)
{
    handler_ctx_t c = *cp;
    zmsg_t *envelope = c.envelope;
    const char *service = c.service;
    uint8_t fp[20];
    bool has_fp = record && s_fingerprint(c.req, fp) == 0;
    if (record) {
        request_rec_t *rec = reply_record_find(self, c.tenant, c.rid);
        if (rec && rec->has_fp && has_fp && memcmp(rec->fp, fp, sizeof fp) != 0) {
            /* a replay answers only the request that made it: another
             * request under the same id would get an outcome (an env,
             * OK) for something it did not ask, and not be done */
            char m[TT_MAX_REQUEST_ID + 160];
            snprintf(m, sizeof m,
                     "request id '%s' was already used for a different request; give each "
                     "request its own id (Idempotency-Key)",
                     c.rid);
            reply_send(self, envelope, service, c.tenant, c.rid, TTFLEET__STATUS__BAD_REQUEST, m,
                       NULL, false);
            return;
        }
        if (rec && rec->done && rec->reply) {
            /* a retry: the first outcome, byte for byte */
            reply_replay(self, envelope, service, rec);
            return;
        }
        if (rec) {
            reply_send(self, envelope, service, c.tenant, c.rid, TTFLEET__STATUS__IN_PROGRESS,
                       "a request with this id is still running", NULL, false);
            return;
        }
    }
    if ((def->flags & TT_OPF_ADMIN) && !c.admin) {
        reply_send(self, envelope, service, c.tenant, c.rid, TTFLEET__STATUS__FORBIDDEN,
                   "this operation needs the admin role", NULL, record);
        s_fingerprint_keep(self, &c, has_fp ? fp : NULL);
        return;
    }
    int64_t retry_ms = 0;
    if ((record || (def->flags & TT_OPF_RATE)) && !c.admin && !rate_take(self, c.tenant, tt_mono_ms(), &retry_ms)) {
        char m[160];
        snprintf(m, sizeof m,
                 "tenant '%s' sends changing requests faster than %g/s (burst %d); retry in "
                 "%lld ms",
                 c.tenant, self->cfg.rate, self->cfg.rate_burst, (long long)retry_ms);
        reply_send(self, envelope, service, c.tenant, c.rid, TTFLEET__STATUS__RATE_LIMITED, m,
                   NULL, false);
        return;
    }
    /* One request, one savepoint: a refusal takes back its own rows and
     * queued output, never another request's. */
    persist_savepoint_begin(self);
    size_t mark = outq_mark(self);
    int status = def->handler(&c);
    persist_savepoint_end(self, status == 0);
    if (status != 0) {
        outq_truncate(self, mark);
        reply_send(self, envelope, service, c.tenant, c.rid, status, c.msg, NULL,
                   record && !c.no_record);
    }
    s_fingerprint_keep(self, &c, has_fp ? fp : NULL);
}
