/*
 * ha: broker high availability through C-Raft (the ha wing).
 *
 * Three (or five) brokers are voters of one Raft cluster. The leader serves
 * as a lone broker does and, in addition, ships what each group-commit batch
 * changed in broker.db (a SQLite session changeset, captured on the loop's
 * own connection) as one Raft entry. A sealed batch (replies, worker
 * commands, events) leaves only once its entry is committed by a majority
 * and applied: the broker loop asks ha_bound() for the highest commit
 * sequence whose entry (and every one before it) is applied. Followers apply
 * the changesets to their own broker.db on the Raft thread, through their
 * own connection, with the same rows, keys and values the leader wrote.
 *
 * Threads. C-Raft runs with its libuv I/O (raft_uv_init, raft_uv_tcp_init)
 * on its own thread and its own uv loop. The broker loop never waits on it:
 * it hands entries over through a mutex-guarded list and a uv_async, and
 * hears back through a pipe in its poll set (ha_fd) and ha_next().
 *
 * The truth is the Raft log. In Raft mode broker.db is rebuilt at every
 * start from the last Raft snapshot and the entries after it (the caller
 * removes the file first), so a broker that committed a batch locally and
 * then lost its leadership before the batch was replicated cannot keep it:
 * such a broker stops (HA_EV_FATAL) and its restart rebuilds. A broker that
 * steps down with nothing in flight becomes a follower in place.
 *
 * Snapshots are a copy of broker.db (the backup API into memory, then
 * sqlite3_serialize), taken only while no shipped batch waits for its entry
 * (otherwise the copy could hold a batch the snapshot's index does not
 * cover); a lagging or wiped follower installs one with the backup API.
 *
 * Entry format: "TTH1" | changeset length (4 bytes) | generation (8 bytes) |
 * commit sequence (8 bytes) | changeset | zeros up to a multiple of 8 bytes
 * (C-Raft's disk format pads each entry: one of another length loads back
 * shifted). The generation is drawn at random each time this broker becomes
 * leader; the leader's own entries (its generation) are already in its
 * broker.db and are not applied twice.
 */
#ifndef TT_HA_H
#define TT_HA_H

#include <sqlite3.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HA_MAX_MEMBERS 7

typedef struct {
    unsigned id;
    char raft[128];    /* HOST:PORT of the Raft transport */
    char clients[256]; /* the member's clients endpoint, as clients reach it */
    char workers[256]; /* the member's workers endpoint, as workers reach it */
} ha_member_t;

typedef struct {
    unsigned id; /* this broker's member id, 0 = Raft off */
    char dir[512];
    int n_members;
    ha_member_t members[HA_MAX_MEMBERS];
    unsigned election_ms;        /* default 1000 */
    unsigned heartbeat_ms;       /* default 100 */
    unsigned snapshot_threshold; /* entries between snapshots (default 1024) */
    unsigned snapshot_trailing;  /* entries kept behind a snapshot (default 256) */
    bool join;                   /* --raft-join: never bootstrap; wait to be added (cluster_add) */
} ha_config_t;

/* Parse "1=VALUE,2=VALUE,..." into the members' raft (what = 'r'), clients
 * ('c') or workers ('w') field. 0 / -1 with err. */
int ha_config_members(ha_config_t *cfg, const char *spec, char what, char *err, size_t errlen);
/* Whole-config check: id among the members, 3..7 members (1 for a lone
 * test cluster is allowed too; with join any count: a joining member may
 * name only itself), each with raft, clients and workers set, ids and raft
 * addresses unique, a directory. 0 / -1 with err. */
int ha_config_check(const ha_config_t *cfg, char *err, size_t errlen);
/* HOST:PORT with a name or address and a port 1..65535; a tcp:// or ipc://
 * endpoint without ',' or ' '. */
bool ha_host_port_valid(const char *v);
bool ha_endpoint_valid(const char *v);
/* The member with this id, or NULL. */
const ha_member_t *ha_config_member(const ha_config_t *cfg, unsigned id);

typedef struct ha_t ha_t;

typedef enum {
    HA_EV_APPLIED = 1, /* seq: this leader's entry for that commit is applied */
    HA_EV_LEADER,      /* this broker leads (term); every earlier entry is applied */
    HA_EV_FOLLOWER,    /* this broker does not lead; leader_id (0 = none known) */
    HA_EV_FATAL,       /* msg: stop the broker (its broker.db cannot be trusted) */
    HA_EV_MEMBER,      /* seq: the token of ha_member_change; rv 0 = the new
                          configuration is committed, else msg says why not */
} ha_ev_kind_t;

typedef struct {
    ha_ev_kind_t kind;
    uint64_t seq;
    uint64_t term;
    unsigned leader_id;
    int rv;
    char msg[256];
} ha_event_t;

/* Start the Raft thread on db_path (broker.db, which must exist with its
 * schema). NULL with err. */
ha_t *ha_new(const ha_config_t *cfg, const char *db_path, char *err, size_t errlen);
/* Stop the thread (closes Raft cleanly) and free. */
void ha_destroy(ha_t **self_p);
/* Readable when ha_next has events. */
int ha_fd(ha_t *self);
/* The next event, false when none is waiting (never blocks). */
bool ha_next(ha_t *self, ha_event_t *ev);

/* The leader side, on the broker thread. ha_session_start records every row
 * change on db (the loop's connection); ha_hold comes before each COMMIT
 * whose changes will be shipped, ha_ship after it: the changeset since the
 * last ship becomes the entry of commit seq (nothing is shipped when it is
 * empty). 0 / -1 (out of memory, or the session failed: the caller stops). */
int ha_session_start(ha_t *self, sqlite3 *db);
void ha_session_stop(ha_t *self);
void ha_hold(ha_t *self);
int ha_ship(ha_t *self, uint64_t seq);
/* Membership change on the leader (one at a time: the caller waits for its
 * HA_EV_MEMBER). add: raft_add as a spare, then raft_assign to voter, which
 * C-Raft does once the member's log caught up; remove: raft_remove. raft is
 * the new member's HOST:PORT (add only). 0 queued / -1 out of memory. */
int ha_member_change(ha_t *self, uint64_t token, bool add, unsigned id, const char *raft);

/* Highest commit seq <= committed whose entry, and every earlier one, is
 * applied (committed is the caller's count of COMMITs). */
uint64_t ha_bound(ha_t *self, uint64_t committed);

/* What the Raft thread last saw (refreshed every few tens of ms), for
 * cluster_status and the metrics. apply latency: raft_apply of this
 * leader's entry -> committed by a majority and applied here. */
#define HA_N_LAT 12
extern const double ha_lat_le[HA_N_LAT]; /* seconds; then +Inf */
typedef enum { HA_ROLE_UNAVAILABLE, HA_ROLE_FOLLOWER, HA_ROLE_CANDIDATE, HA_ROLE_LEADER } ha_role_t;
typedef struct {
    unsigned id;
    char raft[128];
    bool voter;
    bool reachable;       /* on the leader: heard from within an election timeout (itself: yes) */
    uint64_t match_index; /* on the leader: the highest entry known replicated there */
} ha_peer_t;
typedef struct {
    ha_role_t role;
    uint64_t term, commit_index, applied_index;
    unsigned leader_id;      /* 0 = none known */
    uint64_t leader_changes; /* times the known leader changed since start */
    int n_peers;             /* the Raft configuration now */
    ha_peer_t peers[HA_MAX_MEMBERS];
    uint64_t apply_count;
    double apply_sum;
    uint64_t apply_bucket[HA_N_LAT + 1];
} ha_stats_t;
void ha_stats(ha_t *self, ha_stats_t *out);
const char *ha_role_name(ha_role_t role);

#endif
