/*
 * stress_queue - the queue stress test as a plain program, for the
 * ThreadSanitizer build (Criterion cannot start under TSan).
 * Prints "N passed, N failed" and exits non-zero on failure.
 */
#include <stdio.h>

#include "queue_stress.h"

int main(void)
{
    static const struct { int p, c; size_t per, cap; } runs[] = {
        {4, 4, 20000, 64}, {1, 3, 20000, 2}, {3, 1, 20000, 1024}, {2, 2, 50000, 8},
    };
    int passed = 0, failed = 0;
    for (size_t i = 0; i < sizeof runs / sizeof runs[0]; i++) {
        char why[256] = "";
        if (pm_queue_stress(runs[i].p, runs[i].c, runs[i].per, runs[i].cap, why, sizeof why) == 0) {
            passed++;
        } else {
            failed++;
            fprintf(stderr, "stress_queue run %zu: %s\n", i, why);
        }
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
