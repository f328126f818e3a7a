#include "wallet/pass_format.h"

#include <string.h>

static bool is_digit(char c) { return c >= '0' && c <= '9'; }

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* "rgb(r, g, b)" into rgb[3]. */
static bool parse_rgb(const char *s, uint8_t rgb[3])
{
    if (!s || strncmp(s, "rgb(", 4) != 0)
        return false;
    s += 4;
    for (int i = 0; i < 3; i++) {
        while (*s == ' ')
            s++;
        int v = 0, digits = 0;
        while (is_digit(*s) && digits < 4) {
            v = v * 10 + (*s++ - '0');
            digits++;
        }
        if (digits == 0 || digits > 3 || v > 255)
            return false;
        rgb[i] = (uint8_t)v;
        while (*s == ' ')
            s++;
        if (*s++ != (i < 2 ? ',' : ')'))
            return false;
    }
    return *s == '\0';
}

bool pm_pass_color_valid(const char *s)
{
    uint8_t rgb[3];
    return parse_rgb(s, rgb);
}

bool pm_pass_color_parse(const char *s, uint8_t rgb[3])
{
    if (s && s[0] == '#' && strlen(s) == 7) {
        for (int i = 0; i < 3; i++) {
            int hi = hex_digit(s[1 + 2 * i]), lo = hex_digit(s[2 + 2 * i]);
            if (hi < 0 || lo < 0)
                return false;
            rgb[i] = (uint8_t)(hi << 4 | lo);
        }
        return true;
    }
    return parse_rgb(s, rgb);
}
