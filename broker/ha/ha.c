/*
 * ha: C-Raft on its own thread, the leader's changesets, the followers'
 * apply, and snapshots of broker.db. The design is in ha.h.
 *
 * Who touches what:
 *   - the broker thread: the session on its own connection (ha_session_*,
 *     ha_hold, ha_ship), the list of shipped sequences (ha_bound), ha_next;
 *   - the Raft thread: struct raft and everything uv, its own connection to
 *     broker.db (follower apply, snapshots, restore);
 *   - both, under mu: the submissions list, the events list, the counts of
 *     holds and entries in flight (the snapshot guard).
 * At start (ha_new) raft_start runs on the caller's thread before the Raft
 * thread exists, so a snapshot restore there is single-threaded too.
 */
#include "ha.h"

#include <czmq.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <raft.h>
#include <raft/uv.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#define HA_MAGIC "TTH1"
#define HA_HEADER 24 /* magic, changeset length, generation, sequence */
#define HA_TICK_MS 20

typedef struct s_item_t {
    struct s_item_t *next;
    uint64_t seq;
    void *data; /* submissions: the changeset (sqlite3_malloc'ed) */
    int size;
    ha_event_t ev; /* events */
} s_item_t;

struct ha_t {
    ha_config_t cfg;
    /* shared, under mu */
    pthread_mutex_t mu;
    s_item_t *subs, *subs_tail;
    s_item_t *evs, *evs_tail;
    unsigned holds;   /* a COMMIT between ha_hold and ha_ship */
    unsigned pending; /* entries submitted, not yet applied */
    bool stopping;
    int pipe_r, pipe_w;
    /* the Raft thread */
    pthread_t thread;
    bool thread_started;
    uv_loop_t loop;
    bool loop_ready;
    uv_async_t async;
    uv_timer_t timer;
    struct raft_uv_transport transport;
    struct raft_io io;
    struct raft_fsm fsm;
    struct raft raft;
    bool transport_ready, io_ready, raft_ready;
    sqlite3 *db;          /* the Raft thread's connection */
    uint64_t gen;         /* this leadership's generation, 0 when not serving */
    bool serving;         /* leader and its barrier applied */
    bool barrier_out;     /* a barrier is in flight */
    unsigned leader_said; /* the leader id last reported to the broker, +1 (0 = none yet) */
    bool fatal;
    ha_stats_t st; /* under mu: what ha_stats returns */
    unsigned last_leader;
    /* the Raft thread: when the leader last saw each member's recent_recv
     * set (C-Raft clears it every election timeout) */
    struct {
        unsigned id;
        int64_t ms;
    } seen[HA_MAX_MEMBERS];
    /* a membership change asked for (under mu) and the one C-Raft runs
     * (the Raft thread) */
    struct {
        bool want, add;
        uint64_t token;
        unsigned id;
        char raft[128];
    } chg_in;
    /* the broker thread */
    sqlite3_session *session;
    sqlite3 *session_db;
    uint64_t *shipped; /* ring of shipped sequences, oldest first */
    size_t shipped_head, shipped_n, shipped_cap;
};

/* ---- configuration ---- */

const ha_member_t *ha_config_member(const ha_config_t *cfg, unsigned id)
{
    for (int i = 0; i < cfg->n_members; i++)
        if (cfg->members[i].id == id)
            return &cfg->members[i];
    return NULL;
}

bool ha_host_port_valid(const char *v)
{
    const char *colon = strrchr(v, ':');
    if (!colon || colon == v || strlen(v) >= sizeof((ha_member_t *)0)->raft)
        return false;
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || port < 1 || port > 65535)
        return false;
    for (const char *p = v; p < colon; p++)
        if (!(*p == '.' || *p == '-' || (*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z') ||
              (*p >= 'A' && *p <= 'Z')))
            return false;
    return true;
}

bool ha_endpoint_valid(const char *v)
{
    return strlen(v) < sizeof((ha_member_t *)0)->clients &&
           (strncmp(v, "tcp://", 6) == 0 || strncmp(v, "ipc://", 6) == 0) && strlen(v) > 6 &&
           !strchr(v, ',') && !strchr(v, ' ');
}

int ha_config_members(ha_config_t *cfg, const char *spec, char what, char *err, size_t errlen)
{
    const char *kind = what == 'r' ? "raft peer" : what == 'c' ? "clients" : "workers";
    char buf[4096];
    if (!spec || !*spec || strlen(spec) >= sizeof buf) {
        snprintf(err, errlen, "the %s list is empty or longer than %zu bytes", kind,
                 sizeof buf - 1);
        return -1;
    }
    snprintf(buf, sizeof buf, "%s", spec);
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '=');
        char *end;
        long id = eq ? strtol(tok, &end, 10) : 0;
        if (!eq || end != eq || id < 1 || id > 65535) {
            snprintf(err, errlen, "'%.80s' in the %s list is not ID=VALUE with ID in 1..65535", tok,
                     kind);
            return -1;
        }
        const char *val = eq + 1;
        if (what == 'r' ? !ha_host_port_valid(val) : !ha_endpoint_valid(val)) {
            snprintf(err, errlen, "'%.80s' in the %s list: %s", tok, kind,
                     what == 'r' ? "want HOST:PORT (an address or name, port 1..65535)"
                                 : "want a tcp:// or ipc:// endpoint");
            return -1;
        }
        ha_member_t *m = (ha_member_t *)ha_config_member(cfg, (unsigned)id);
        if (!m) {
            if (cfg->n_members >= HA_MAX_MEMBERS) {
                snprintf(err, errlen, "more than %d members", HA_MAX_MEMBERS);
                return -1;
            }
            m = &cfg->members[cfg->n_members++];
            memset(m, 0, sizeof *m);
            m->id = (unsigned)id;
        }
        char *dst = what == 'r' ? m->raft : what == 'c' ? m->clients : m->workers;
        if (*dst) {
            snprintf(err, errlen, "member %ld appears twice in the %s list", id, kind);
            return -1;
        }
        snprintf(dst, 256, "%s", val);
    }
    return 0;
}

int ha_config_check(const ha_config_t *cfg, char *err, size_t errlen)
{
    if (!cfg->id) {
        snprintf(err, errlen, "--raft-id is required with the other --raft-* options");
        return -1;
    }
    if (!cfg->dir[0]) {
        snprintf(err, errlen, "--raft-dir is required with --raft-id");
        return -1;
    }
    if (cfg->n_members < 1) {
        snprintf(err, errlen, "--raft-peers is required with --raft-id");
        return -1;
    }
    if (!ha_config_member(cfg, cfg->id)) {
        snprintf(err, errlen, "--raft-id %u is not among the members of --raft-peers", cfg->id);
        return -1;
    }
    for (int i = 0; i < cfg->n_members; i++) {
        const ha_member_t *m = &cfg->members[i];
        const char *missing = !m->raft[0]      ? "--raft-peers"
                              : !m->clients[0] ? "--raft-clients"
                              : !m->workers[0] ? "--raft-workers"
                                               : NULL;
        if (missing) {
            snprintf(err, errlen,
                     "member %u is missing from %s (each member needs its Raft "
                     "address, clients endpoint and workers endpoint)",
                     m->id, missing);
            return -1;
        }
        for (int j = 0; j < i; j++)
            if (strcmp(cfg->members[j].raft, m->raft) == 0) {
                snprintf(err, errlen, "members %u and %u have the same Raft address %s",
                         cfg->members[j].id, m->id, m->raft);
                return -1;
            }
    }
    if (!cfg->join && (cfg->n_members == 2 || cfg->n_members == 4 || cfg->n_members == 6)) {
        snprintf(err, errlen,
                 "%d members: use an odd number (3 or 5; an even one survives "
                 "no more failures than one member fewer)",
                 cfg->n_members);
        return -1;
    }
    if (cfg->heartbeat_ms < 10 || cfg->election_ms < 5 * cfg->heartbeat_ms ||
        cfg->election_ms > 60000) {
        snprintf(err, errlen,
                 "the election timeout (%u ms) must be 5..6000 heartbeats (%u ms, "
                 "at least 10) and at most 60 s",
                 cfg->election_ms, cfg->heartbeat_ms);
        return -1;
    }
    return 0;
}

/* ---- events to the broker ---- */

static void s_event(ha_t *self, const ha_event_t *ev)
{
    s_item_t *it = calloc(1, sizeof *it);
    if (!it)
        abort(); /* an event lost would stall the broker's releases */
    it->ev = *ev;
    pthread_mutex_lock(&self->mu);
    if (self->evs_tail)
        self->evs_tail->next = it;
    else
        self->evs = it;
    self->evs_tail = it;
    pthread_mutex_unlock(&self->mu);
    char c = 1;
    if (write(self->pipe_w, &c, 1) < 0 && errno != EAGAIN) {
        /* the broker reads ha_next on every wake-up anyway */
    }
}

static void s_fatal(ha_t *self, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void s_fatal(ha_t *self, const char *fmt, ...)
{
    if (self->fatal)
        return;
    self->fatal = true;
    ha_event_t ev = {.kind = HA_EV_FATAL};
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ev.msg, sizeof ev.msg, fmt, ap);
    va_end(ap);
    s_event(self, &ev);
}

int ha_fd(ha_t *self)
{
    return self->pipe_r;
}

bool ha_next(ha_t *self, ha_event_t *ev)
{
    char buf[256];
    while (read(self->pipe_r, buf, sizeof buf) > 0) {
    }
    pthread_mutex_lock(&self->mu);
    s_item_t *it = self->evs;
    if (it) {
        self->evs = it->next;
        if (!self->evs)
            self->evs_tail = NULL;
    }
    pthread_mutex_unlock(&self->mu);
    if (!it)
        return false;
    *ev = it->ev;
    free(it);
    if (ev->kind == HA_EV_APPLIED && self->shipped_n > 0) {
        /* entries apply in the order they were shipped */
        self->shipped_head = (self->shipped_head + 1) % self->shipped_cap;
        self->shipped_n--;
    }
    return true;
}

/* ---- the follower's apply ---- */

static int s_conflict(void *ctx, int kind, sqlite3_changeset_iter *it)
{
    (void)it;
    *(int *)ctx = kind;
    return SQLITE_CHANGESET_ABORT;
}

static int s_apply_changeset(ha_t *self, const void *data, int size, char *why, size_t len)
{
    int conflict = 0;
    if (sqlite3_exec(self->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
        snprintf(why, len, "BEGIN: %s", sqlite3_errmsg(self->db));
        return -1;
    }
    int rc = sqlite3changeset_apply_v2(self->db, size, (void *)data, NULL, s_conflict, &conflict,
                                       NULL, NULL, 0);
    if (rc != SQLITE_OK || conflict) {
        snprintf(why, len, "%s%s", conflict ? "a row conflicts with the leader's change: " : "",
                 conflict ? "broker.db differs from the Raft log" : sqlite3_errmsg(self->db));
        sqlite3_exec(self->db, "ROLLBACK", NULL, NULL, NULL);
        return -1;
    }
    if (sqlite3_exec(self->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        snprintf(why, len, "COMMIT: %s", sqlite3_errmsg(self->db));
        sqlite3_exec(self->db, "ROLLBACK", NULL, NULL, NULL);
        return -1;
    }
    return 0;
}

static int s_fsm_apply(struct raft_fsm *fsm, const struct raft_buffer *buf, void **result)
{
    ha_t *self = fsm->data;
    *result = NULL;
    if (self->fatal)
        return 0;
    if (buf->len < HA_HEADER || memcmp(buf->base, HA_MAGIC, 4) != 0) {
        const unsigned char *b = buf->base;
        s_fatal(self, "a Raft entry of %zu bytes is not a ttfleet batch (starts %02x%02x%02x%02x)",
                buf->len, buf->len > 0 ? b[0] : 0, buf->len > 1 ? b[1] : 0, buf->len > 2 ? b[2] : 0,
                buf->len > 3 ? b[3] : 0);
        return 0;
    }
    uint64_t gen, seq;
    uint32_t n;
    memcpy(&n, (char *)buf->base + 4, 4);
    memcpy(&gen, (char *)buf->base + 8, 8);
    memcpy(&seq, (char *)buf->base + 16, 8);
    if (n > buf->len - HA_HEADER) {
        s_fatal(self, "a Raft entry of %zu bytes says it holds %u", buf->len, n);
        return 0;
    }
    if (self->serving && gen == self->gen) {
        /* our own batch: already in broker.db */
        pthread_mutex_lock(&self->mu);
        if (self->pending)
            self->pending--;
        pthread_mutex_unlock(&self->mu);
        ha_event_t ev = {.kind = HA_EV_APPLIED, .seq = seq};
        s_event(self, &ev);
        return 0;
    }
    char why[300];
    if (n > 0 && s_apply_changeset(self, (char *)buf->base + HA_HEADER, (int)n, why, sizeof why))
        s_fatal(self,
                "cannot apply Raft entry (batch %llu): %s; a restart rebuilds broker.db "
                "from the Raft log",
                (unsigned long long)seq, why);
    return 0;
}

/* ---- snapshots ---- */

static int s_fsm_snapshot(struct raft_fsm *fsm, struct raft_buffer *bufs[], unsigned *n_bufs)
{
    ha_t *self = fsm->data;
    if (self->fatal)
        return RAFT_BUSY;
    /* a consistent read of broker.db with no shipped batch outstanding:
     * the read transaction starts under mu, so no COMMIT slips in between
     * the check and the read */
    pthread_mutex_lock(&self->mu);
    bool busy = self->holds || self->pending;
    if (!busy && sqlite3_exec(self->db, "BEGIN; SELECT count(*) FROM sqlite_master", NULL, NULL,
                              NULL) != SQLITE_OK) {
        sqlite3_exec(self->db, "ROLLBACK", NULL, NULL, NULL);
        busy = true;
    }
    pthread_mutex_unlock(&self->mu);
    if (busy)
        return RAFT_BUSY;
    int rv = RAFT_NOMEM;
    sqlite3 *mem = NULL;
    unsigned char *ser = NULL;
    sqlite3_int64 size = 0;
    if (sqlite3_open(":memory:", &mem) == SQLITE_OK) {
        sqlite3_backup *b = sqlite3_backup_init(mem, "main", self->db, "main");
        if (b) {
            sqlite3_backup_step(b, -1);
            if (sqlite3_backup_finish(b) == SQLITE_OK)
                ser = sqlite3_serialize(mem, "main", &size, 0);
        }
    }
    sqlite3_exec(self->db, "COMMIT", NULL, NULL, NULL);
    sqlite3_close(mem);
    if (ser && size > 100) {
        ser[18] = ser[19] = 1; /* rollback-journal format, so it deserializes */
        *bufs = raft_malloc(sizeof **bufs);
        void *copy = raft_malloc((size_t)size);
        if (*bufs && copy) {
            memcpy(copy, ser, (size_t)size);
            (*bufs)[0].base = copy;
            (*bufs)[0].len = (size_t)size;
            *n_bufs = 1;
            rv = 0;
        } else {
            raft_free(*bufs);
            raft_free(copy);
        }
    }
    sqlite3_free(ser);
    return rv;
}

static int s_fsm_restore(struct raft_fsm *fsm, struct raft_buffer *buf)
{
    ha_t *self = fsm->data;
    int rv = RAFT_IOERR;
    sqlite3 *mem = NULL;
    if (buf->len > 100 && sqlite3_open(":memory:", &mem) == SQLITE_OK &&
        sqlite3_deserialize(mem, "main", buf->base, (sqlite3_int64)buf->len,
                            (sqlite3_int64)buf->len, SQLITE_DESERIALIZE_READONLY) == SQLITE_OK) {
        sqlite3_backup *b = sqlite3_backup_init(self->db, "main", mem, "main");
        if (b) {
            sqlite3_backup_step(b, -1);
            if (sqlite3_backup_finish(b) == SQLITE_OK)
                rv = 0;
        }
    }
    if (rv)
        zsys_error("ha: cannot install a Raft snapshot of %zu bytes: %s", buf->len,
                   sqlite3_errmsg(self->db));
    else
        zsys_info("ha: installed a snapshot of broker.db (%zu bytes)", buf->len);
    sqlite3_close(mem);
    raft_free(buf->base);
    return rv;
}

/* ---- the Raft thread ---- */

const double ha_lat_le[HA_N_LAT] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                    0.05,   0.1,   0.25,   0.5,   1,    2.5};

const char *ha_role_name(ha_role_t role)
{
    static const char *const names[] = {"unavailable", "follower", "candidate", "leader"};
    return role <= HA_ROLE_LEADER ? names[role] : "unavailable";
}

void ha_stats(ha_t *self, ha_stats_t *out)
{
    pthread_mutex_lock(&self->mu);
    *out = self->st;
    pthread_mutex_unlock(&self->mu);
}

/* A raft_apply with the time it was handed to Raft (apply latency). */
typedef struct {
    struct raft_apply req; /* first: s_apply_cb gets its address */
    int64_t t0_us;
} s_apply_t;

static void s_apply_cb(struct raft_apply *req, int status, void *result)
{
    (void)result;
    ha_t *self = req->data;
    if (status != 0)
        s_fatal(self,
                "a batch committed here was not replicated (%s): this broker lost its "
                "leadership; a restart rebuilds broker.db from the Raft log",
                raft_strerror(status));
    else {
        double sec = (double)(zclock_usecs() - ((s_apply_t *)req)->t0_us) / 1e6;
        int b = 0;
        while (b < HA_N_LAT && sec > ha_lat_le[b])
            b++;
        pthread_mutex_lock(&self->mu);
        self->st.apply_count++;
        self->st.apply_sum += sec;
        self->st.apply_bucket[b]++;
        pthread_mutex_unlock(&self->mu);
    }
    free(req);
}

/* Whether the leader heard from member id within the last election
 * timeout: recent_recv now, or seen set within that time (it is cleared at
 * each election timeout and set again by the member's next answer). */
static bool s_reachable(ha_t *self, unsigned id, bool recent_recv)
{
    int64_t now = zclock_mono();
    int slot = -1;
    for (int i = 0; i < HA_MAX_MEMBERS; i++) {
        if (self->seen[i].id == id) {
            slot = i;
            break;
        }
        if (slot < 0 && self->seen[i].id == 0)
            slot = i;
    }
    if (slot < 0) { /* a full table of members no longer there: forget the oldest */
        slot = 0;
        for (int i = 1; i < HA_MAX_MEMBERS; i++)
            if (self->seen[i].ms < self->seen[slot].ms)
                slot = i;
        self->seen[slot].id = 0;
    }
    if (self->seen[slot].id != id) {
        self->seen[slot].id = id;
        self->seen[slot].ms = 0;
    }
    if (recent_recv)
        self->seen[slot].ms = now;
    return self->seen[slot].ms > 0 && now - self->seen[slot].ms <= (int64_t)self->cfg.election_ms;
}

/* Copy what ha_stats returns from struct raft (the Raft thread). */
static void s_publish(ha_t *self)
{
    raft_id lid = 0;
    const char *addr = NULL;
    raft_leader(&self->raft, &lid, &addr);
    int state = raft_state(&self->raft);
    pthread_mutex_lock(&self->mu);
    ha_stats_t *st = &self->st;
    st->role = state == RAFT_LEADER      ? HA_ROLE_LEADER
               : state == RAFT_CANDIDATE ? HA_ROLE_CANDIDATE
               : state == RAFT_FOLLOWER  ? HA_ROLE_FOLLOWER
                                         : HA_ROLE_UNAVAILABLE;
    st->term = self->raft.current_term;
    st->commit_index = self->raft.commit_index;
    st->applied_index = self->raft.last_applied;
    if ((unsigned)lid != self->last_leader && lid != 0)
        st->leader_changes++;
    if (lid != 0)
        self->last_leader = (unsigned)lid;
    st->leader_id = (unsigned)lid;
    const struct raft_configuration *c = &self->raft.configuration;
    st->n_peers = 0;
    for (unsigned i = 0; i < c->n && st->n_peers < HA_MAX_MEMBERS; i++) {
        ha_peer_t *p = &st->peers[st->n_peers++];
        p->id = (unsigned)c->servers[i].id;
        snprintf(p->raft, sizeof p->raft, "%s", c->servers[i].address ? c->servers[i].address : "");
        p->voter = c->servers[i].role == RAFT_VOTER;
        p->match_index = 0;
        p->reachable = c->servers[i].id == self->raft.id;
        if (state == RAFT_LEADER && self->raft.leader_state.progress) {
            p->match_index = c->servers[i].id == self->raft.id
                                 ? self->raft.last_stored
                                 : self->raft.leader_state.progress[i].match_index;
            if (c->servers[i].id != self->raft.id)
                p->reachable = s_reachable(self, (unsigned)c->servers[i].id,
                                           self->raft.leader_state.progress[i].recent_recv);
        }
    }
    pthread_mutex_unlock(&self->mu);
}

static void s_barrier_cb(struct raft_barrier *req, int status)
{
    ha_t *self = req->data;
    free(req);
    self->barrier_out = false;
    if (status != 0 || raft_state(&self->raft) != RAFT_LEADER || self->fatal)
        return;
    uint64_t gen = 0;
    while (!gen)
        if (getrandom(&gen, sizeof gen, 0) != (ssize_t)sizeof gen)
            gen = (uint64_t)zclock_usecs();
    self->gen = gen;
    self->serving = true;
    self->leader_said = self->cfg.id + 1;
    ha_event_t ev = {.kind = HA_EV_LEADER, .term = self->raft.current_term};
    s_event(self, &ev);
}

/* Hand the broker's shipped batches to Raft. */
static void s_submit_all(ha_t *self)
{
    pthread_mutex_lock(&self->mu);
    s_item_t *list = self->subs;
    self->subs = self->subs_tail = NULL;
    pthread_mutex_unlock(&self->mu);
    while (list) {
        s_item_t *it = list;
        list = it->next;
        if (!self->fatal) {
            s_apply_t *ap = calloc(1, sizeof *ap);
            struct raft_apply *req = ap ? &ap->req : NULL;
            if (ap)
                ap->t0_us = zclock_usecs();
            /* C-Raft's disk format pads entries to 8 bytes: so do we, or
             * the next entry of a batch loads back shifted */
            struct raft_buffer b = {.len = ((size_t)it->size + HA_HEADER + 7) & ~(size_t)7};
            b.base = raft_malloc(b.len);
            int rv = RAFT_NOMEM;
            if (req && b.base && self->serving) {
                uint32_t n = (uint32_t)it->size;
                memset(b.base, 0, b.len);
                memcpy(b.base, HA_MAGIC, 4);
                memcpy((char *)b.base + 4, &n, 4);
                memcpy((char *)b.base + 8, &self->gen, 8);
                memcpy((char *)b.base + 16, &it->seq, 8);
                memcpy((char *)b.base + HA_HEADER, it->data, n);
                req->data = self;
                rv = raft_apply(&self->raft, req, &b, 1, s_apply_cb);
            } else if (!self->serving)
                rv = RAFT_NOTLEADER;
            if (rv) {
                free(req);
                raft_free(b.base);
                s_fatal(self,
                        "batch %llu was committed here but cannot be replicated (%s): "
                        "a restart rebuilds broker.db from the Raft log",
                        (unsigned long long)it->seq, raft_strerror(rv));
            }
        }
        sqlite3_free(it->data);
        free(it);
    }
}

/* ---- membership changes (the Raft thread) ---- */

typedef struct {
    struct raft_change req; /* first: the callbacks get its address */
    ha_t *self;
    uint64_t token;
    unsigned id;
} s_change_t;

static void s_change_done(ha_t *self, uint64_t token, int rv, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void s_change_done(ha_t *self, uint64_t token, int rv, const char *fmt, ...)
{
    ha_event_t ev = {.kind = HA_EV_MEMBER, .seq = token, .rv = rv};
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ev.msg, sizeof ev.msg, fmt, ap);
    va_end(ap);
    s_event(self, &ev);
}

static void s_remove_cb(struct raft_change *req, int status)
{
    s_change_t *ch = (s_change_t *)req;
    if (status)
        s_change_done(ch->self, ch->token, status, "removing member %u was not committed: %s",
                      ch->id, raft_strerror(status));
    else
        s_change_done(ch->self, ch->token, 0, "%s", "");
    free(ch);
}

static void s_assign_cb(struct raft_change *req, int status)
{
    s_change_t *ch = (s_change_t *)req;
    if (status)
        s_change_done(ch->self, ch->token, status,
                      "member %u was added but not made a voter: %s (it stays a non-voting "
                      "spare: cluster remove it, start it with --raft-join, add it again)",
                      ch->id, raft_strerror(status));
    else
        s_change_done(ch->self, ch->token, 0, "%s", "");
    free(ch);
}

static void s_add_cb(struct raft_change *req, int status)
{
    s_change_t *ch = (s_change_t *)req;
    ha_t *self = ch->self;
    if (status) {
        s_change_done(self, ch->token, status, "adding member %u was not committed: %s", ch->id,
                      raft_strerror(status));
        free(ch);
        return;
    }
    /* a voter only once its log caught up: C-Raft runs the catch-up rounds */
    int rv = raft_assign(&self->raft, &ch->req, ch->id, RAFT_VOTER, s_assign_cb);
    if (rv) {
        s_change_done(self, ch->token, rv,
                      "member %u was added as a spare but cannot be made a voter: %s", ch->id,
                      raft_strerror(rv));
        free(ch);
    }
}

static void s_change_start(ha_t *self)
{
    pthread_mutex_lock(&self->mu);
    bool want = self->chg_in.want;
    bool add = self->chg_in.add;
    uint64_t token = self->chg_in.token;
    unsigned id = self->chg_in.id;
    char raft[128];
    snprintf(raft, sizeof raft, "%s", self->chg_in.raft);
    self->chg_in.want = false;
    pthread_mutex_unlock(&self->mu);
    if (!want)
        return;
    s_change_t *ch = calloc(1, sizeof *ch);
    if (!ch) {
        s_change_done(self, token, RAFT_NOMEM, "out of memory");
        return;
    }
    ch->self = self;
    ch->token = token;
    ch->id = id;
    int rv = !self->serving ? RAFT_NOTLEADER
             : add          ? raft_add(&self->raft, &ch->req, id, raft, s_add_cb)
                            : raft_remove(&self->raft, &ch->req, id, s_remove_cb);
    if (rv) {
        s_change_done(self, token, rv, "%s member %u: %s", add ? "cannot add" : "cannot remove", id,
                      raft_strerror(rv));
        free(ch);
    }
}

static void s_close_cb(struct raft *r)
{
    ha_t *self = r->data;
    raft_uv_close(&self->io);
    raft_uv_tcp_close(&self->transport);
    uv_close((uv_handle_t *)&self->timer, NULL);
    uv_close((uv_handle_t *)&self->async, NULL);
}

static void s_async_cb(uv_async_t *h)
{
    ha_t *self = h->data;
    pthread_mutex_lock(&self->mu);
    bool stop = self->stopping;
    pthread_mutex_unlock(&self->mu);
    if (stop) {
        if (self->raft_ready) {
            self->raft_ready = false;
            uv_timer_stop(&self->timer);
            raft_close(&self->raft, s_close_cb);
        }
        return;
    }
    s_submit_all(self);
    s_change_start(self);
}

/* Follow the Raft state: a new leader waits for its barrier (every earlier
 * entry applied) before it serves; a leader that lost its majority stops
 * serving, or stops the broker when a batch of its is in flight. */
static void s_timer_cb(uv_timer_t *t)
{
    ha_t *self = t->data;
    s_publish(self);
    if (self->fatal)
        return;
    int state = raft_state(&self->raft);
    if (state == RAFT_LEADER) {
        if (!self->serving && !self->barrier_out) {
            struct raft_barrier *req = calloc(1, sizeof *req);
            if (!req)
                return;
            req->data = self;
            self->barrier_out = true;
            if (raft_barrier(&self->raft, req, s_barrier_cb)) {
                self->barrier_out = false;
                free(req);
            }
        }
        return;
    }
    if (self->serving) {
        self->serving = false;
        self->gen = 0;
        pthread_mutex_lock(&self->mu);
        unsigned n = self->pending + self->holds;
        pthread_mutex_unlock(&self->mu);
        if (n) {
            s_fatal(self,
                    "lost the leadership with %u batch(es) committed here and not yet "
                    "replicated: a restart rebuilds broker.db from the Raft log",
                    n);
            return;
        }
    }
    raft_id id = 0;
    const char *addr = NULL;
    raft_leader(&self->raft, &id, &addr);
    if (self->leader_said != (unsigned)id + 1) {
        self->leader_said = (unsigned)id + 1;
        ha_event_t ev = {
            .kind = HA_EV_FOLLOWER, .leader_id = (unsigned)id, .term = self->raft.current_term};
        s_event(self, &ev);
    }
}

static void *s_thread(void *arg)
{
    ha_t *self = arg;
    uv_run(&self->loop, UV_RUN_DEFAULT);
    return NULL;
}

/* ---- life cycle ---- */

static int s_mkdir(const char *dir)
{
    char buf[512];
    snprintf(buf, sizeof buf, "%s", dir);
    for (char *p = buf + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            if (mkdir(buf, 0700) && errno != EEXIST)
                return -1;
            *p = '/';
        }
    return mkdir(buf, 0700) && errno != EEXIST ? -1 : 0;
}

ha_t *ha_new(const ha_config_t *cfg, const char *db_path, char *err, size_t errlen)
{
    if (ha_config_check(cfg, err, errlen))
        return NULL;
    ha_t *self = calloc(1, sizeof *self);
    if (!self) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    self->cfg = *cfg;
    self->pipe_r = self->pipe_w = -1;
    /* libuv writes to peers' sockets without MSG_NOSIGNAL: a peer that
     * died must give EPIPE, not kill this broker */
    signal(SIGPIPE, SIG_IGN);
    pthread_mutex_init(&self->mu, NULL);
    int fds[2];
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC)) {
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        goto fail;
    }
    self->pipe_r = fds[0];
    self->pipe_w = fds[1];
    if (s_mkdir(cfg->dir)) {
        snprintf(err, errlen, "cannot create --raft-dir %s: %s", cfg->dir, strerror(errno));
        goto fail;
    }
    if (sqlite3_open_v2(db_path, &self->db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "ha: cannot open %s: %s", db_path,
                 self->db ? sqlite3_errmsg(self->db) : "out of memory");
        goto fail;
    }
    /* the leader's changes arrive whole, cascades included: replay them as
     * they are; the Raft log is durable, so the file need not sync each one */
    sqlite3_busy_timeout(self->db, 10000);
    if (sqlite3_exec(self->db, "PRAGMA foreign_keys=OFF; PRAGMA synchronous=NORMAL", NULL, NULL,
                     NULL) != SQLITE_OK) {
        snprintf(err, errlen, "ha: %s: %s", db_path, sqlite3_errmsg(self->db));
        goto fail;
    }
    if (uv_loop_init(&self->loop)) {
        snprintf(err, errlen, "ha: uv_loop_init failed");
        goto fail;
    }
    self->loop_ready = true;
    self->async.data = self;
    self->timer.data = self;
    uv_async_init(&self->loop, &self->async, s_async_cb);
    uv_timer_init(&self->loop, &self->timer);
    int rv = raft_uv_tcp_init(&self->transport, &self->loop);
    if (rv) {
        snprintf(err, errlen, "ha: raft_uv_tcp_init: %s", raft_strerror(rv));
        goto fail;
    }
    self->transport_ready = true;
    rv = raft_uv_init(&self->io, &self->loop, cfg->dir, &self->transport);
    if (rv) {
        snprintf(err, errlen, "ha: raft_uv_init(%s): %s", cfg->dir, raft_strerror(rv));
        goto fail;
    }
    self->io_ready = true;
    self->fsm.version = 1;
    self->fsm.data = self;
    self->fsm.apply = s_fsm_apply;
    self->fsm.snapshot = s_fsm_snapshot;
    self->fsm.restore = s_fsm_restore;
    const ha_member_t *me = ha_config_member(cfg, cfg->id);
    rv = raft_init(&self->raft, &self->io, &self->fsm, cfg->id, me->raft);
    if (rv) {
        snprintf(err, errlen, "ha: raft_init: %s", raft_strerror(rv));
        goto fail;
    }
    self->raft.data = self;
    self->raft_ready = true;
    raft_set_election_timeout(&self->raft, cfg->election_ms);
    raft_set_heartbeat_timeout(&self->raft, cfg->heartbeat_ms);
    raft_set_snapshot_threshold(&self->raft, cfg->snapshot_threshold);
    raft_set_snapshot_trailing(&self->raft, cfg->snapshot_trailing);
    /* every member bootstraps with the same configuration; a member that
     * already has state keeps it (RAFT_CANTBOOTSTRAP) */
    struct raft_configuration conf;
    raft_configuration_init(&conf);
    for (int i = 0; i < cfg->n_members; i++)
        if ((rv = raft_configuration_add(&conf, cfg->members[i].id, cfg->members[i].raft,
                                         RAFT_VOTER)))
            break;
    /* a joining member starts with no configuration: the leader's
     * cluster_add sends it one (with the log or a snapshot) */
    if (!rv && !cfg->join)
        rv = raft_bootstrap(&self->raft, &conf);
    raft_configuration_close(&conf);
    if (rv && rv != RAFT_CANTBOOTSTRAP) {
        snprintf(err, errlen, "ha: raft_bootstrap: %s", raft_strerror(rv));
        goto fail;
    }
    rv = raft_start(&self->raft);
    if (rv) {
        snprintf(err, errlen, "ha: raft_start (%s): %s", cfg->dir, raft_errmsg(&self->raft));
        goto fail;
    }
    uv_timer_start(&self->timer, s_timer_cb, HA_TICK_MS, HA_TICK_MS);
    if (pthread_create(&self->thread, NULL, s_thread, self)) {
        snprintf(err, errlen, "ha: cannot start the Raft thread");
        goto fail;
    }
    self->thread_started = true;
    return self;
fail:
    ha_destroy(&self);
    return NULL;
}

void ha_destroy(ha_t **self_p)
{
    ha_t *self = *self_p;
    if (!self)
        return;
    if (self->thread_started) {
        pthread_mutex_lock(&self->mu);
        self->stopping = true;
        pthread_mutex_unlock(&self->mu);
        uv_async_send(&self->async);
        pthread_join(self->thread, NULL);
    } else if (self->loop_ready) {
        /* started nothing on a thread: close what was opened, here */
        if (self->raft_ready)
            raft_close(&self->raft, s_close_cb);
        else {
            if (self->io_ready)
                raft_uv_close(&self->io);
            if (self->transport_ready)
                raft_uv_tcp_close(&self->transport);
            uv_close((uv_handle_t *)&self->timer, NULL);
            uv_close((uv_handle_t *)&self->async, NULL);
        }
        uv_run(&self->loop, UV_RUN_DEFAULT);
    }
    if (self->loop_ready)
        uv_loop_close(&self->loop);
    ha_session_stop(self);
    while (self->subs) {
        s_item_t *it = self->subs;
        self->subs = it->next;
        sqlite3_free(it->data);
        free(it);
    }
    while (self->evs) {
        s_item_t *it = self->evs;
        self->evs = it->next;
        free(it);
    }
    sqlite3_close(self->db);
    if (self->pipe_r >= 0)
        close(self->pipe_r);
    if (self->pipe_w >= 0)
        close(self->pipe_w);
    free(self->shipped);
    pthread_mutex_destroy(&self->mu);
    free(self);
    *self_p = NULL;
}

/* ---- the leader's session (broker thread) ---- */

static int s_session_new(ha_t *self)
{
    if (sqlite3session_create(self->session_db, "main", &self->session) != SQLITE_OK)
        return -1;
    if (sqlite3session_attach(self->session, NULL) != SQLITE_OK) {
        sqlite3session_delete(self->session);
        self->session = NULL;
        return -1;
    }
    return 0;
}

int ha_session_start(ha_t *self, sqlite3 *db)
{
    ha_session_stop(self);
    self->session_db = db;
    return s_session_new(self);
}

void ha_session_stop(ha_t *self)
{
    if (self->session)
        sqlite3session_delete(self->session);
    self->session = NULL;
    self->session_db = NULL;
}

void ha_hold(ha_t *self)
{
    pthread_mutex_lock(&self->mu);
    self->holds++;
    pthread_mutex_unlock(&self->mu);
}

int ha_ship(ha_t *self, uint64_t seq)
{
    int size = 0;
    void *data = NULL;
    int rc = 0;
    if (!self->session || sqlite3session_changeset(self->session, &size, &data) != SQLITE_OK)
        rc = -1;
    else {
        /* the next batch starts from here */
        sqlite3session_delete(self->session);
        self->session = NULL;
        if (s_session_new(self))
            rc = -1;
    }
    s_item_t *it = NULL;
    if (rc == 0 && size > 0) {
        if (self->shipped_n == self->shipped_cap) {
            size_t cap = self->shipped_cap ? self->shipped_cap * 2 : 64;
            uint64_t *ring = malloc(cap * sizeof *ring);
            if (!ring)
                rc = -1;
            else {
                for (size_t i = 0; i < self->shipped_n; i++)
                    ring[i] = self->shipped[(self->shipped_head + i) % self->shipped_cap];
                free(self->shipped);
                self->shipped = ring;
                self->shipped_head = 0;
                self->shipped_cap = cap;
            }
        }
        it = rc == 0 ? calloc(1, sizeof *it) : NULL;
        if (!it)
            rc = -1;
    }
    pthread_mutex_lock(&self->mu);
    if (self->holds)
        self->holds--;
    if (it) {
        it->seq = seq;
        it->data = data;
        it->size = size;
        data = NULL;
        self->pending++;
        if (self->subs_tail)
            self->subs_tail->next = it;
        else
            self->subs = it;
        self->subs_tail = it;
    }
    pthread_mutex_unlock(&self->mu);
    if (it) {
        self->shipped[(self->shipped_head + self->shipped_n) % self->shipped_cap] = seq;
        self->shipped_n++;
        uv_async_send(&self->async);
    }
    sqlite3_free(data);
    return rc;
}

int ha_member_change(ha_t *self, uint64_t token, bool add, unsigned id, const char *raft)
{
    pthread_mutex_lock(&self->mu);
    self->chg_in.want = true;
    self->chg_in.add = add;
    self->chg_in.token = token;
    self->chg_in.id = id;
    snprintf(self->chg_in.raft, sizeof self->chg_in.raft, "%s", raft ? raft : "");
    pthread_mutex_unlock(&self->mu);
    uv_async_send(&self->async);
    return 0;
}

uint64_t ha_bound(ha_t *self, uint64_t committed)
{
    if (self->shipped_n == 0)
        return committed;
    return self->shipped[self->shipped_head] - 1;
}

