/*
 * replay.c - main() for a fuzz target without libFuzzer: runs every file
 * named (or inside every folder named) once through LLVMFuzzerTestOneInput.
 * The corpus ctests (fuzz_*_corpus) use it; a crash or broken contract
 * aborts with the file's name printed first.
 */
#include "fuzz.h"

#include <dirent.h>
#include <string.h>
#include <sys/stat.h>

static int cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void run_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    FUZZ_CHECK(f, "cannot open %s", path);
    size_t cap = 1 << 16, len = 0;
    uint8_t *buf = malloc(cap);
    FUZZ_CHECK(buf, "out of memory");
    size_t got;
    while ((got = fread(buf + len, 1, cap - len, f)) > 0) {
        len += got;
        if (len == cap) {
            cap *= 2;
            buf = realloc(buf, cap);
            FUZZ_CHECK(buf, "out of memory");
        }
    }
    fclose(f);
    fprintf(stderr, "replay: %s (%zu bytes)\n", path, len);
    /* An exact-size copy, so ASan sees a read past the input's end. */
    uint8_t *exact = malloc(len ? len : 1);
    FUZZ_CHECK(exact, "out of memory");
    memcpy(exact, buf, len);
    free(buf);
    LLVMFuzzerTestOneInput(exact, len);
    free(exact);
    (*n)++;
}

static void run_path(const char *path, size_t *n)
{
    struct stat st;
    FUZZ_CHECK(stat(path, &st) == 0, "cannot stat %s", path);
    if (!S_ISDIR(st.st_mode)) {
        run_file(path, n);
        return;
    }
    DIR *d = opendir(path);
    FUZZ_CHECK(d, "cannot open folder %s", path);
    char **names = NULL;
    size_t len = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        names = realloc(names, (len + 1) * sizeof *names);
        FUZZ_CHECK(names, "out of memory");
        size_t need = strlen(path) + strlen(de->d_name) + 2;
        names[len] = malloc(need);
        FUZZ_CHECK(names[len], "out of memory");
        snprintf(names[len], need, "%s/%s", path, de->d_name);
        len++;
    }
    closedir(d);
    qsort(names, len, sizeof *names, cmp);
    for (size_t i = 0; i < len; i++) {
        run_file(names[i], n);
        free(names[i]);
    }
    free(names);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s FILE_OR_FOLDER...\n", argv[0]);
        return 2;
    }
    LLVMFuzzerInitialize(&argc, &argv);
    size_t n = 0;
    for (int i = 1; i < argc; i++)
        run_path(argv[i], &n);
    printf("%zu inputs, no crash, no broken contract\n", n);
    return n ? 0 : 1;
}
