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
 * Threads start on demand: an idle pool holds none. jobs_submit() starts
 * one when no thread is idle and fewer than n run; a thread with nothing
 * to do for JOBS_IDLE_MS exits. A process with a thousand idle fleets
 * (ttbench) holds no pool thread at all.
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

#define JOBS_IDLE_MS 2000

/* A pool of at most n threads (1..64), none started yet. NULL on failure. */
jobs_t *jobs_new(int n);
void jobs_destroy(jobs_t **self_p, void (*drop)(void *arg));

/* Queue fn(arg) to run on a pool thread, starting one if none is idle.
 * 0 / -1 (out of memory, or no thread runs and none can be started). */
int jobs_submit(jobs_t *self, jobs_fn *fn, void *arg);

/* One finished job's arg, or NULL if none has finished. */
void *jobs_reap(jobs_t *self);

/* Jobs queued, running or finished but not reaped. */
size_t jobs_pending(const jobs_t *self);

/* Threads alive in the pool now (started, not yet exited). */
int jobs_threads(jobs_t *self);

#endif
