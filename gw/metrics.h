/*
 * metrics: the gateway's own counters and histograms, and the Prometheus
 * text exposition of them plus the pool's state.
 *
 * Requests are counted by route (a fixed name per route, such as
 * "env_create", never the raw path, so a caller cannot grow the label set)
 * and HTTP status; their latency goes into one histogram per route. Each
 * broker call's round trip goes into a histogram per op. The pool's state
 * (hosts, envs, VMs, capacity) is read from the broker at scrape time by
 * the caller and handed in as replies; see gw.c.
 *
 * All functions are thread-safe.
 */
#ifndef METRICS_H
#define METRICS_H

#include <stdio.h>

#define METRICS_MAX_ROUTES 32

/* Registers a route or op name (a static string); returns its index. */
int metrics_route(const char *name);
int metrics_op(const char *name);

/* Counts one HTTP request of route index with status, taking seconds. */
void metrics_request(int route, int status, double seconds);

/* Records one broker round trip of op index; ok is 0 when a reply came. */
void metrics_broker(int op, int ok, double seconds);

/* Writes the gateway's own series to f. */
void metrics_write_gateway(FILE *f);

/* n connections closed by the request deadline. */
void metrics_deadline_cut(unsigned n);

/* This process's figures from /proc/self (stat, fd) and getrlimit. */
typedef struct {
    double cpu_seconds;        /* user + system */
    double start_time_seconds; /* unix time */
    unsigned long long resident_memory_bytes;
    unsigned long long virtual_memory_bytes;
    unsigned open_fds;
    unsigned long long max_fds; /* 0: unlimited */
} metrics_process_t;

/* Fills out; 0, or -1 when /proc cannot be read (out is zeroed then). */
int metrics_process_read(metrics_process_t *out);

/* Writes ttfleet_build_info{version} and the process_* series (the
 * Prometheus client libraries' names and units) to f; the process_* series
 * are left out when /proc cannot be read. */
void metrics_write_process(FILE *f, const char *version);

#endif
