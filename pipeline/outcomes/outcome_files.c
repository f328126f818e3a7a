/*
 * outcome_files.c - the results ledger (zstd JSON Lines) and the rejects
 * file (JSON Lines).
 *
 * Both files are opened for appending, so a re-run adds to them; a new one
 * is created mode 0600 (personal data, presigned URLs).  The
 * ledger is written as a series of complete zstd frames (one per flush,
 * at most every LEDGER_FRAME_LINES lines): concatenated frames are a valid
 * zstd stream, and a crash loses at most the unflushed tail, never makes
 * the earlier frames unreadable.
 */
#include "outcomes/outcome.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <zstd.h>

#include "wallet/template.h"

#define LEDGER_FRAME_LINES 4096

typedef struct files_outcome {
    pm_outcome base;
    pthread_mutex_t mu;
    FILE *ledger;
    char *ledger_path;
    ZSTD_CCtx *zc;
    pm_buf zin;          /* uncompressed lines waiting for the next frame */
    pm_buf zout;
    size_t zlines;
    FILE *rejects;
    char *rejects_path;
} files_outcome;

/* ---- shared JSON shapes ---- */

/* ---- the files outcome ---- */

static int dump_line(json_t *j, pm_buf *out)
{
    char *s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!s)
        return -1;
    int rc = pm_buf_append_str(out, s) || pm_buf_append(out, "\n", 1);
    free(s);
    return rc ? -1 : 0;
}

/* Compress zin into one complete zstd frame and append it. Lock held. */
static int ledger_flush_locked(files_outcome *f, pm_error *err)
{
    if (f->zin.len == 0)
        return 0;
    size_t bound = ZSTD_compressBound(f->zin.len);
    pm_buf_reset(&f->zout);
    if (pm_buf_reserve(&f->zout, bound) != 0)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    size_t n = ZSTD_compress2(f->zc, f->zout.data, bound, f->zin.data, f->zin.len);
    if (ZSTD_isError(n))
        return pm_error_set(err, PM_ERR_IO, "ledger %s: zstd: %s", f->ledger_path, ZSTD_getErrorName(n));
    if (fwrite(f->zout.data, 1, n, f->ledger) != n || fflush(f->ledger) != 0)
        return pm_error_set(err, PM_ERR_IO, "ledger %s: %s", f->ledger_path, strerror(errno));
    pm_buf_reset(&f->zin);
    f->zlines = 0;
    return 0;
}

static int files_pass(pm_outcome *o, const pm_job *job, json_t *result, pm_completion *c, pm_error *err)
{
    (void)job;
    (void)c;
    files_outcome *f = (files_outcome *)o;
    int rc = 0;
    pthread_mutex_lock(&f->mu);
    if (dump_line(result, &f->zin) != 0)
        rc = pm_error_set(err, PM_ERR_NOMEM, "ledger %s: cannot serialise a result", f->ledger_path);
    else if (++f->zlines >= LEDGER_FRAME_LINES)
        rc = ledger_flush_locked(f, err);
    pthread_mutex_unlock(&f->mu);
    return rc;
}

static int write_reject(files_outcome *f, const pm_job *job, pm_error *err)
{
    json_t *j = pm_outcome_reject_json(job);
    char *s = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(j);
    if (!s)
        return pm_error_set(err, PM_ERR_NOMEM, "rejects %s: cannot serialise", f->rejects_path);
    int rc = 0;
    pthread_mutex_lock(&f->mu);
    /* Flushed per line: rejects are rare and must survive a crash. */
    if (fputs(s, f->rejects) == EOF || fputc('\n', f->rejects) == EOF || fflush(f->rejects) != 0)
        rc = pm_error_set(err, PM_ERR_IO, "rejects %s: %s", f->rejects_path, strerror(errno));
    pthread_mutex_unlock(&f->mu);
    free(s);
    return rc;
}

static int files_reject(pm_outcome *o, const pm_job *job, pm_completion *c, pm_error *err)
{
    (void)c;
    return write_reject((files_outcome *)o, job, err);
}

static int files_fail(pm_outcome *o, const pm_job *job, pm_error *err)
{
    return write_reject((files_outcome *)o, job, err);
}

static int files_flush(pm_outcome *o, pm_error *err)
{
    files_outcome *f = (files_outcome *)o;
    pthread_mutex_lock(&f->mu);
    int rc = ledger_flush_locked(f, err);
    if (rc == 0 && fflush(f->rejects) != 0)
        rc = pm_error_set(err, PM_ERR_IO, "rejects %s: %s", f->rejects_path, strerror(errno));
    pthread_mutex_unlock(&f->mu);
    return rc;
}

static void files_close(pm_outcome *o)
{
    files_outcome *f = (files_outcome *)o;
    if (f->ledger)
        fclose(f->ledger);
    if (f->rejects)
        fclose(f->rejects);
    ZSTD_freeCCtx(f->zc);
    pm_buf_free(&f->zin);
    pm_buf_free(&f->zout);
    free(f->ledger_path);
    free(f->rejects_path);
    pthread_mutex_destroy(&f->mu);
    free(f);
}

static const pm_outcome_ops files_ops = {
    .name = "files",
    .pass = files_pass,
    .reject = files_reject,
    .fail = files_fail,
    .flush = files_flush,
    .close = files_close,
};

/*
 * Open for appending, creating the file 0600: rejects hold the records'
 * personal data and the ledger presigned URLs, whatever the umask.  An
 * existing file keeps the mode its owner gave it.
 */
static FILE *fopen_private(const char *path)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return NULL;
    FILE *f = fdopen(fd, "a");
    if (!f) {
        int saved = errno;
        close(fd);
        errno = saved;
    }
    return f;
}

int pm_outcome_files_open(const char *ledger_path, const char *rejects_path, pm_outcome **out,
                          pm_error *err)
{
    files_outcome *f = calloc(1, sizeof *f);
    if (!f)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    f->base.ops = &files_ops;
    pthread_mutex_init(&f->mu, NULL);
    f->ledger_path = strdup(ledger_path);
    f->rejects_path = strdup(rejects_path);
    f->zc = ZSTD_createCCtx();
    if (!f->ledger_path || !f->rejects_path || !f->zc) {
        files_close(&f->base);
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    }
    ZSTD_CCtx_setParameter(f->zc, ZSTD_c_compressionLevel, 3);
    ZSTD_CCtx_setParameter(f->zc, ZSTD_c_checksumFlag, 1);
    f->ledger = fopen_private(ledger_path);
    if (!f->ledger) {
        pm_error_set(err, PM_ERR_IO, "cannot open ledger '%s': %s", ledger_path, strerror(errno));
        files_close(&f->base);
        return -1;
    }
    f->rejects = fopen_private(rejects_path);
    if (!f->rejects) {
        pm_error_set(err, PM_ERR_IO, "cannot open rejects file '%s': %s", rejects_path, strerror(errno));
        files_close(&f->base);
        return -1;
    }
    *out = &f->base;
    return 0;
}

void pm_outcome_close(pm_outcome *o)
{
    if (o)
        o->ops->close(o);
}
