/*
 * canonical.h - the canonical text of a normalized record.
 *
 * The registry stores each pass's record as this text and hashes it into
 * the pass's content hash, so the text must never change for the same
 * record: it is, byte for byte, what jansson 2.14 writes with
 * json_dumps(value, JSON_COMPACT | JSON_SORT_KEYS).  Registries written
 * before this module existed hold exactly that text, and their passes keep
 * their content hashes.  tests/test_canonical.c and the fuzz targets compare
 * the two on every record they see.
 *
 * Why not jansson's dumper: per record it costs the registry about 150,000
 * instructions (a key array and a qsort per object, a callback per token, a
 * UTF-8 decode per character); this writes the same bytes in 33,000
 * (docs/benchmarks.md, issue 10).
 */
#ifndef PM_RECORD_CANONICAL_H
#define PM_RECORD_CANONICAL_H

#include <jansson.h>

#include "core/buf.h"

/*
 * Append the canonical text of value to out.  omit_if_null, when not NULL,
 * is a NULL-terminated list of member names left out of a top-level object
 * when their value is JSON null (record fields added later, see
 * registry.c).  Returns 0, or -1 when out of memory, when a string is not
 * valid UTF-8 or a real is not finite (where jansson's dump fails too), or
 * when values nest deeper than 2,048 levels (a bound on the recursion; a
 * normalized record nests 3).  On failure out holds a partial text.
 */
int pm_canonical_json(const json_t *value, const char *const *omit_if_null, pm_buf *out);

#endif
