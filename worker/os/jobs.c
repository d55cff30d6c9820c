/*
 * jobs: the pool behind fleet's WAITING state. See jobs.h.
 *
 * One mutex guards two FIFO lists (queued, done), the counters and the
 * thread slots; idle threads sleep on a condition variable with a timeout.
 * A slot is FREE, LIVE (its thread runs or waits) or EXITED (its thread
 * gave up after JOBS_IDLE_MS idle and returns without touching the pool
 * again); EXITED slots are joined, under the mutex, by the next submit or
 * by destroy, so the join never waits for more than the thread's return.
 * The loop does not sleep on the pool: it looks at the done list on its
 * timer (fleet_next_ms() asks for a short poll while jobs are out), which
 * keeps the loop's poller free of raw file descriptors and costs one mutex
 * per look.
 */
#include "jobs.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

#define S_MAX_THREADS 64

typedef struct s_job_s {
    jobs_fn *fn;
    void *arg;
    struct s_job_s *next;
} s_job_t;

typedef enum { S_FREE = 0, S_LIVE, S_EXITED } s_slot_state_t;

struct jobs_t {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* on CLOCK_MONOTONIC */
    s_job_t *queued, **queued_tail;
    s_job_t *done, **done_tail;
    size_t pending;
    size_t n_queued;
    bool stopping;
    pthread_t threads[S_MAX_THREADS];
    s_slot_state_t slot[S_MAX_THREADS];
    int n;    /* at most this many threads */
    int live; /* slots LIVE */
    int idle; /* LIVE threads waiting for a job */
};

typedef struct {
    jobs_t *pool;
    int slot;
} s_start_t;

static void *s_run(void *p)
{
    s_start_t start = *(s_start_t *)p;
    free(p);
    jobs_t *self = start.pool;
    pthread_mutex_lock(&self->mu);
    for (;;) {
        if (!self->queued && !self->stopping) {
            struct timespec until;
            clock_gettime(CLOCK_MONOTONIC, &until);
            until.tv_sec += JOBS_IDLE_MS / 1000;
            until.tv_nsec += (long)(JOBS_IDLE_MS % 1000) * 1000000L;
            if (until.tv_nsec >= 1000000000L) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000L;
            }
            self->idle++;
            int rc = 0;
            while (!self->queued && !self->stopping && rc != ETIMEDOUT)
                rc = pthread_cond_timedwait(&self->cv, &self->mu, &until);
            self->idle--;
            if (!self->queued && !self->stopping)
                break; /* idle for JOBS_IDLE_MS: give the thread back */
        }
        if (self->stopping)
            break;
        s_job_t *job = self->queued;
        self->queued = job->next;
        if (!self->queued)
            self->queued_tail = &self->queued;
        self->n_queued--;
        pthread_mutex_unlock(&self->mu);
        job->fn(job->arg);
        pthread_mutex_lock(&self->mu);
        job->next = NULL;
        *self->done_tail = job;
        self->done_tail = &job->next;
    }
    self->slot[start.slot] = S_EXITED;
    self->live--;
    pthread_mutex_unlock(&self->mu);
    return NULL;
}

/* Join the threads that exited (they hold the mutex no more). Under mu. */
static void s_join_exited(jobs_t *self)
{
    for (int i = 0; i < self->n; i++)
        if (self->slot[i] == S_EXITED) {
            pthread_join(self->threads[i], NULL);
            self->slot[i] = S_FREE;
        }
}

/* Start one more thread if a slot is free. Under mu. 0 / -1. */
static int s_start_thread(jobs_t *self)
{
    for (int i = 0; i < self->n; i++) {
        if (self->slot[i] != S_FREE)
            continue;
        s_start_t *start = malloc(sizeof *start);
        if (!start)
            return -1;
        start->pool = self;
        start->slot = i;
        if (pthread_create(&self->threads[i], NULL, s_run, start)) {
            free(start);
            return -1;
        }
        self->slot[i] = S_LIVE;
        self->live++;
        return 0;
    }
    return -1;
}

jobs_t *jobs_new(int n)
{
    if (n < 1 || n > S_MAX_THREADS)
        return NULL;
    jobs_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&self->mu, NULL);
    pthread_cond_init(&self->cv, &ca);
    pthread_condattr_destroy(&ca);
    self->queued_tail = &self->queued;
    self->done_tail = &self->done;
    self->n = n;
    return self;
}

void jobs_destroy(jobs_t **self_p, void (*drop)(void *arg))
{
    jobs_t *self = *self_p;
    if (!self)
        return;
    pthread_mutex_lock(&self->mu);
    self->stopping = true;
    pthread_cond_broadcast(&self->cv);
    pthread_mutex_unlock(&self->mu);
    for (int i = 0; i < self->n; i++) {
        pthread_mutex_lock(&self->mu);
        bool started = self->slot[i] != S_FREE;
        pthread_mutex_unlock(&self->mu);
        if (started)
            pthread_join(self->threads[i], NULL);
    }
    s_job_t *lists[2] = {self->queued, self->done};
    for (int l = 0; l < 2; l++)
        while (lists[l]) {
            s_job_t *job = lists[l];
            lists[l] = job->next;
            if (drop)
                drop(job->arg);
            free(job);
        }
    pthread_cond_destroy(&self->cv);
    pthread_mutex_destroy(&self->mu);
    free(self);
    *self_p = NULL;
}

int jobs_submit(jobs_t *self, jobs_fn *fn, void *arg)
{
    s_job_t *job = calloc(1, sizeof *job);
    if (!job)
        return -1;
    job->fn = fn;
    job->arg = arg;
    pthread_mutex_lock(&self->mu);
    s_join_exited(self);
    /* a thread for this job: an idle one that no queued job has claimed
     * yet, else a new one while fewer than n run */
    if ((size_t)self->idle <= self->n_queued && self->live < self->n && s_start_thread(self) &&
        self->live == 0) {
        pthread_mutex_unlock(&self->mu);
        free(job);
        return -1; /* nothing would ever run it */
    }
    *self->queued_tail = job;
    self->queued_tail = &job->next;
    self->n_queued++;
    self->pending++;
    pthread_cond_signal(&self->cv);
    pthread_mutex_unlock(&self->mu);
    return 0;
}

void *jobs_reap(jobs_t *self)
{
    pthread_mutex_lock(&self->mu);
    s_job_t *job = self->done;
    if (job) {
        self->done = job->next;
        if (!self->done)
            self->done_tail = &self->done;
        self->pending--;
    }
    pthread_mutex_unlock(&self->mu);
    if (!job)
        return NULL;
    void *arg = job->arg;
    free(job);
    return arg;
}

size_t jobs_pending(const jobs_t *self)
{
    return self->pending; /* written by the loop thread only */
}

int jobs_threads(jobs_t *self)
{
    pthread_mutex_lock(&self->mu);
    int n = self->live;
    pthread_mutex_unlock(&self->mu);
    return n;
}
