/*
 * rfc3339.h - RFC 3339 timestamps <-> unix seconds.
 *
 * Accepted: YYYY-MM-DDTHH:MM:SS[.frac](Z|+hh:mm|-hh:mm), 'T' or 't',
 * a real calendar date (leap years), hour 0-23, minute 0-59, second 0-59,
 * offset within +-14:00.  Fractions are accepted and dropped.
 */
#ifndef PM_RFC3339_H
#define PM_RFC3339_H

#include <stdbool.h>
#include <stdint.h>

/* 0 and *out = unix seconds (UTC), or -1 if s is not a valid timestamp. */
int pm_rfc3339_parse(const char *s, int64_t *out);
/* "2027-06-12T18:00:00Z" into out. */
void pm_rfc3339_format_utc(int64_t t, char out[32]);
/* Days from 1970-01-01 to a proleptic Gregorian date. */
int64_t pm_days_from_civil(int64_t y, unsigned m, unsigned d);
bool pm_date_valid(int64_t y, unsigned m, unsigned d);

#endif
