/*
 * What a handle promises across its life, on tracked files the test made:
 *
 *   lifecycle STATE FILE...
 *
 * For each FILE: a write closed without a flush is there after reopening,
 * and in the changes since the ID sealed before it; the paging calls end
 * at the disk's end for any length, refuse an offset past it, and stay
 * defined when their count out-parameters alias each other.
 */
#include "check.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;

#define EXPECT(cond, ...)                                                          \
    do {                                                                           \
        if (!(cond)) {                                                             \
            fprintf(stderr, __VA_ARGS__);                                          \
            fputc('\n', stderr);                                                   \
            failures++;                                                            \
        }                                                                          \
    } while (0)

static void one(const char *state, const char *file) {
    enum { AT = 128 << 10, LEN = 64 << 10 };
    static char data[LEN], back[LEN];
    char id[REFPOINT_ID_MAX];
    refpoint_disk *d = NULL;

    CHECK(refpoint_open(file, state, 0, &d));
    CHECK(refpoint_seal(d, id, sizeof id));
    memset(data, 0x77, sizeof data);
    CHECK(refpoint_write(d, AT, data, sizeof data));
    refpoint_close(d); /* no flush: close must apply it */

    CHECK(refpoint_open(file, state, REFPOINT_OPEN_READ_ONLY, &d));
    CHECK(refpoint_read(d, AT, back, sizeof back));
    EXPECT(memcmp(data, back, sizeof data) == 0, "%s: the write before close is gone", file);
    refpoint_info info;
    CHECK(refpoint_get_info(d, &info));
    EXPECT(info.tracking_enabled == 1 && info.tracking_error == 0,
           "%s: tracking after reopen: enabled %d error %s", file, info.tracking_enabled,
           refpoint_error_name(info.tracking_error));

    refpoint_range r[8];
    size_t n = 0;
    uint64_t processed = 0, size = info.virtual_size;
    CHECK(refpoint_query_changes(d, id, NULL, 0, UINT64_MAX, r, 8, &n, &processed));
    int covered = 0;
    for (size_t i = 0; i < n; i++)
        covered |= r[i].offset <= AT && r[i].offset + r[i].length >= AT + LEN;
    EXPECT(covered, "%s: the changes since the seal miss the write (%zu ranges)", file, n);
    EXPECT(processed == UINT64_MAX, "%s: a page to the end processed %llu", file,
           (unsigned long long)processed);

    /* At the end: nothing more, and the page says it is done. */
    CHECK(refpoint_allocation(d, size, UINT64_MAX - size, r, 8, &n, &processed));
    EXPECT(n == 0 && processed == UINT64_MAX - size, "%s: allocation at the end: %zu, %llu", file,
           n, (unsigned long long)processed);
    EXPECT(refpoint_query_changes(d, id, NULL, size + 1, 1, r, 8, &n, &processed) ==
               REFPOINT_E_OUT_OF_RANGE,
           "%s: an offset past the end", file);
    EXPECT(refpoint_allocation(d, 0, size, r, 0, &n, &processed) == REFPOINT_E_BUFFER_TOO_SMALL,
           "%s: room for no range", file);

    /* Counts that alias: the last written (processed_length) wins. */
    uint64_t both = 0;
    CHECK(refpoint_allocation(d, 0, size, r, 8, (size_t *)&both, &both));
    EXPECT(both == size, "%s: aliased counts read %llu", file, (unsigned long long)both);
    refpoint_close(d);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s STATE FILE...\n", argv[0]);
        return 2;
    }
    for (int i = 2; i < argc; i++)
        one(argv[1], argv[i]);
    printf("files=%d\nfailures=%d\n", argc - 2, failures);
    return failures != 0;
}
