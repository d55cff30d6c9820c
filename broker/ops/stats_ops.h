/*
 * stats_ops: the handler of Request.broker_stats (admin). Depends on
 * handler.h, stats, reply and outq.
 */
#ifndef TT_BROKER_STATS_OPS_H
#define TT_BROKER_STATS_OPS_H

#include "handler.h"

handler_fn broker_stats;
/* cluster_status: this member's view of the Raft cluster (a lone broker
 * answers role "standalone" and no members). A follower answers it too:
 * broker.c calls stats_cluster_reply before its NOT_LEADER. */
handler_fn cluster_status;

/* A ClusterStatus that points into itself (no allocation). */
typedef struct {
    ha_stats_t st;
    Ttfleet__ClusterStatus cs;
    Ttfleet__ClusterMember m[HA_MAX_MEMBERS];
    Ttfleet__ClusterMember *mp[HA_MAX_MEMBERS];
    Ttfleet__HistogramBucket b[HA_N_LAT + 1];
    Ttfleet__HistogramBucket *bp[HA_N_LAT + 1];
    ha_member_t lm, mm[HA_MAX_MEMBERS]; /* the endpoints the strings point into */
} stats_cluster_t;
/* Fill out from the Raft thread's last view; false for a lone broker. */
bool stats_cluster(broker_t *self, stats_cluster_t *out);
/* Answer a cluster_status request (rid echoed) on any member. */
void stats_cluster_reply(broker_t *self, zmsg_t *envelope, const char *service, const char *rid);

#endif
