/*
 * cluster_ops: membership changes of a broker cluster (Request.cluster_add,
 * cluster_remove; admin, leader only) and the members' endpoints kept in
 * broker.db (table cluster_members). A change is handed to the Raft thread
 * (ha_member_change) and answered when its HA_EV_MEMBER comes back, i.e.
 * once C-Raft committed the new configuration; the loop never waits for it.
 * One change at a time. Depends on handler.h, ha, persist, reply.
 */
#ifndef TT_BROKER_CLUSTER_OPS_H
#define TT_BROKER_CLUSTER_OPS_H

#include "handler.h"

handler_fn cluster_add;
handler_fn cluster_remove;

/* The Raft thread's answer to the change in flight (ev->seq = its token). */
void cluster_ops_done(broker_t *self, const ha_event_t *ev);
/* This broker stopped leading (or stops): the change in flight gets no
 * answer here; a retry with its request id reaches the new leader. */
void cluster_ops_drop(broker_t *self);

/* The endpoints of member id: its row in cluster_members (written by
 * cluster_add, replicated), else this broker's --raft-* lists. False when
 * neither knows it. */
bool cluster_member_find(broker_t *self, unsigned id, ha_member_t *out);

#endif
