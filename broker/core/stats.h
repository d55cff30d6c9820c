/*
 * stats: the broker's counters and histograms, answered by the admin op
 * broker_stats (schema: BrokerStats) for ttbench and the gateway's /metrics.
 * Counting costs the loop a few additions per request; nothing here
 * allocates on the hot path but one small record for a request that an op
 * answers later. Depends on the model only; the op itself is stats_ops.c.
 */
#ifndef TT_BROKER_STATS_H
#define TT_BROKER_STATS_H

#include "model.h"

#define STATS_OPS 128   /* Request.op field numbers are below this */
#define STATS_STATUS 64 /* Status values are below this */
#define STATS_N_LAT 17  /* latency bucket bounds (seconds), then +Inf */
#define STATS_N_BATCH 10
#define STATS_HOSTS 4096 /* hosts with a worker latency histogram */
extern const double stats_lat_le[STATS_N_LAT];
extern const double stats_batch_le[STATS_N_BATCH];

typedef struct {
    uint64_t count;
    double sum;
    uint64_t bucket[STATS_N_LAT + 1]; /* plain counts; the last is +Inf */
} stats_hist_t;

struct broker_stats_t {
    stats_hist_t commit; /* seconds: COMMIT began -> durable */
    stats_hist_t batch;  /* messages per loop batch */
    stats_hist_t op[STATS_OPS];
    uint64_t requests[STATS_OPS][STATS_STATUS];
    zhashx_t *pending; /* "tenant\x1frid" -> op and start, for ops that answer later */
    zhashx_t *worker;  /* host id -> stats_hist_t: command sent -> reply (STATS_HOSTS at most) */
    int cur_op;        /* the request being dispatched */
    int64_t cur_t0_us;
    bool cur_replied;
};

broker_stats_t *stats_new(void);
void stats_destroy(broker_stats_t **self_p);

/* Around dispatch_request (broker.c): the request's op and start time. A
 * reply queued meanwhile counts at once; otherwise the (tenant, request id)
 * is remembered until the op's reply. */
void stats_request_begin(broker_t *self, const Ttfleet__Request *req);
void stats_request_end(broker_t *self, const Ttfleet__Request *req);
/* From reply_send: a reply with this status for (tenant, rid). */
void stats_reply(broker_t *self, const char *tenant, const char *rid, int status);
/* The model was cleared: ops in flight will not answer. */
void stats_forget_pending(broker_t *self);
/* A batch's commit became durable after us microseconds. */
void stats_commit(broker_t *self, int64_t us);
/* The loop read n messages in one batch. */
void stats_batch(broker_t *self, int n);
/* A worker answered a command sent us microseconds ago. */
void stats_worker(broker_t *self, const host_t *host, int64_t us);
/* A host was removed: forget its histogram. */
void stats_host_gone(broker_t *self, const char *host_id);

#endif
