/*
 * pass_format.h - small syntax rules of Apple's pass.json shared by the
 * template loader (which refuses a bad template) and verify (which names
 * the rule a finished pass breaks).
 */
#ifndef PM_PASS_FORMAT_H
#define PM_PASS_FORMAT_H

#include <stdbool.h>
#include <stdint.h>

/* Wallet's colour syntax "rgb(r, g, b)", each 0..255, spaces optional. */
bool pm_pass_color_valid(const char *s);

/*
 * A colour as templates may write it: "rgb(r, g, b)" or "#RRGGBB" (either
 * case).  Wallet on iOS 18 reads hex, older versions only rgb(), so the
 * template loader turns hex into rgb() and passes always carry rgb().
 * The components go to rgb[3]; false when s is neither form.
 */
bool pm_pass_color_parse(const char *s, uint8_t rgb[3]);

#endif
