/*
 * progress.h - how far a run is, and how to say it in one line.
 *
 * The engine fills a pm_progress every engine.progress_ms and hands it to
 * the caller's callback (pm_engine_opts.on_progress); the CLI prints it.
 * The formatters are pure functions (no I/O, no clock) so they can be
 * tested with made-up numbers.
 *
 * The total of a file is estimated without reading the file twice: the
 * source reports how many bytes of the file it has read and the file's
 * size; records read so far over bytes read gives the average record size,
 * hence total ~= in * size / bytes_done.  Once the source has read the
 * whole file the total is exact (in).  Percent and ETA count finished
 * records (passes + unchanged + rejects + failed), not records read, since reading runs
 * ahead of the workers by the queue size.  Stdin, pipes and Kafka have no
 * size: no total, no percent, no ETA.
 */
#ifndef PM_PROGRESS_H
#define PM_PROGRESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct pm_progress {
    double seconds;                   /* since the run started */
    uint64_t in, passes, unchanged, rejects, failed;
    uint64_t bytes_done, bytes_total; /* source position; bytes_total 0 = unknown */
    bool final;                       /* the run is over: the last report */
} pm_progress;

typedef struct pm_progress_estimate {
    uint64_t done;      /* passes + unchanged + rejects + failed */
    double rate;        /* finished records per second, 0 when unknown */
    bool has_total;
    bool exact;         /* total is known, not estimated from bytes */
    uint64_t total;     /* when has_total */
    double fraction;    /* done / total in [0, 1], when has_total */
    double eta;         /* seconds left, < 0 when unknown */
} pm_progress_estimate;

void pm_progress_estimate_of(const pm_progress *p, pm_progress_estimate *e);

/*
 * A plain line (no newline) for logs and pipes:
 *   passmill: 2.0s in=1200 passes=1190 unchanged=0 rejects=10 failed=0 (600 records/s) 12% of ~10000, eta 14s
 * Without a total the part after the rate is left out.
 */
void pm_progress_format_line(const pm_progress *p, char *out, size_t outlen);

/*
 * A progress bar (no newline, no control characters) at most `columns`
 * wide, for a terminal that rewrites it in place:
 *   passmill [##########..........]  50% 500/~1000 rejects=0 250/s eta 2s
 * Without a total: counts, rate and elapsed time only.
 */
void pm_progress_format_bar(const pm_progress *p, unsigned columns, char *out, size_t outlen);

#endif
