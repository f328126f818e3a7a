/*
 * source.h - where records come from.
 *
 * A source hands the engine one raw record at a time (format, bytes,
 * origin) and is told when that record is finished, so it can commit
 * (Kafka offsets) only what is durable.  Implementations: source_file.c
 * (JSON Lines or Avro Object Container File) and source_kafka.c.
 */
#ifndef PM_SOURCE_H
#define PM_SOURCE_H

#include <stdbool.h>
#include <stdint.h>

#include "core/config.h"
#include "core/error.h"
#include "engine/job.h"

typedef struct pm_source pm_source;

typedef struct pm_source_ops {
    const char *name;
    /*
     * Fill job->format, job->raw, job->origin and optionally job->source_ref.
     * Returns 1 with a record, 0 at the end of input, -1 on a source error
     * (err filled; the run stops).  Called from one thread only.
     */
    int (*next)(pm_source *s, pm_job *job, pm_error *err);
    /*
     * The record that came with this origin/source_ref is finished:
     * durable=true once its pass or reject is stored and every outcome has
     * confirmed it (a Kafka source may then commit its offset); false if it
     * failed and must not be committed.  Called from worker or producer
     * threads, concurrently, possibly out of order.  May be NULL.
     */
    void (*done)(pm_source *s, const pm_origin *origin, void *source_ref, bool durable);
    /*
     * The engine's queue is full (paused=true) or has room again (false):
     * a Kafka source pauses/resumes its partitions.  May be NULL.
     */
    void (*backpressure)(pm_source *s, bool paused);
    /*
     * How far through its input the source is: *done bytes of *total (a
     * file's size; 0 = unknown: stdin, a pipe, Kafka), for progress
     * estimates.  Called from the engine's progress thread while next()
     * runs on another.  May be NULL (nothing known).
     */
    void (*position)(pm_source *s, uint64_t *done, uint64_t *total);
    /* Ask next() to return 0 soon (signal handling). Async-signal-safe. */
    void (*stop)(pm_source *s);
    void (*close)(pm_source *s);
} pm_source_ops;

struct pm_source {
    const pm_source_ops *ops;
};

int pm_source_open(const pm_config *cfg, pm_source **out, pm_error *err);
int pm_source_file_open(const char *path, const char *format, pm_source **out, pm_error *err);
int pm_source_kafka_open(const pm_config *cfg, pm_source **out, pm_error *err);
void pm_source_close(pm_source *s);

#endif
