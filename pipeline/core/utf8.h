/*
 * utf8.h - UTF-8 as RFC 3629 defines it: shortest form only, no surrogates
 * (U+D800..U+DFFF), nothing above U+10FFFF.  The one decoder every module
 * uses (validation, error texts, templates, the PostgreSQL registry's text
 * checks, the canonical record text), so they all agree on what is valid;
 * it is also what jansson accepts.
 */
#ifndef PM_CORE_UTF8_H
#define PM_CORE_UTF8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * The length (1 to 4) of the character at s[0..left), its code point in *cp
 * when cp is not NULL; 0 when left is 0 or the bytes there are not a whole,
 * valid character.  A NUL byte is a character (U+0000) of length 1.
 */
size_t pm_utf8_next(const unsigned char *s, size_t left, uint32_t *cp);

/* Whether s[0..len) is valid UTF-8 from end to end. */
bool pm_utf8_valid(const unsigned char *s, size_t len);

#endif
