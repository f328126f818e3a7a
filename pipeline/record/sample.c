/*
 * sample.c - deterministic sample pass requests (see sample.h).
 */
#include "record/sample.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <avro.h>

#include "core/buf.h"
#include "record/schema.h"

/* ---- the tour ---- */

typedef struct night {
    const char *slug;        /* for event ids and pass groups */
    const char *date;        /* YYYY-MM-DD (all in British Summer Time) */
    const char *venue;
    const char *address;
    double lat, lon, alt;
    int venue_no;            /* beacon major */
} night;

static const night nights[] = {
    {"wembley", "2027-06-12", "Wembley Stadium",
     "Wembley Stadium, Wembley, London HA9 0WS, United Kingdom", 51.5560, -0.2796, 35.0, 1},
    {"wembley", "2027-06-13", "Wembley Stadium",
     "Wembley Stadium, Wembley, London HA9 0WS, United Kingdom", 51.5560, -0.2796, 35.0, 1},
    {"cardiff", "2027-06-19", "Principality Stadium",
     "Westgate Street, Cardiff CF10 1NS, United Kingdom", 51.4782, -3.1826, 10.0, 2},
    {"murrayfield", "2027-06-26", "Murrayfield Stadium",
     "Roseburn Street, Edinburgh EH12 5PJ, United Kingdom", 55.9422, -3.2409, 40.0, 3},
    {"etihad", "2027-07-03", "Etihad Stadium",
     "Ashton New Road, Manchester M11 3FF, United Kingdom", 53.4831, -2.2004, 45.0, 4},
    {"anfield", "2027-07-10", "Anfield",
     "Anfield Road, Liverpool L4 0TH, United Kingdom", 53.4308, -2.9608, 50.0, 5},
    {"tottenham", "2027-07-17", "Tottenham Hotspur Stadium",
     "782 High Road, London N17 0BX, United Kingdom", 51.6043, -0.0664, 25.0, 6},
    {"tottenham", "2027-07-18", "Tottenham Hotspur Stadium",
     "782 High Road, London N17 0BX, United Kingdom", 51.6043, -0.0664, 25.0, 6},
};
#define NIGHTS (sizeof nights / sizeof nights[0])

/* Seat map: lower tier 101-130 (rows A-Z without I and O, 30 seats),
 * upper tier 201-240 (rows 1-40, 35 seats). */
#define LOWER_SECTIONS 30
#define UPPER_SECTIONS 40
#define SECTIONS (LOWER_SECTIONS + UPPER_SECTIONS)
static const char lower_rows[] = "ABCDEFGHJKLMNPQRSTUVWXYZ";

static int section_number(int idx)
{
    return idx < LOWER_SECTIONS ? 101 + idx : 201 + (idx - LOWER_SECTIONS);
}
static int section_rows(int idx)
{
    return idx < LOWER_SECTIONS ? (int)(sizeof lower_rows - 1) : 40;
}
static int section_seats(int idx)
{
    return idx < LOWER_SECTIONS ? 30 : 35;
}

static const char *first_names[] = {
    "Olivia", "Amelia", "Isla", "Ava", "Mia", "Freya", "Siobhán", "Zoë", "Priya", "Grace",
    "Noah", "Oliver", "George", "Arthur", "Leo", "Harry", "Oscar", "Mohammed", "Callum", "Rhys",
    "Aisha", "Eilidh", "Tomasz", "Chloé"};
static const char *last_names[] = {
    "Smith", "Jones", "Williams", "Taylor", "Brown", "Davies", "Evans", "Wilson", "Thomas",
    "Roberts", "Johnson", "Patel", "Walker", "Wright", "Robinson", "Thompson", "MacDonald",
    "O'Brien", "Kowalski", "Nguyen", "Campbell", "Hughes", "Khan", "Murphy"};
#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* Crockford-style alphabet: no I, L, O, U, so codes read back unambiguously. */
static const char code_chars[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/* ---- the generator ---- */

struct pm_sample_gen {
    uint64_t rng;            /* splitmix64 state */
    uint64_t seed;
    uint64_t index;          /* records emitted so far */
    uint64_t orders;         /* orders started so far */
    /* seat cursor */
    size_t night;
    int order_of_sections[SECTIONS];
    int section_pos, row, seat; /* seat is the next free seat number - 1 */
    /* the current order */
    int order_left, order_size, order_kind; /* kind: 0 general, 1 VIP, 2 hospitality */
    char order_id[32], confirmation[16], buyer_last[64];
};

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static uint32_t rnd(pm_sample_gen *g, uint32_t n)
{
    return (uint32_t)(splitmix64(&g->rng) % n);
}

static void shuffle_sections(pm_sample_gen *g)
{
    for (int i = 0; i < SECTIONS; i++)
        g->order_of_sections[i] = i;
    for (int i = SECTIONS - 1; i > 0; i--) {
        int j = (int)rnd(g, (uint32_t)i + 1);
        int t = g->order_of_sections[i];
        g->order_of_sections[i] = g->order_of_sections[j];
        g->order_of_sections[j] = t;
    }
}

int pm_sample_gen_create(uint64_t seed, pm_sample_gen **out, pm_error *err)
{
    pm_sample_gen *g = calloc(1, sizeof *g);
    if (!g)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    g->seed = seed;
    g->rng = seed ^ 0x5354414449554D31ULL; /* "STADIUM1" */
    shuffle_sections(g);
    *out = g;
    return 0;
}

void pm_sample_gen_destroy(pm_sample_gen *g)
{
    free(g);
}

static void random_code(pm_sample_gen *g, char *out, size_t len)
{
    for (size_t i = 0; i < len; i++)
        out[i] = code_chars[rnd(g, sizeof code_chars - 1)];
    out[len] = '\0';
}

/* Place a block of n adjacent seats; moves to the next row, section or
 * night when the current one has no room. */
static void allocate_block(pm_sample_gen *g, int n)
{
    for (;;) {
        int sec = g->order_of_sections[g->section_pos];
        if (g->seat + n <= section_seats(sec))
            return;
        g->seat = 0;
        if (++g->row < section_rows(sec))
            continue;
        g->row = 0;
        if (++g->section_pos < SECTIONS)
            continue;
        g->section_pos = 0;
        g->night = (g->night + 1) % NIGHTS; /* sold out: next night */
        shuffle_sections(g);
    }
}

static void start_order(pm_sample_gen *g)
{
    static const int sizes[] = {1, 2, 2, 2, 2, 3, 4, 4, 4, 5, 6};
    uint32_t k = rnd(g, 100);
    g->order_kind = k < 6 ? 2 : k < 18 ? 1 : 0;
    g->order_size = g->order_left = sizes[rnd(g, COUNT(sizes))];
    g->orders++;
    snprintf(g->order_id, sizeof g->order_id, "ORD-SST27-%07" PRIu64, g->orders);
    random_code(g, g->confirmation, 8);
    snprintf(g->buyer_last, sizeof g->buyer_last, "%s", last_names[rnd(g, COUNT(last_names))]);
    allocate_block(g, g->order_size);
}

typedef struct ticket_price {
    const char *type;
    int64_t lower_pence, upper_pence;
} ticket_price;

static const ticket_price prices[] = {
    {"Adult", 9500, 6500},
    {"Child", 4750, 3250},
    {"Concession", 7125, 4875},
    {"VIP", 29500, 24500},
    {"Hospitality", 65000, 52500},
};

static const ticket_price *pick_price(pm_sample_gen *g)
{
    if (g->order_kind == 2)
        return &prices[4];
    if (g->order_kind == 1)
        return &prices[3];
    uint32_t k = rnd(g, 100);
    return &prices[k < 70 ? 0 : k < 85 ? 1 : 2];
}

/* Luhn check digit over a string of digits. */
static int luhn(const char *digits)
{
    int sum = 0;
    size_t n = strlen(digits);
    for (size_t i = 0; i < n; i++) {
        int d = digits[n - 1 - i] - '0';
        if (i % 2 == 0) {
            d *= 2;
            if (d > 9)
                d -= 9;
        }
        sum += d;
    }
    return (10 - sum % 10) % 10;
}

static json_t *custom_field(const char *key, const char *label, const char *value)
{
    return json_pack("{s:s, s:s, s:s}", "key", key, "label", label, "value", value);
}

int pm_sample_gen_next(pm_sample_gen *g, json_t **out, pm_error *err)
{
    if (g->order_left == 0)
        start_order(g);
    uint64_t n = ++g->index;
    int sec_idx = g->order_of_sections[g->section_pos];
    int section = section_number(sec_idx);
    bool lower = sec_idx < LOWER_SECTIONS;
    const night *nt = &nights[g->night];
    int seat = ++g->seat;
    bool buyer = g->order_left == g->order_size;
    g->order_left--;

    char serial[64], suffix[5], row[12], seat_s[12], sec_s[12], gate[24], tnum[32], digits[24];
    char event_id[64], group_event[64], group_section[32], doors[32], start[32], end[32];
    char expires[32], holder[160], message[96], relevant_text[128], date_compact[16];
    random_code(g, suffix, 4);
    snprintf(serial, sizeof serial, "STA-2027-%06" PRIu64 "-%s", n, suffix);
    if (lower)
        snprintf(row, sizeof row, "%c", lower_rows[g->row]);
    else
        snprintf(row, sizeof row, "%d", g->row + 1);
    snprintf(seat_s, sizeof seat_s, "%d", seat);
    snprintf(sec_s, sizeof sec_s, "%d", section);
    snprintf(gate, sizeof gate, "Entrance %c",
             lower ? 'A' + (section - 101) / 4 : 'J' + (section - 201) / 5);
    snprintf(digits, sizeof digits, "27%02zu%08" PRIu64, g->night + 1, n % 100000000);
    snprintf(tnum, sizeof tnum, "%s%d", digits, luhn(digits));
    snprintf(date_compact, sizeof date_compact, "%.4s%.2s%.2s", nt->date, nt->date + 5,
             nt->date + 8);
    snprintf(event_id, sizeof event_id, "sst27-%s-%s", nt->slug, date_compact);
    snprintf(group_event, sizeof group_event, "evt-sst27-%s-%s", nt->slug, date_compact);
    snprintf(group_section, sizeof group_section, "section-%d", section);
    snprintf(doors, sizeof doors, "%sT16:30:00+01:00", nt->date);
    snprintf(start, sizeof start, "%sT19:30:00+01:00", nt->date);
    snprintf(end, sizeof end, "%sT23:00:00+01:00", nt->date);
    snprintf(expires, sizeof expires, "%sT23:59:00+01:00", nt->date);
    const char *first = first_names[rnd(g, COUNT(first_names))];
    const char *last = buyer || rnd(g, 2) ? g->buyer_last : last_names[rnd(g, COUNT(last_names))];
    snprintf(holder, sizeof holder, "%s %s", first, last);
    snprintf(relevant_text, sizeof relevant_text, "Welcome to %s. Doors open 16:30, %s.",
             nt->venue, gate);
    const ticket_price *price = pick_price(g);
    int64_t pence = lower ? price->lower_pence : price->upper_pence;

    json_t *barcode;
    if (rnd(g, 10) == 0) {
        snprintf(message, sizeof message, "SST27:%s:%d-%s-%d", tnum, section, row, seat);
        barcode = json_pack("{s:s, s:s, s:s}", "format", "QRCODE", "message", message,
                            "alt_text", tnum);
    } else {
        barcode = json_pack("{s:s, s:s, s:s}", "format", "QRCODE", "message", "autogenerate",
                            "alt_text", tnum);
    }
    json_t *locations = json_pack("[{s:f, s:f, s:f, s:s}]", "latitude", nt->lat,
                                  "longitude", nt->lon, "altitude", nt->alt,
                                  "relevant_text", relevant_text);
    json_t *custom = json_pack("[o, o]",
                               custom_field("entrance", "Entrance", gate),
                               custom_field("tier", "Level", lower ? "Lower Tier" : "Upper Tier"));
    if (g->order_kind == 2 && custom)
        json_array_append_new(custom, custom_field("package", "Package",
                                                   "Champions Lounge dinner, 17:00"));
    json_t *rec = json_pack(
        "{s:s, s:s, s:s, s:[s, s],"
        " s:{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s},"
        " s:{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:{s:I, s:s}},"
        " s:o, s:o, s:s, s:s, s:o, s:{s:s, s:s}}",
        "serial_number", serial, "action", "ISSUE", "template_id", "stadium",
        "pass_group_ids", group_event, group_section,
        "event", "event_id", event_id, "name", "Summer Stadium Tour 2027",
        "venue_title", nt->venue, "venue_address", nt->address, "time_zone", "Europe/London",
        "doors_open", doors, "start", start, "end", end,
        "attendee", "holder_name", holder, "seat", seat_s, "row", row, "section", sec_s,
        "gate", gate, "ticket_type", price->type, "ticket_number", tnum,
        "confirmation_code", g->confirmation,
        "face_value", "amount_micros", (json_int_t)(pence * 10000), "currency", "GBP",
        "barcode", barcode, "locations", locations,
        "relevant_date", doors, "expiration_date", expires,
        "custom_fields", custom,
        "metadata", "order_id", g->order_id, "channel", rnd(g, 4) ? "web" : "app");
    if (!rec)
        return pm_error_set(err, PM_ERR_NOMEM, "sample: cannot build record %" PRIu64, n);
    if (g->order_kind != 0) {
        /* VIP and hospitality guests get the lounge beacon. */
        char uuid_text[] = "5A4BCFCE-174E-4BAC-A814-092E77F6B7E5";
        json_t *beacons = json_pack("[{s:s, s:i, s:i, s:s}]", "proximity_uuid", uuid_text,
                                    "major", nt->venue_no, "minor", g->order_kind,
                                    "relevant_text",
                                    g->order_kind == 2 ? "Your hospitality lounge is nearby."
                                                       : "VIP entrance is nearby.");
        if (!beacons || json_object_set_new(rec, "beacons", beacons) != 0) {
            json_decref(rec);
            return pm_error_set(err, PM_ERR_NOMEM, "sample: out of memory");
        }
    }
    *out = rec;
    return 0;
}

/* ---- writers ---- */

static int write_jsonl(FILE *out, pm_sample_gen *g, uint64_t count, pm_error *err)
{
    for (uint64_t i = 0; i < count; i++) {
        json_t *rec;
        if (pm_sample_gen_next(g, &rec, err) != 0)
            return -1;
        /* 15 significant digits prints 51.556 as written, not 51.555999... */
        int rc = json_dumpf(rec, out, JSON_COMPACT | JSON_REAL_PRECISION(15));
        json_decref(rec);
        if (rc != 0 || fputc('\n', out) == EOF)
            return pm_error_set(err, PM_ERR_IO, "sample: write failed: %s", strerror(errno));
    }
    return 0;
}

/* Avro long: zig-zag varint. */
static int put_long(pm_buf *b, int64_t v)
{
    uint64_t n = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
    unsigned char tmp[10];
    size_t len = 0;
    do {
        tmp[len++] = (unsigned char)((n & 0x7f) | (n > 0x7f ? 0x80 : 0));
        n >>= 7;
    } while (n);
    return pm_buf_append(b, tmp, len);
}

static int put_bytes(pm_buf *b, const void *data, size_t len)
{
    return put_long(b, (int64_t)len) || pm_buf_append(b, data, len) ? -1 : 0;
}

/* One container block: record count, byte size, the datums, the sync marker. */
static int flush_block(FILE *out, pm_buf *hdr, pm_buf *block, uint64_t records,
                       const unsigned char sync[16])
{
    pm_buf_reset(hdr);
    if (put_long(hdr, (int64_t)records) || put_long(hdr, (int64_t)block->len))
        return -1;
    if (fwrite(hdr->data, 1, hdr->len, out) != hdr->len ||
        fwrite(block->data, 1, block->len, out) != block->len || fwrite(sync, 1, 16, out) != 16)
        return -1;
    pm_buf_reset(block);
    return 0;
}

/*
 * An Object Container File, codec null, written here rather than with
 * avro_file_writer: that one seeds its sync marker from srand(time(NULL)),
 * which would make the output differ run to run (and reseed libc's rand).
 * Here the sync marker comes from the seed, so the bytes are reproducible.
 * The header carries the .avsc text itself, docs included.
 */
static int write_avro(FILE *out, pm_sample_gen *g, uint64_t count, pm_error *err)
{
    enum { BLOCK_TARGET = 64 * 1024 };
    if (pm_schema_init(err) != 0)
        return -1;
    avro_value_iface_t *iface = avro_generic_class_from_schema(pm_schema_pass_request());
    if (!iface)
        return pm_error_set(err, PM_ERR_INTERNAL, "avro-c: %s", avro_strerror());
    avro_value_t value;
    if (avro_generic_value_new(iface, &value) != 0) {
        avro_value_iface_decref(iface);
        return pm_error_set(err, PM_ERR_INTERNAL, "avro-c: %s", avro_strerror());
    }
    unsigned char sync[16];
    /* Its own stream (any constant), so records do not depend on it. */
    uint64_t st = g->seed ^ 0x4F626A0153594E43ULL;
    for (int i = 0; i < 2; i++) {
        uint64_t r = splitmix64(&st);
        memcpy(sync + 8 * i, &r, 8);
    }
    pm_buf hdr = PM_BUF_INIT, block = PM_BUF_INIT;
    avro_writer_t w = avro_writer_memory(NULL, 0);
    int rc = 0;
    if (!w) {
        rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory");
        goto out;
    }
    const char *schema = pm_schema_pass_request_json;
    if (pm_buf_append(&hdr, "Obj\x01", 4) || put_long(&hdr, 2) ||
        put_bytes(&hdr, "avro.schema", 11) || put_bytes(&hdr, schema, strlen(schema)) ||
        put_bytes(&hdr, "avro.codec", 10) || put_bytes(&hdr, "null", 4) || put_long(&hdr, 0) ||
        pm_buf_append(&hdr, sync, 16)) {
        rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory");
        goto out;
    }
    if (fwrite(hdr.data, 1, hdr.len, out) != hdr.len) {
        rc = pm_error_set(err, PM_ERR_IO, "sample: write failed: %s", strerror(errno));
        goto out;
    }
    uint64_t in_block = 0;
    for (uint64_t i = 0; i < count; i++) {
        json_t *rec;
        size_t size;
        if (pm_sample_gen_next(g, &rec, err) != 0) {
            rc = -1;
            goto out;
        }
        rc = pm_schema_json_to_avro(rec, &value, err);
        json_decref(rec);
        if (rc != 0)
            goto out;
        if (avro_value_sizeof(&value, &size) != 0 || pm_buf_reserve(&block, size) != 0) {
            rc = pm_error_set(err, PM_ERR_INTERNAL, "sample: cannot size a datum: %s",
                              avro_strerror());
            goto out;
        }
        avro_writer_memory_set_dest(w, (const char *)block.data + block.len, (int64_t)size);
        if (avro_value_write(w, &value) != 0) {
            rc = pm_error_set(err, PM_ERR_INTERNAL, "sample: avro-c write failed: %s",
                              avro_strerror());
            goto out;
        }
        block.len += size;
        in_block++;
        if (block.len >= BLOCK_TARGET) {
            if (flush_block(out, &hdr, &block, in_block, sync) != 0) {
                rc = pm_error_set(err, PM_ERR_IO, "sample: write failed: %s", strerror(errno));
                goto out;
            }
            in_block = 0;
        }
    }
    if (in_block && flush_block(out, &hdr, &block, in_block, sync) != 0)
        rc = pm_error_set(err, PM_ERR_IO, "sample: write failed: %s", strerror(errno));
out:
    if (w)
        avro_writer_free(w);
    pm_buf_free(&hdr);
    pm_buf_free(&block);
    avro_value_decref(&value);
    avro_value_iface_decref(iface);
    return rc;
}

int pm_sample_write(FILE *out, uint64_t count, uint64_t seed, const char *format,
                    pm_error *err)
{
    bool avro = format && strcmp(format, "avro") == 0;
    if (!avro && !(format && strcmp(format, "jsonl") == 0))
        return pm_error_set(err, PM_ERR_CONFIG, "sample: format must be jsonl or avro, not '%s'",
                            format ? format : "(none)");
    pm_sample_gen *g = NULL;
    if (pm_sample_gen_create(seed, &g, err) != 0)
        return -1;
    int rc = avro ? write_avro(out, g, count, err) : write_jsonl(out, g, count, err);
    pm_sample_gen_destroy(g);
    if (rc == 0 && (fflush(out) != 0 || ferror(out)))
        rc = pm_error_set(err, PM_ERR_IO, "sample: write failed: %s", strerror(errno));
    return rc;
}
