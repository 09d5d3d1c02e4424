/* CHECK(call): a librefpoint call that must succeed; on failure, where,
 * the call, the library's message and its code name, then exit(1). */
#ifndef REFPOINT_TEST_CHECK_H
#define REFPOINT_TEST_CHECK_H

#include "refpoint.h"

#include <stdio.h>
#include <stdlib.h>

#define CHECK(call)                                                                \
    do {                                                                           \
        int rc_ = (call);                                                          \
        if (rc_ != REFPOINT_OK) {                                                  \
            fprintf(stderr, "%s:%d: %s: %s (%s)\n", __FILE__, __LINE__, #call,     \
                    refpoint_last_error(), refpoint_error_name(rc_));              \
            exit(1);                                                               \
        }                                                                          \
    } while (0)

#endif
