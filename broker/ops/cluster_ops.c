/*
 * cluster_ops: cluster_add / cluster_remove and the members' endpoints
 * (cluster_ops.h).
 */
#include "cluster_ops.h"
#include "persist.h"
#include "reply.h"
#include "store.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The change handed to the Raft thread, waiting for its HA_EV_MEMBER. */
struct cluster_pending_t {
    uint64_t token;
    bool add;
    unsigned id;
    zmsg_t *envelope;
    char service[32];
    char tenant[TT_MAX_NAME + 1];
    char rid[TT_MAX_REQUEST_ID + 1];
};

static uint64_t s_token;

static int s_failf(handler_ctx_t *c, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int s_failf(handler_ctx_t *c, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->msg, sizeof c->msg, fmt, ap);
    va_end(ap);
    return status;
}

bool cluster_member_find(broker_t *self, unsigned id, ha_member_t *out)
{
    sqlite3_stmt *st = NULL;
    bool found = false;
    if (self->store &&
        sqlite3_prepare_v2(store_db(self->store),
                           "SELECT raft, clients, workers FROM cluster_members WHERE id = ?1", -1,
                           &st, NULL) == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, id);
        if (sqlite3_step(st) == SQLITE_ROW) {
            memset(out, 0, sizeof *out);
            out->id = id;
            snprintf(out->raft, sizeof out->raft, "%s", (const char *)sqlite3_column_text(st, 0));
            snprintf(out->clients, sizeof out->clients, "%s",
                     (const char *)sqlite3_column_text(st, 1));
            snprintf(out->workers, sizeof out->workers, "%s",
                     (const char *)sqlite3_column_text(st, 2));
            found = true;
        }
    }
    sqlite3_finalize(st);
    if (found)
        return true;
    const ha_member_t *m = ha_config_member(&self->cfg.ha, id);
    if (m)
        *out = *m;
    return m != NULL;
}

/* Refusals common to both changes; 0 when the change may go ahead. */
static int s_precheck(handler_ctx_t *c, ha_stats_t *st)
{
    broker_t *self = c->self;
    if (!self->ha)
        return handler_fail(c, TTFLEET__STATUS__INVALID_STATE,
                            "this broker runs alone (no --raft-* options): there is no cluster "
                            "to change");
    if (self->cluster_pending)
        return s_failf(c, TTFLEET__STATUS__INVALID_STATE,
                       "a membership change is in progress (%s member %u): one at a time; "
                       "retry once it is answered",
                       self->cluster_pending->add ? "adding" : "removing",
                       self->cluster_pending->id);
    ha_stats(self->ha, st);
    return 0;
}

static int s_start(handler_ctx_t *c, bool add, unsigned id, const char *raft)
{
    broker_t *self = c->self;
    struct cluster_pending_t *p = calloc(1, sizeof *p);
    zmsg_t *env = p ? zmsg_dup(c->envelope) : NULL;
    if (!env) {
        free(p);
        return handler_fail(c, TTFLEET__STATUS__INTERNAL, "out of memory");
    }
    p->token = ++s_token;
    p->add = add;
    p->id = id;
    p->envelope = env;
    snprintf(p->service, sizeof p->service, "%s", c->service);
    snprintf(p->tenant, sizeof p->tenant, "%s", c->tenant ? c->tenant : "");
    snprintf(p->rid, sizeof p->rid, "%s", c->rid ? c->rid : "");
    reply_record_begin(self, p->tenant, p->rid);
    self->cluster_pending = p;
    ha_member_change(self->ha, p->token, add, id, raft);
    return 0;
}

int cluster_add(handler_ctx_t *c)
{
    broker_t *self = c->self;
    const Ttfleet__ClusterAdd *a = c->req->cluster_add;
    ha_stats_t st;
    int rc = s_precheck(c, &st);
    if (rc)
        return rc;
    if (a->id < 1 || a->id > 65535)
        return s_failf(c, TTFLEET__STATUS__BAD_REQUEST, "member id %u is not in 1..65535", a->id);
    if (!a->raft || !ha_host_port_valid(a->raft))
        return s_failf(c, TTFLEET__STATUS__BAD_REQUEST,
                       "raft address '%.80s': want HOST:PORT (an address or name, port "
                       "1..65535)",
                       a->raft ? a->raft : "");
    if (!a->clients || !ha_endpoint_valid(a->clients))
        return s_failf(c, TTFLEET__STATUS__BAD_REQUEST,
                       "clients endpoint '%.80s': want a tcp:// or ipc:// endpoint",
                       a->clients ? a->clients : "");
    if (!a->workers || !ha_endpoint_valid(a->workers))
        return s_failf(c, TTFLEET__STATUS__BAD_REQUEST,
                       "workers endpoint '%.80s': want a tcp:// or ipc:// endpoint",
                       a->workers ? a->workers : "");
    for (int i = 0; i < st.n_peers; i++) {
        if (st.peers[i].id == a->id)
            return s_failf(c, TTFLEET__STATUS__ALREADY_EXISTS,
                           "member %u is already in the cluster (Raft address %s)", a->id,
                           st.peers[i].raft);
        if (strcmp(st.peers[i].raft, a->raft) == 0)
            return s_failf(c, TTFLEET__STATUS__ALREADY_EXISTS,
                           "Raft address %s is member %u's: give the new member its own", a->raft,
                           st.peers[i].id);
    }
    if (st.n_peers >= HA_MAX_MEMBERS)
        return s_failf(c, TTFLEET__STATUS__INVALID_STATE,
                       "the cluster has %d members, the most it takes: remove one first",
                       st.n_peers);
    /* every member's endpoints in the replicated table (the new one's,
     * and those this leader knows from its lists, which a joining member
     * may not have been given), in the request's savepoint */
    if (persist_open(self))
        return handler_fail(c, TTFLEET__STATUS__INTERNAL, "broker.db: cannot begin");
    sqlite3_stmt *ins =
        store_stmt(self->store, "INSERT OR IGNORE INTO cluster_members (id, raft, clients, "
                                "workers) VALUES (?1, ?2, ?3, ?4)");
    for (int i = 0; ins && i < self->cfg.ha.n_members; i++) {
        const ha_member_t *m = &self->cfg.ha.members[i];
        if (m->id == a->id)
            continue;
        sqlite3_bind_int64(ins, 1, m->id);
        sqlite3_bind_text(ins, 2, m->raft, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(ins, 3, m->clients, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(ins, 4, m->workers, -1, SQLITE_TRANSIENT);
        if (store_step_done(self->store, ins))
            ins = NULL;
    }
    sqlite3_stmt *put =
        ins ? store_stmt(self->store, "INSERT OR REPLACE INTO cluster_members (id, raft, "
                                      "clients, workers) VALUES (?1, ?2, ?3, ?4)")
            : NULL;
    if (put) {
        sqlite3_bind_int64(put, 1, a->id);
        sqlite3_bind_text(put, 2, a->raft, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(put, 3, a->clients, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(put, 4, a->workers, -1, SQLITE_TRANSIENT);
    }
    if (!put || store_step_done(self->store, put))
        return handler_fail(c, TTFLEET__STATUS__INTERNAL, "broker.db: cannot record the member");
    return s_start(c, true, a->id, a->raft);
}

int cluster_remove(handler_ctx_t *c)
{
    broker_t *self = c->self;
    unsigned id = c->req->cluster_remove->id;
    ha_stats_t st;
    int rc = s_precheck(c, &st);
    if (rc)
        return rc;
    const ha_peer_t *target = NULL;
    int voters = 0, reachable = 0;
    for (int i = 0; i < st.n_peers; i++) {
        if (st.peers[i].id == id) {
            target = &st.peers[i];
            continue;
        }
        voters += st.peers[i].voter;
        reachable += st.peers[i].voter && st.peers[i].reachable;
    }
    if (!target)
        return s_failf(c, TTFLEET__STATUS__NOT_FOUND, "member %u is not in the cluster", id);
    if (id == self->cfg.ha.id)
        return s_failf(c, TTFLEET__STATUS__INVALID_STATE,
                       "member %u is the leader: stop it (the others elect a leader within a "
                       "few election timeouts), then remove it there",
                       id);
    if (target->voter && (voters == 0 || 2 * reachable <= voters))
        return s_failf(c, TTFLEET__STATUS__INVALID_STATE,
                       "removing member %u would leave %d voter(s) of which %d answer the "
                       "leader: no majority; bring a member back (or add one) first",
                       id, voters, reachable);
    return s_start(c, false, id, NULL);
}

static void s_pending_free(struct cluster_pending_t **p_p)
{
    struct cluster_pending_t *p = *p_p;
    if (!p)
        return;
    zmsg_destroy(&p->envelope);
    free(p);
    *p_p = NULL;
}

void cluster_ops_done(broker_t *self, const ha_event_t *ev)
{
    struct cluster_pending_t *p = self->cluster_pending;
    if (!p || p->token != ev->seq)
        return;
    self->cluster_pending = NULL;
    char msg[400];
    int status = TTFLEET__STATUS__OK;
    if (ev->rv == 0) {
        if (!p->add) {
            sqlite3_stmt *del =
                persist_open(self) == 0
                    ? store_stmt(self->store, "DELETE FROM cluster_members WHERE id = ?1")
                    : NULL;
            if (del) {
                sqlite3_bind_int64(del, 1, p->id);
                store_step_done(self->store, del);
            }
        }
        snprintf(msg, sizeof msg, p->add ? "member %u is a voter" : "member %u is removed", p->id);
        zsys_info("ha: %s", msg);
    } else {
        status = TTFLEET__STATUS__UNAVAILABLE;
        snprintf(msg, sizeof msg, "%s", ev->msg);
        zsys_warning("ha: %s", msg);
    }
    reply_send(self, p->envelope, p->service, p->tenant, p->rid, status, msg, NULL, true);
    s_pending_free(&p);
}

void cluster_ops_drop(broker_t *self)
{
    s_pending_free(&self->cluster_pending);
}
