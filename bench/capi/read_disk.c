/*
 * Reads a whole disk through librefpoint, as a backup vendor's full
 * backup does, and checksums what it read:
 *
 *   read_disk PATH READ_SIZE STRIPE THREADS [nosum]
 *
 * The allocation map (refpoint_allocation) gives the ranges that may hold
 * data; they are cut into stripes of STRIPE bytes, which THREADS threads
 * take in order, each through its own read-only handle (calls on one
 * handle are serialized), reading a stripe front to back in READ_SIZE
 * reads. Within a stripe a handle reads sequentially, so the kernel's
 * readahead runs ahead of it. Prints "key=value" lines:
 *
 *   bytes       bytes read
 *   ranges      allocated ranges in the map
 *   checksum    sum over every 8-byte little-endian word w at offset o of
 *               w * (2 * (o / 65536) + 1), mod 2^64: position dependent,
 *               independent of READ_SIZE, STRIPE and the order of reads
 *   seconds     from before the first open to after the last close
 *   read_seconds, sum_seconds   time in refpoint_read and in the checksum,
 *               summed over the threads
 *
 * "nosum" skips the checksum (to see what it costs).
 */
#define _GNU_SOURCE
#include "refpoint.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CHECK(call)                                                        \
    do {                                                                   \
        int rc_ = (call);                                                  \
        if (rc_ != REFPOINT_OK) {                                          \
            fprintf(stderr, "%s:%d: %s: %s (%s)\n", __FILE__, __LINE__,    \
                    #call, refpoint_last_error(), refpoint_error_name(rc_)); \
            exit(1);                                                       \
        }                                                                  \
    } while (0)

#define GRANULE 65536u
#define MAX_THREADS 16

static const char *path;
static size_t read_size, stripe;
static int summing = 1;

/* The stripes to read: the allocated ranges cut into pieces of `stripe`. */
static refpoint_range *pieces;
static size_t n_pieces;
static size_t next_piece; /* taken with __atomic_fetch_add */

struct worker {
    pthread_t thread;
    uint64_t bytes, checksum;
    double read_seconds, sum_seconds;
};

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* The checksum of `len` bytes (a multiple of 8) read at disk offset `offset`. */
static uint64_t checksum(const unsigned char *buf, uint64_t offset, size_t len) {
    uint64_t total = 0;
    while (len > 0) {
        /* Up to the next granule boundary: one weight for all its words. */
        size_t n = GRANULE - (size_t)(offset % GRANULE);
        if (n > len)
            n = len;
        uint64_t s = 0;
        const uint64_t *w = (const uint64_t *)buf;
        for (size_t i = 0; i < n / 8; i++)
            s += w[i];
        total += s * (2 * (offset / GRANULE) + 1);
        buf += n;
        offset += n;
        len -= n;
    }
    return total;
}

static void *work(void *arg) {
    struct worker *me = arg;
    refpoint_disk *d = NULL;
    CHECK(refpoint_open(path, NULL, REFPOINT_OPEN_READ_ONLY, &d));
    unsigned char *buf = NULL;
    if (posix_memalign((void **)&buf, 4096, read_size) != 0) {
        fprintf(stderr, "cannot allocate %zu bytes\n", read_size);
        exit(1);
    }
    for (;;) {
        size_t i = __atomic_fetch_add(&next_piece, 1, __ATOMIC_RELAXED);
        if (i >= n_pieces)
            break;
        refpoint_range p = pieces[i];
        for (uint64_t o = 0; o < p.length; o += read_size) {
            uint64_t left = p.length - o;
            size_t n = left < read_size ? (size_t)left : read_size;
            double t0 = now();
            CHECK(refpoint_read(d, p.offset + o, buf, n));
            double t1 = now();
            me->read_seconds += t1 - t0;
            if (summing) {
                me->checksum += checksum(buf, p.offset + o, n);
                me->sum_seconds += now() - t1;
            }
            me->bytes += n;
        }
    }
    free(buf);
    refpoint_close(d);
    return NULL;
}

/* Fills `pieces` with the allocated ranges of the disk, cut into stripes;
 * returns how many ranges the map has. */
static size_t map(uint64_t size) {
    refpoint_disk *d = NULL;
    CHECK(refpoint_open(path, NULL, REFPOINT_OPEN_READ_ONLY, &d));
    refpoint_range ranges[256];
    size_t cap = 1024, n_ranges = 0;
    pieces = malloc(cap * sizeof *pieces);
    uint64_t offset = 0;
    while (offset < size) {
        size_t n = 0;
        uint64_t processed = 0;
        CHECK(refpoint_allocation(d, offset, size - offset, ranges, 256, &n, &processed));
        for (size_t i = 0; i < n; i++) {
            n_ranges++;
            for (uint64_t o = 0; o < ranges[i].length; o += stripe) {
                if (n_pieces == cap) {
                    cap *= 2;
                    pieces = realloc(pieces, cap * sizeof *pieces);
                }
                uint64_t left = ranges[i].length - o;
                pieces[n_pieces].offset = ranges[i].offset + o;
                pieces[n_pieces].length = left < stripe ? left : stripe;
                n_pieces++;
            }
        }
        if (processed == 0) {
            fprintf(stderr, "allocation map made no progress at %llu\n",
                    (unsigned long long)offset);
            exit(1);
        }
        offset += processed;
    }
    refpoint_close(d);
    return n_ranges;
}

int main(int argc, char **argv) {
    if (argc < 5 || argc > 6 || (argc == 6 && strcmp(argv[5], "nosum") != 0)) {
        fprintf(stderr, "usage: %s PATH READ_SIZE STRIPE THREADS [nosum]\n", argv[0]);
        return 2;
    }
    path = argv[1];
    read_size = strtoull(argv[2], NULL, 10);
    stripe = strtoull(argv[3], NULL, 10);
    int threads = atoi(argv[4]);
    summing = argc < 6;
    if (read_size == 0 || read_size % GRANULE != 0 || stripe % read_size != 0 ||
        threads < 1 || threads > MAX_THREADS) {
        fprintf(stderr, "READ_SIZE must be a multiple of 64 KiB, STRIPE a multiple of "
                        "READ_SIZE, THREADS 1 to %d\n",
                MAX_THREADS);
        return 2;
    }

    double t0 = now();
    refpoint_disk *d = NULL;
    CHECK(refpoint_open(path, NULL, REFPOINT_OPEN_READ_ONLY, &d));
    uint64_t size = 0;
    CHECK(refpoint_virtual_size(d, &size));
    refpoint_close(d);
    size_t n_ranges = map(size);

    struct worker w[MAX_THREADS];
    memset(w, 0, sizeof w);
    for (int i = 0; i < threads; i++)
        if (pthread_create(&w[i].thread, NULL, work, &w[i]) != 0) {
            perror("pthread_create");
            return 1;
        }
    uint64_t bytes = 0, sum = 0;
    double read_seconds = 0, sum_seconds = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(w[i].thread, NULL);
        bytes += w[i].bytes;
        sum += w[i].checksum;
        read_seconds += w[i].read_seconds;
        sum_seconds += w[i].sum_seconds;
    }
    double t1 = now();
    printf("size=%llu\nbytes=%llu\nranges=%zu\nchecksum=%llu\nseconds=%.6f\n"
           "read_seconds=%.6f\nsum_seconds=%.6f\n",
           (unsigned long long)size, (unsigned long long)bytes, n_ranges,
           (unsigned long long)sum, t1 - t0, read_seconds, sum_seconds);
    free(pieces);
    return 0;
}
