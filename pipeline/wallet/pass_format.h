/*
 * pass_format.h - small syntax rules of Apple's pass.json shared by the
 * template loader (which refuses a bad template) and verify (which names
 * the rule a finished pass breaks).
 */
#ifndef PM_PASS_FORMAT_H
#define PM_PASS_FORMAT_H

#include <stdbool.h>

/* Wallet's colour syntax "rgb(r, g, b)", each 0..255, spaces optional. */
bool pm_pass_color_valid(const char *s);

#endif
