/* utf8.c - the RFC 3629 decoder (see utf8.h). */
#include "core/utf8.h"

size_t pm_utf8_next(const unsigned char *s, size_t left, uint32_t *cp)
{
    if (left == 0)
        return 0;
    unsigned char c = s[0];
    if (c < 0x80) {
        if (cp)
            *cp = c;
        return 1;
    }
    /* The second byte's range carries the rules: E0 and F0 exclude the
     * overlong forms, ED the surrogates, F4 what lies above U+10FFFF. */
    size_t n;
    unsigned char lo = 0x80, hi = 0xBF;
    uint32_t v;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
        v = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        v = c & 0x0F;
        lo = c == 0xE0 ? 0xA0 : 0x80;
        hi = c == 0xED ? 0x9F : 0xBF;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        v = c & 0x07;
        lo = c == 0xF0 ? 0x90 : 0x80;
        hi = c == 0xF4 ? 0x8F : 0xBF;
    } else {
        return 0; /* a continuation byte, C0/C1 (always overlong) or F5..FF */
    }
    if (left < n)
        return 0;
    for (size_t k = 1; k < n; k++, lo = 0x80, hi = 0xBF) {
        if (s[k] < lo || s[k] > hi)
            return 0;
        v = (v << 6) | (s[k] & 0x3F);
    }
    if (cp)
        *cp = v;
    return n;
}

bool pm_utf8_valid(const unsigned char *s, size_t len)
{
    for (size_t i = 0; i < len;) {
        size_t n = pm_utf8_next(s + i, len - i, NULL);
        if (n == 0)
            return false;
        i += n;
    }
    return true;
}
