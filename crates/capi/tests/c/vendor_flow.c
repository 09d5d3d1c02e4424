/*
 * A backup vendor's flow through librefpoint, one phase per run:
 *
 *   vendor_flow full    STATE DISK OUT   full backup of DISK into OUT (raw)
 *   vendor_flow incr    STATE DISK OUT   apply what changed since the last
 *                                        reference point onto OUT
 *   vendor_flow threads STATE DISK       several threads on one handle and
 *                                        on their own handles at once
 *
 * DISK is MACHINE/DISK or refpoint+https://HOST:PORT/MACHINE/DISK. Each
 * phase prints "key=value" lines the test checks.
 */
#define _GNU_SOURCE
#include "check.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>


static const char *state;

static refpoint_disk *open_disk(const char *name, uint32_t flags) {
    refpoint_disk *d = NULL;
    CHECK(refpoint_open(name, state, flags, &d));
    return d;
}

/* Copies [offset, offset+length) of `from` into `out` at the same offset. */
static void copy_range(refpoint_disk *from, int out, uint64_t offset, uint64_t length,
                       uint64_t *bytes) {
    static char buf[1 << 20];
    while (length > 0) {
        size_t n = length < sizeof buf ? (size_t)length : sizeof buf;
        CHECK(refpoint_read(from, offset, buf, n));
        if (pwrite(out, buf, n, (off_t)offset) != (ssize_t)n) {
            perror("pwrite");
            exit(1);
        }
        offset += n;
        length -= n;
        *bytes += n;
    }
}

/* A write to the live disk while the checkpoint's view is open: the view
 * must not see it (the test's model keeps the checkpoint's content), and
 * the checkpoint cannot be merged away while the view is open. */
#define POKE_AT (5u << 20)
#define POKE_LEN (64u << 10)
static void poke_while_viewing(refpoint_disk *live, uint64_t cp) {
    static char junk[POKE_LEN];
    memset(junk, 0xee, sizeof junk);
    CHECK(refpoint_write(live, POKE_AT, junk, sizeof junk));
    CHECK(refpoint_flush(live));
    int rc = refpoint_checkpoint_convert(live, cp, NULL);
    if (rc != REFPOINT_E_BUSY) {
        fprintf(stderr, "converting under an open view gave %s\n", refpoint_error_name(rc));
        exit(1);
    }
}

/* `MACHINE/DISK@checkpoint-N` of the same disk (local or remote name). */
static char *view_of(const char *disk, uint64_t checkpoint) {
    char *v = malloc(strlen(disk) + 32);
    sprintf(v, "%s@checkpoint-%llu", disk, (unsigned long long)checkpoint);
    return v;
}

static int full(const char *disk, const char *out_path) {
    refpoint_disk *d = open_disk(disk, 0);
    refpoint_info info;
    CHECK(refpoint_get_info(d, &info));
    if (!info.tracking_enabled)
        CHECK(refpoint_tracking_enable(d, 0));
    uint64_t cp = 0;
    CHECK(refpoint_checkpoint_create(d, REFPOINT_CHECKPOINT_RECOVERY, &cp));

    char *name = view_of(disk, cp);
    refpoint_disk *view = open_disk(name, REFPOINT_OPEN_READ_ONLY);
    poke_while_viewing(d, cp);
    uint64_t size = 0;
    CHECK(refpoint_virtual_size(view, &size));
    int out = open(out_path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (out < 0 || ftruncate(out, (off_t)size) != 0) {
        perror(out_path);
        return 1;
    }
    /* The allocation map, a few ranges per call: holes are skipped. */
    refpoint_range ranges[2];
    uint64_t offset = 0, bytes = 0, pages = 0;
    while (offset < size) {
        size_t n = 0;
        uint64_t processed = 0;
        CHECK(refpoint_allocation(view, offset, size - offset, ranges, 2, &n, &processed));
        for (size_t i = 0; i < n; i++)
            copy_range(view, out, ranges[i].offset, ranges[i].length, &bytes);
        if (processed == 0) {
            fprintf(stderr, "allocation map made no progress at %llu\n",
                    (unsigned long long)offset);
            return 1;
        }
        offset += processed;
        pages++;
    }
    close(out);
    refpoint_close(view);
    free(name);

    uint64_t rp = 0;
    CHECK(refpoint_checkpoint_convert(d, cp, &rp));
    CHECK(refpoint_flush(d));
    refpoint_close(d);
    printf("size=%llu\nbytes=%llu\npages=%llu\nreference_point=%llu\n",
           (unsigned long long)size, (unsigned long long)bytes,
           (unsigned long long)pages, (unsigned long long)rp);
    return 0;
}

static int incr(const char *disk, const char *out_path) {
    refpoint_disk *d = open_disk(disk, 0);
    uint64_t rps[64];
    size_t n_rps = 0;
    CHECK(refpoint_reference_points(d, rps, 64, &n_rps));
    if (n_rps == 0) {
        fprintf(stderr, "no reference point: run the full phase first\n");
        return 1;
    }
    char since[REFPOINT_ID_MAX], until[REFPOINT_ID_MAX];
    CHECK(refpoint_reference_point_rct_id(d, rps[n_rps - 1], since, sizeof since));
    uint64_t cp = 0;
    CHECK(refpoint_checkpoint_create(d, REFPOINT_CHECKPOINT_RECOVERY, &cp));
    CHECK(refpoint_checkpoint_rct_id(d, cp, until, sizeof until));

    char *name = view_of(disk, cp);
    refpoint_disk *view = open_disk(name, REFPOINT_OPEN_READ_ONLY);
    poke_while_viewing(d, cp);
    uint64_t size = 0;
    CHECK(refpoint_virtual_size(d, &size));
    int out = open(out_path, O_RDWR);
    if (out < 0) {
        perror(out_path);
        return 1;
    }
    /* One range per call: QueryChangesVirtualDisk-style paging. */
    refpoint_range r[1];
    uint64_t offset = 0, left = UINT64_MAX, bytes = 0, pages = 0, ranges = 0;
    while (left > 0) { /* "to the end", done when the page covers what is left */
        size_t n = 0;
        uint64_t processed = 0;
        CHECK(refpoint_query_changes(d, since, until, offset, left, r, 1, &n, &processed));
        if (n == 1) {
            copy_range(view, out, r[0].offset, r[0].length, &bytes);
            ranges++;
        }
        if (processed == 0 || processed > left) {
            fprintf(stderr, "changes page at %llu processed %llu\n", (unsigned long long)offset,
                    (unsigned long long)processed);
            return 1;
        }
        offset += processed;
        left -= processed;
        pages++;
    }
    close(out);
    refpoint_close(view);
    free(name);
    uint64_t rp = 0;
    CHECK(refpoint_checkpoint_convert(d, cp, &rp));
    refpoint_close(d);
    printf("bytes=%llu\npages=%llu\nranges=%llu\nreference_point=%llu\n",
           (unsigned long long)bytes, (unsigned long long)pages,
           (unsigned long long)ranges, (unsigned long long)rp);
    return 0;
}

/* --- threads ------------------------------------------------------------ */

#define THREADS 4
#define REGION (1 << 20)

struct job {
    refpoint_disk *shared;
    const char *disk;
    int index;
    int failed;
};

static void *worker(void *arg) {
    struct job *j = arg;
    char *w = malloc(REGION), *r = malloc(REGION);
    refpoint_disk *own = NULL;
    if (refpoint_open(j->disk, state, 0, &own) != REFPOINT_OK) {
        fprintf(stderr, "thread %d: open: %s\n", j->index, refpoint_last_error());
        j->failed = 1;
        goto done;
    }
    for (int round = 0; round < 8; round++) {
        /* Even rounds on the shared handle, odd ones on this thread's. */
        refpoint_disk *h = round % 2 ? own : j->shared;
        uint64_t at = (uint64_t)(j->index * 2 + round % 2) * REGION;
        memset(w, 'A' + j->index * 8 + round, REGION);
        if (refpoint_write(h, at, w, REGION) != REFPOINT_OK ||
            refpoint_read(h, at, r, REGION) != REFPOINT_OK) {
            fprintf(stderr, "thread %d: %s\n", j->index, refpoint_last_error());
            j->failed = 1;
            break;
        }
        if (memcmp(w, r, REGION) != 0) {
            fprintf(stderr, "thread %d round %d: read back other bytes\n", j->index, round);
            j->failed = 1;
            break;
        }
    }
    if (refpoint_flush(own) != REFPOINT_OK)
        j->failed = 1;
    refpoint_close(own);
done:
    free(w);
    free(r);
    return NULL;
}

static int threads(const char *disk) {
    refpoint_disk *shared = open_disk(disk, 0);
    pthread_t t[THREADS];
    struct job jobs[THREADS];
    for (int i = 0; i < THREADS; i++) {
        jobs[i] = (struct job){shared, disk, i, 0};
        pthread_create(&t[i], NULL, worker, &jobs[i]);
    }
    int failed = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        failed |= jobs[i].failed;
    }
    CHECK(refpoint_flush(shared));
    refpoint_close(shared);
    printf("threads=%d\nfailed=%d\n", THREADS, failed);
    return failed;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s full|incr|threads STATE DISK [OUT]\n", argv[0]);
        return 2;
    }
    if (strcmp(refpoint_version(), "1.0.0") != 0 || REFPOINT_VERSION_MAJOR != 1) {
        fprintf(stderr, "unexpected library version %s\n", refpoint_version());
        return 1;
    }
    state = argv[2];
    if (strcmp(argv[1], "full") == 0 && argc == 5)
        return full(argv[3], argv[4]);
    if (strcmp(argv[1], "incr") == 0 && argc == 5)
        return incr(argv[3], argv[4]);
    if (strcmp(argv[1], "threads") == 0)
        return threads(argv[3]);
    fprintf(stderr, "unknown phase %s\n", argv[1]);
    return 2;
}
