/*
 * outq: the queue of what the broker sends after a commit. See outq.h.
 *
 * With the commit pipeline (broker_run), a batch's queue is sealed at the
 * end of the batch with the commit sequence it needs on disk, and leaves,
 * oldest first, once the store's syncer reports that sequence durable.
 *
 * Sending never blocks: a slow or vanished peer costs a dropped message
 * (retries, heartbeats and READY reconciliation recover), never a stalled
 * loop.
 */
#include "outq.h"
#include "evstream.h"
#include "persist.h"
#include "ttframe.h"

#include <stdlib.h>

typedef struct {
    zsock_t *sock;
    zmsg_t *msg;
    bool durable; /* valid even if this batch fails: sent anyway */
} out_t;

static void s_push(broker_t *self, zsock_t *sock, zmsg_t **msg_p, bool durable)
{
    out_t *o = malloc(sizeof *o);
    if (!o) {
        zmsg_destroy(msg_p);
        return;
    }
    o->sock = sock;
    o->msg = *msg_p;
    o->durable = durable;
    *msg_p = NULL;
    zlistx_add_end(self->outq, o);
}

void outq_push(broker_t *self, zsock_t *sock, zmsg_t **msg_p)
{
    s_push(self, sock, msg_p, false);
}

void outq_event(broker_t *self, const char *kind, env_t *env, vm_t *vm, host_t *host,
                const char *state, const char *message)
{
    if (!self->events)
        return;
    Ttfleet__Event ev = TTFLEET__EVENT__INIT;
    ev.kind = (char *)kind;
    ev.time = tt_now();
    ev.tenant = env ? env->tenant : "";
    ev.env = env ? env->name : "";
    ev.host = host ? host->id : vm ? vm->host->id : "";
    ev.vm_id = vm ? vm->vm_id : 0;
    ev.state = (char *)(state ? state : "");
    ev.message = (char *)(message ? message : "");
    char *labels[TT_MAX_LABELS];
    for (int i = 0; env && i < env->n_labels && i < TT_MAX_LABELS; i++)
        labels[ev.n_labels++] = env->labels[i];
    ev.labels = labels;
    ev.id = self->next_event_id++;
    zframe_t *body = ttframe_pack((const ProtobufCMessage *)&ev);
    if (!body)
        return;
    /* its row in the event log, in this batch (and request) like the
     * change it reports, so both commit, replicate or roll back together */
    persist_event(self, ev.id, ev.time, ev.tenant, zframe_data(body), zframe_size(body));
    /* the same event for the tenant-private stream (evstream.h), queued
     * like everything else so a failed request or batch takes it back;
     * outq_flush hands it to evstream after the commit */
    if (self->evs) {
        zmsg_t *priv = zmsg_new();
        zmsg_addstr(priv, ev.tenant);
        zmsg_addstr(priv, ev.env);
        zmsg_addstr(priv, kind);
        zframe_t *copy = zframe_dup(body);
        zmsg_append(priv, &copy);
        outq_push(self, self->events_private, &priv);
    }
    zmsg_t *msg = zmsg_new();
    zmsg_addstr(msg, kind);
    zmsg_append(msg, &body);
    outq_push(self, self->events, &msg);
}

/* [tenant][env][topic][Event] queued by outq_event -> the private stream */
static void s_private_event(broker_t *self, zmsg_t **msg_p)
{
    char *tenant = zmsg_popstr(*msg_p), *env = zmsg_popstr(*msg_p), *topic = zmsg_popstr(*msg_p);
    zframe_t *body = zmsg_pop(*msg_p);
    if (tenant && env && topic && body)
        evstream_publish(self->evs, tenant, *env ? env : NULL, topic, zframe_data(body),
                         zframe_size(body));
    zstr_free(&tenant);
    zstr_free(&env);
    zstr_free(&topic);
    zframe_destroy(&body);
    zmsg_destroy(msg_p);
}

void outq_worker(broker_t *self, host_t *host, int cmd, const void *body, size_t len)
{
    if (!host->routing)
        return;
    zmsg_t *msg = ttframe_worker_to(host->routing, cmd, body, len);
    if (msg)
        outq_push(self, self->workers, &msg);
    host->last_sent_ms = tt_mono_ms();
}

void outq_worker_raw(broker_t *self, zframe_t *routing, int cmd)
{
    zmsg_t *msg = ttframe_worker_to(routing, cmd, NULL, 0);
    if (msg)
        outq_push(self, self->workers, &msg);
}

void outq_client(broker_t *self, zmsg_t *envelope, const char *service, const void *body,
                 size_t len, bool durable)
{
    zmsg_t *msg = ttframe_mdp_reply(envelope, service, body, len);
    if (!msg)
        return;
    s_push(self, self->clients, &msg, durable);
    if (durable)
        self->cur_answered = true; /* a failed batch leaves this client alone */
}

size_t outq_mark(broker_t *self)
{
    return zlistx_size(self->outq);
}

void outq_truncate(broker_t *self, size_t mark)
{
    while (zlistx_size(self->outq) > mark) {
        out_t *o = zlistx_last(self->outq);
        zlistx_detach_cur(self->outq);
        zmsg_destroy(&o->msg);
        free(o);
    }
}

void outq_keep_durable(broker_t *self)
{
    zlistx_t *keep = zlistx_new();
    out_t *o;
    while ((o = zlistx_detach(self->outq, NULL))) {
        if (o->durable && keep)
            zlistx_add_end(keep, o);
        else {
            zmsg_destroy(&o->msg);
            free(o);
        }
    }
    outq_attach(self, &keep);
}

void outq_flush(broker_t *self)
{
    out_t *o;
    bool events = false;
    while ((o = zlistx_detach(self->outq, NULL))) {
        if (o->sock && o->sock == self->events_private && self->evs) {
            s_private_event(self, &o->msg);
            events = true;
        } else
            ttframe_send_nowait(o->sock, &o->msg);
        free(o);
    }
    if (events)
        evstream_flush(self->evs, tt_mono_ms());
}

void outq_drop(broker_t *self)
{
    out_t *o;
    while ((o = zlistx_detach(self->outq, NULL))) {
        zmsg_destroy(&o->msg);
        free(o);
    }
}

zlistx_t *outq_detach_all(broker_t *self)
{
    zlistx_t *all = self->outq;
    self->outq = zlistx_new();
    return all;
}

void outq_attach(broker_t *self, zlistx_t **list_p)
{
    zlistx_t *list = *list_p;
    if (!list)
        return;
    void *o;
    while ((o = zlistx_detach(list, NULL)))
        zlistx_add_end(self->outq, o);
    zlistx_destroy(list_p);
}

zmsg_t *outq_pop(broker_t *self, zsock_t **sock)
{
    out_t *o = zlistx_detach(self->outq, NULL);
    if (!o)
        return NULL;
    zmsg_t *msg = o->msg;
    if (sock)
        *sock = o->sock;
    free(o);
    return msg;
}

typedef struct {
    uint64_t seq;
    bool committed;
    int64_t t0_us;
    zlistx_t *msgs; /* out_t */
} sealed_t;

void outq_seal(broker_t *self, uint64_t seq, bool committed, int64_t t0_us)
{
    if (!self->sealed)
        self->sealed = zlistx_new();
    sealed_t *b = calloc(1, sizeof *b);
    if (!self->sealed || !b) {
        free(b);
        outq_drop(self); /* out of memory: like a lost message, retries recover */
        return;
    }
    b->seq = seq;
    b->committed = committed;
    b->t0_us = t0_us;
    b->msgs = outq_detach_all(self);
    zlistx_add_end(self->sealed, b);
}

bool outq_unseal(broker_t *self, uint64_t durable, bool *committed, int64_t *t0_us)
{
    sealed_t *b = self->sealed ? zlistx_first(self->sealed) : NULL;
    if (!b || b->seq > durable)
        return false;
    zlistx_detach_cur(self->sealed);
    *committed = b->committed;
    *t0_us = b->t0_us;
    outq_attach(self, &b->msgs);
    free(b);
    return true;
}

size_t outq_sealed(broker_t *self)
{
    return self->sealed ? zlistx_size(self->sealed) : 0;
}

void outq_drop_sealed(broker_t *self)
{
    sealed_t *b;
    while (self->sealed && (b = zlistx_detach(self->sealed, NULL))) {
        out_t *o;
        while ((o = zlistx_detach(b->msgs, NULL))) {
            zmsg_destroy(&o->msg);
            free(o);
        }
        zlistx_destroy(&b->msgs);
        free(b);
    }
    zlistx_destroy(&self->sealed);
}
