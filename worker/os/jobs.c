/*
 * jobs: the pool behind fleet's WAITING state. See jobs.h.
 *
 * One mutex guards two FIFO lists (queued, done) and a counter; idle
 * threads sleep on a condition variable. The loop does not sleep on the
 * pool: it looks at the done list on its timer (fleet_next_ms() asks for
 * a short poll while jobs are out), which keeps the loop's poller free of
 * raw file descriptors and costs one mutex per look.
 */
#include "jobs.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#define S_MAX_THREADS 64

typedef struct s_job_s {
    jobs_fn *fn;
    void *arg;
    struct s_job_s *next;
} s_job_t;

struct jobs_t {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    s_job_t *queued, **queued_tail;
    s_job_t *done, **done_tail;
    size_t pending;
    bool stopping;
    pthread_t threads[S_MAX_THREADS];
    int n;
};

static void *s_run(void *p)
{
    jobs_t *self = p;
    pthread_mutex_lock(&self->mu);
    for (;;) {
        while (!self->queued && !self->stopping)
            pthread_cond_wait(&self->cv, &self->mu);
        if (self->stopping)
            break;
        s_job_t *job = self->queued;
        self->queued = job->next;
        if (!self->queued)
            self->queued_tail = &self->queued;
        pthread_mutex_unlock(&self->mu);
        job->fn(job->arg);
        pthread_mutex_lock(&self->mu);
        job->next = NULL;
        *self->done_tail = job;
        self->done_tail = &job->next;
    }
    pthread_mutex_unlock(&self->mu);
    return NULL;
}

jobs_t *jobs_new(int n)
{
    if (n < 1 || n > S_MAX_THREADS)
        return NULL;
    jobs_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    pthread_mutex_init(&self->mu, NULL);
    pthread_cond_init(&self->cv, NULL);
    self->queued_tail = &self->queued;
    self->done_tail = &self->done;
    for (; self->n < n; self->n++)
        if (pthread_create(&self->threads[self->n], NULL, s_run, self))
            break;
    if (self->n == 0) {
        jobs_destroy(&self, NULL);
        return NULL;
    }
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
    for (int i = 0; i < self->n; i++)
        pthread_join(self->threads[i], NULL);
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
    *self->queued_tail = job;
    self->queued_tail = &job->next;
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
