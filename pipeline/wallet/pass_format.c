#include "wallet/pass_format.h"

#include <string.h>

static bool is_digit(char c) { return c >= '0' && c <= '9'; }

bool pm_pass_color_valid(const char *s)
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
        while (*s == ' ')
            s++;
        if (*s++ != (i < 2 ? ',' : ')'))
            return false;
    }
    return *s == '\0';
}
