/* progress.c - progress estimates and their one-line forms (see progress.h). */
#include "engine/progress.h"

#include <stdio.h>
#include <string.h>

void pm_progress_estimate_of(const pm_progress *p, pm_progress_estimate *e)
{
    memset(e, 0, sizeof *e);
    e->done = p->passes + p->unchanged + p->rejects + p->failed;
    e->rate = p->seconds > 0 ? (double)e->done / p->seconds : 0.0;
    e->eta = -1;
    if (p->final || (p->bytes_total && p->bytes_done >= p->bytes_total)) {
        /* Everything is read: the count is the total. */
        e->has_total = p->bytes_total || p->final;
        e->exact = true;
        e->total = p->in;
    } else if (p->bytes_total && p->bytes_done && p->in) {
        e->has_total = true;
        double est = (double)p->in * ((double)p->bytes_total / (double)p->bytes_done);
        e->total = est < (double)p->in ? p->in : (uint64_t)(est + 0.5);
    }
    if (!e->has_total)
        return;
    if (e->total == 0)
        e->fraction = 1.0;
    else
        e->fraction = e->done >= e->total ? 1.0 : (double)e->done / (double)e->total;
    if (e->done >= e->total)
        e->eta = 0;
    else if (e->rate > 0)
        e->eta = (double)(e->total - e->done) / e->rate;
}

/* 14s, 2m05s, 1h02m, ? */
static void format_eta(double s, char *out, size_t outlen)
{
    if (s < 0) {
        snprintf(out, outlen, "?");
        return;
    }
    unsigned long long t = (unsigned long long)(s + 0.5);
    if (t < 60)
        snprintf(out, outlen, "%llus", t);
    else if (t < 3600)
        snprintf(out, outlen, "%llum%02llus", t / 60, t % 60);
    else
        snprintf(out, outlen, "%lluh%02llum", t / 3600, t / 60 % 60);
}

void pm_progress_format_line(const pm_progress *p, char *out, size_t outlen)
{
    pm_progress_estimate e;
    pm_progress_estimate_of(p, &e);
    int n = snprintf(out, outlen,
                     "passmill: %.1fs in=%llu passes=%llu unchanged=%llu rejects=%llu failed=%llu "
                     "(%.0f records/s)",
                     p->seconds, (unsigned long long)p->in, (unsigned long long)p->passes,
                     (unsigned long long)p->unchanged, (unsigned long long)p->rejects,
                     (unsigned long long)p->failed, e.rate);
    if (!e.has_total || n < 0 || (size_t)n >= outlen)
        return;
    char eta[32];
    format_eta(e.eta, eta, sizeof eta);
    /* Rounded down: 100% only when every record is finished. */
    snprintf(out + n, outlen - (size_t)n, " %d%% of %s%llu, eta %s", (int)(e.fraction * 100),
             e.exact ? "" : "~", (unsigned long long)e.total, eta);
}

void pm_progress_format_bar(const pm_progress *p, unsigned columns, char *out, size_t outlen)
{
    pm_progress_estimate e;
    pm_progress_estimate_of(p, &e);
    char tail[160];
    if (!e.has_total) {
        snprintf(out, outlen, "passmill %llu records, rejects=%llu, %.0f/s, %.1fs",
                 (unsigned long long)e.done, (unsigned long long)p->rejects, e.rate, p->seconds);
        return;
    }
    char eta[32];
    format_eta(e.eta, eta, sizeof eta);
    int pct = (int)(e.fraction * 100);
    snprintf(tail, sizeof tail, " %3d%% %llu/%s%llu rejects=%llu %.0f/s eta %s", pct,
             (unsigned long long)e.done, e.exact ? "" : "~", (unsigned long long)e.total,
             (unsigned long long)p->rejects, e.rate, eta);
    /* The bar's width depends on columns only, so it does not jump as the
     * numbers after it grow; "passmill [" + bar + "]" leaves 48 columns. */
    int width = (int)columns - (int)strlen("passmill []") - 48;
    if (width > 30)
        width = 30;
    if (width < 10)
        width = 10;
    char bar[31];
    int full = (int)(e.fraction * width);
    for (int i = 0; i < width; i++)
        bar[i] = i < full ? '#' : '.';
    bar[width] = '\0';
    snprintf(out, outlen, "passmill [%s]%s", bar, tail);
}
