/*
 * Provokes every REFPOINT_E_* code a caller can meet without a fault in
 * the machine, each once, and prints "provoked NAME" for each:
 *
 *   error_codes STATE FIXTURES FROZEN_FILE REMOTE_URL
 *
 * FIXTURES holds the files the test made (see tests/c_programs.rs);
 * REMOTE_URL names a disk on a daemon that wants a token and TLS.
 */
#include "refpoint.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *state, *fixtures;
static int failures;

static void expect(int want, int got, const char *what) {
    if (got == want) {
        printf("provoked %s\n", refpoint_error_name(want));
        if (strlen(refpoint_last_error()) == 0) {
            fprintf(stderr, "%s: %s came without a message\n", what, refpoint_error_name(got));
            failures++;
        }
    } else {
        fprintf(stderr, "%s: wanted %s, got %s (%d): %s\n", what, refpoint_error_name(want),
                refpoint_error_name(got), got, refpoint_last_error());
        failures++;
    }
}

static char *fixture(const char *name) {
    static char path[4096];
    snprintf(path, sizeof path, "%s/%s", fixtures, name);
    return path;
}

static refpoint_disk *must_open(const char *path, uint32_t flags) {
    refpoint_disk *d = NULL;
    int rc = refpoint_open(path, state, flags, &d);
    if (rc != REFPOINT_OK) {
        fprintf(stderr, "opening %s: %s\n", path, refpoint_last_error());
        exit(1);
    }
    return d;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s STATE FIXTURES FROZEN_FILE REMOTE_URL\n", argv[0]);
        return 2;
    }
    state = argv[1];
    fixtures = argv[2];
    const char *frozen = argv[3], *remote = argv[4];
    refpoint_disk *d = NULL;
    refpoint_range r[4];
    size_t n = 0;
    uint64_t processed = 0, size = 0;
    char id[REFPOINT_ID_MAX], id2[REFPOINT_ID_MAX];

    expect(REFPOINT_E_INVALID, refpoint_open(NULL, state, 0, &d), "open(NULL)");
    expect(REFPOINT_E_NOT_FOUND, refpoint_open(fixture("no-such.vhdx"), state, 0, &d), "missing file");
    expect(REFPOINT_E_IO, refpoint_open(fixture("a-directory"), state, 0, &d), "a directory");
    expect(REFPOINT_E_CORRUPT, refpoint_open(fixture("corrupt.vhdx"), state, 0, &d), "corrupt VHDX");
    expect(REFPOINT_E_FROZEN, refpoint_open(frozen, state, 0, &d), "frozen file");

    refpoint_disk *plain = must_open(fixture("plain.raw"), 0);
    expect(REFPOINT_E_BUSY, refpoint_open(fixture("plain.raw"), state, 0, &d), "second writer");
    if (refpoint_virtual_size(plain, &size) != REFPOINT_OK) return 1;
    char byte = 0;
    expect(REFPOINT_E_OUT_OF_RANGE, refpoint_read(plain, size, &byte, 1), "read past the end");
    expect(REFPOINT_E_UNSUPPORTED, refpoint_checkpoint_create(plain, REFPOINT_CHECKPOINT_RECOVERY, NULL),
           "checkpoint of a plain file");
    refpoint_close(plain);
    refpoint_disk *off = must_open(fixture("disabled.raw"), REFPOINT_OPEN_READ_ONLY);
    expect(REFPOINT_E_TRACKING_DISABLED,
           refpoint_query_changes(off, "rct:00000000-0000-0000-0000-000000000000:00000001", NULL, 0,
                                  size, r, 4, &n, &processed),
           "changes of a disk whose tracking was disabled");
    refpoint_close(off);

    refpoint_disk *ro = must_open(fixture("plain.raw"), REFPOINT_OPEN_READ_ONLY);
    expect(REFPOINT_E_READ_ONLY, refpoint_write(ro, 0, "x", 1), "write to a read-only handle");
    refpoint_close(ro);

    refpoint_disk *t = must_open(fixture("tracked.raw"), 0);
    expect(REFPOINT_E_BUFFER_TOO_SMALL, refpoint_seal(t, id, 8), "seal into 8 bytes");
    expect(REFPOINT_E_MALFORMED_ID,
           refpoint_query_changes(t, "garbage", NULL, 0, size, r, 4, &n, &processed), "malformed ID");
    expect(REFPOINT_E_UNKNOWN_ID,
           refpoint_query_changes(t, "rct:00000000-0000-0000-0000-000000000000:00000001", NULL, 0,
                                  size, r, 4, &n, &processed),
           "an ID of another disk");
    if (refpoint_seal(t, id, sizeof id) != REFPOINT_OK || refpoint_seal(t, id2, sizeof id2) != REFPOINT_OK ||
        refpoint_release(t, id) != REFPOINT_OK) {
        fprintf(stderr, "seal/release: %s\n", refpoint_last_error());
        return 1;
    }
    expect(REFPOINT_E_RELEASED_ID,
           refpoint_query_changes(t, id, NULL, 0, size, r, 4, &n, &processed), "a released ID");
    refpoint_close(t);

    const char *broken[][2] = {
        {"missing-rct.raw", "tracking_file_missing"},
        {"corrupt-rct.raw", "tracking_file_corrupt"},
        {"modified.raw", "modified_while_untracked"},
    };
    int broken_codes[] = {REFPOINT_E_TRACKING_FILE_MISSING, REFPOINT_E_TRACKING_FILE_CORRUPT,
                          REFPOINT_E_MODIFIED_WHILE_UNTRACKED};
    for (int i = 0; i < 3; i++) {
        refpoint_disk *b = must_open(fixture(broken[i][0]), REFPOINT_OPEN_READ_ONLY);
        int rc = refpoint_query_changes(b, "rct:00000000-0000-0000-0000-000000000000:00000001", NULL,
                                        0, size, r, 4, &n, &processed);
        expect(broken_codes[i], rc, broken[i][1]);
        if (!refpoint_is_tracking_error(rc)) {
            fprintf(stderr, "%s is not a tracking error\n", broken[i][1]);
            failures++;
        }
        /* The status agrees: a missing file reads as tracking off (a raw
         * file keeps no other mark of it), the others as broken. */
        refpoint_info info;
        int want = i == 0 ? 0 : broken_codes[i];
        if (refpoint_get_info(b, &info) != REFPOINT_OK || info.tracking_error != want ||
            (i == 0 && info.tracking_enabled)) {
            fprintf(stderr, "%s: refpoint_info.tracking_error is %d\n", broken[i][0], info.tracking_error);
            failures++;
        }
        refpoint_close(b);
    }

    /* A full medium: a raw file on a tiny file system (when the test made one). */
    FILE *f = fopen(fixture("full/disk.raw"), "r");
    if (f) {
        fclose(f);
        refpoint_disk *full = must_open(fixture("full/disk.raw"), 0);
        static char chunk[1 << 20];
        memset(chunk, 0x5a, sizeof chunk);
        int rc = REFPOINT_OK;
        for (uint64_t at = 0; rc == REFPOINT_OK && at < (64u << 20); at += sizeof chunk) {
            rc = refpoint_write(full, at, chunk, sizeof chunk);
            if (rc == REFPOINT_OK) rc = refpoint_flush(full);
        }
        expect(REFPOINT_E_NO_SPACE, rc, "a full file system");
        refpoint_close(full);
    }

    refpoint_config_remote("not-the-token", NULL, NULL, NULL);
    expect(REFPOINT_E_CONNECTION,
           refpoint_open("refpoint+https://127.0.0.1:1/vm1/disk0", state, 0, &d), "nobody listening");
    expect(REFPOINT_E_AUTH, refpoint_open(remote, state, 0, &d), "a wrong token");

    /* vm3's disk is untracked: its checkpoint holds no RCT ID, which is a
     * tracking error (take a full backup), not a missing thing. */
    refpoint_disk *vm3 = must_open("vm3/disk0", REFPOINT_OPEN_READ_ONLY);
    int rc3 = refpoint_checkpoint_rct_id(vm3, 1, id, sizeof id);
    if (rc3 != REFPOINT_E_TRACKING_DISABLED) {
        fprintf(stderr, "an untracked checkpoint's ID: %s\n", refpoint_error_name(rc3));
        failures++;
    }
    refpoint_close(vm3);

    if (d != NULL) {
        fprintf(stderr, "a failed open left a handle\n");
        failures++;
    }
    printf("failures=%d\n", failures);
    return failures != 0;
}
