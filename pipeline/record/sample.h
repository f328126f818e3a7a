/*
 * sample.h - realistic, valid pass requests for a stadium on-sale.
 *
 * "Summer Stadium Tour 2027": eight nights at UK stadiums (Europe/London,
 * RFC 3339 times at +01:00).  Tickets are sold in orders of 1..6 seats next
 * to each other in one row; each order has one confirmation code and
 * order id (metadata.order_id), and its tickets are Adult / Child /
 * Concession, or VIP / Hospitality, priced in GBP (amount_micros).  Seats
 * are allocated from a per-night seat map (sections 101-130 in 24 rows of
 * 30 seats, 201-240 in 40 rows of 35 seats), walked in a seed-shuffled
 * section order, so no seat is sold twice until every night is sold out.
 * Serials "STA-2027-000001-K7QD" are unique per record.  Most barcodes are
 * QRCODE "autogenerate", about one in ten carries an explicit message.
 * Output is the same for the same seed and count.
 *
 * Records are emitted as callers would send them: optional fields that
 * have their default (barcode.encoding, empty beacons ...) are left out of
 * JSON, so decode fills them.
 */
#ifndef PM_SAMPLE_H
#define PM_SAMPLE_H

#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "core/error.h"

typedef struct pm_sample_gen pm_sample_gen;

/* A generator for one deterministic stream. Free with pm_sample_gen_destroy. */
int pm_sample_gen_create(uint64_t seed, pm_sample_gen **out, pm_error *err);
void pm_sample_gen_destroy(pm_sample_gen *g);
/* The next record (a new JSON object the caller owns). */
int pm_sample_gen_next(pm_sample_gen *g, json_t **out, pm_error *err);

/*
 * Write count records to out: format "jsonl" (one compact JSON object per
 * line) or "avro" (an Avro Object Container File, codec null, the .avsc
 * text as its schema, 64 KiB blocks, a sync marker derived from the seed,
 * so the bytes are reproducible too).  Errors: PM_ERR_CONFIG for a bad
 * format, PM_ERR_IO when writing fails.
 */
int pm_sample_write(FILE *out, uint64_t count, uint64_t seed, const char *format,
                    pm_error *err);

#endif
