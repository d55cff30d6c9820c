/*
 * jobs: a small pool of threads that run the engine calls that may block
 * (qemu-img, a spawn, a QMP pause/resume), so the worker's loop never
 * waits on them.
 *
 * A job is a function and its argument. The function runs on a pool
 * thread and must touch nothing the loop owns: it gets copies (a vm_t,
 * the read-only engine context) and writes its results into the job's
 * own memory. When it returns, the job goes onto a done list; the loop
 * takes it back with jobs_reap() (never blocks) and applies the results
 * itself, so worker.db and the VM table stay on the loop thread.
 *
 * jobs_destroy() lets running jobs finish (each is bounded by its engine
 * contract) and drops queued ones unrun (their args are handed to the
 * drop callback).
 */
#ifndef TT_WORKER_JOBS_H
#define TT_WORKER_JOBS_H

#include <stddef.h>

typedef struct jobs_t jobs_t;
typedef void(jobs_fn)(void *arg);

/* A pool of n threads (1..16). NULL on failure. */
jobs_t *jobs_new(int n);
void jobs_destroy(jobs_t **self_p, void (*drop)(void *arg));

/* Queue fn(arg) to run on a pool thread. 0 / -1 (out of memory). */
int jobs_submit(jobs_t *self, jobs_fn *fn, void *arg);

/* One finished job's arg, or NULL if none has finished. */
void *jobs_reap(jobs_t *self);

/* Jobs queued, running or finished but not reaped. */
size_t jobs_pending(const jobs_t *self);

#endif
