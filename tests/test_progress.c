/*
 * test_progress.c - progress estimates (total from bytes read, percent,
 * ETA) and their plain-line and bar forms, with made-up numbers.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "engine/progress.h"

/* Half the file read holding 500 records: ~1000 in all; 400 finished in 2 s. */
static const pm_progress HALF = {.seconds = 2.0, .in = 500, .passes = 390, .rejects = 10,
                                 .bytes_done = 50000, .bytes_total = 100000};

Test(progress, total_estimated_from_bytes_read)
{
    pm_progress_estimate e;
    pm_progress_estimate_of(&HALF, &e);
    cr_assert_eq(e.done, 400);
    cr_assert(e.has_total);
    cr_assert_not(e.exact);
    cr_assert_eq(e.total, 1000);
    cr_assert_float_eq(e.fraction, 0.4, 1e-9);
    cr_assert_float_eq(e.rate, 200.0, 1e-9);
    cr_assert_float_eq(e.eta, 3.0, 1e-9);

    /* The whole file read: the count is the total, exactly. */
    pm_progress p = HALF;
    p.bytes_done = p.bytes_total;
    pm_progress_estimate_of(&p, &e);
    cr_assert(e.has_total && e.exact);
    cr_assert_eq(e.total, 500);
    cr_assert_float_eq(e.eta, 0.5, 1e-9);

    /* Nothing read yet, or no size (stdin, pipe, Kafka): no total. */
    p = HALF;
    p.bytes_done = 0;
    pm_progress_estimate_of(&p, &e);
    cr_assert_not(e.has_total);
    p = HALF;
    p.bytes_total = 0;
    pm_progress_estimate_of(&p, &e);
    cr_assert_not(e.has_total);
    cr_assert_lt(e.eta, 0);

    /* The final report always has the exact total. */
    p.final = true;
    p.passes = 490;
    pm_progress_estimate_of(&p, &e);
    cr_assert(e.has_total && e.exact);
    cr_assert_eq(e.total, 500);
    cr_assert_float_eq(e.fraction, 1.0, 1e-9);
    cr_assert_float_eq(e.eta, 0.0, 1e-9);

    /* An estimate below the records already read is raised to them. */
    p = HALF;
    p.bytes_done = 99999;
    p.bytes_total = 100000;
    p.in = 1;
    pm_progress_estimate_of(&p, &e);
    cr_assert_geq(e.total, 1);
}

Test(progress, plain_line_has_percent_total_and_eta)
{
    char line[256];
    pm_progress_format_line(&HALF, line, sizeof line);
    cr_assert_str_eq(line, "passmill: 2.0s in=500 passes=390 unchanged=0 rejects=10 failed=0 (200 records/s) "
                           "40% of ~1000, eta 3s");
    pm_progress p = HALF;
    p.bytes_total = 0;
    pm_progress_format_line(&p, line, sizeof line);
    cr_assert_str_eq(line, "passmill: 2.0s in=500 passes=390 unchanged=0 rejects=10 failed=0 (200 records/s)");
    /* Minutes and hours. */
    p = HALF;
    p.seconds = 1.0;
    p.passes = 8;
    p.rejects = 0;
    p.bytes_done = 1;
    p.bytes_total = 2; /* ~1000: 992 left at 8/s = 124 s */
    pm_progress_format_line(&p, line, sizeof line);
    cr_assert(strstr(line, " 0% of ~1000, eta 2m04s"), "%s", line);
    p.bytes_total = 200; /* ~100000: 99992 left at 8/s = 12499 s */
    pm_progress_format_line(&p, line, sizeof line);
    cr_assert(strstr(line, "eta 3h28m"), "%s", line);
}

Test(progress, bar_fits_the_terminal_and_keeps_its_width)
{
    char bar[256];
    pm_progress_format_bar(&HALF, 79, bar, sizeof bar);
    cr_assert_str_eq(bar, "passmill [########............]  40% 400/~1000 rejects=10 200/s eta 3s");
    cr_assert_leq(strlen(bar), 79);
    pm_progress p = HALF;
    p.final = true;
    p.passes = 490;
    pm_progress_format_bar(&p, 79, bar, sizeof bar);
    cr_assert_str_eq(bar, "passmill [####################] 100% 500/500 rejects=10 250/s eta 0s");
    /* Wide terminals: at most 30 columns of bar; narrow ones: at least 10. */
    pm_progress_format_bar(&HALF, 200, bar, sizeof bar);
    cr_assert(strstr(bar, "[############..................]"), "%s", bar);
    pm_progress_format_bar(&HALF, 40, bar, sizeof bar);
    cr_assert(strstr(bar, "[####......]"), "%s", bar);
    /* No total: counts and rate, no bar. */
    p = HALF;
    p.bytes_total = 0;
    pm_progress_format_bar(&p, 79, bar, sizeof bar);
    cr_assert_str_eq(bar, "passmill 400 records, rejects=10, 200/s, 2.0s");
}
