
/*
 * fuzz_util.h: what the libFuzzer targets share.
 *
 * Owns the CHECK of a property (a failure names the target and the line,
 * then aborts, which libFuzzer reports as a crash) and the exact-size
 * copies the targets parse from: fuzz_dup gives a heap copy of exactly
 * the input's bytes, so that ASan sees a parser reading one byte past
 * the end, and fuzz_exact runs a target's checks on such a copy of
 * libFuzzer's input.  A target defines FUZZ_TARGET, its name, before
 * including this.
 */


#ifndef _FUZZ_UTIL_H_INCLUDED_
#define _FUZZ_UTIL_H_INCLUDED_


#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


#ifndef FUZZ_TARGET
#error "define FUZZ_TARGET (the target's name) before fuzz_util.h"
#endif


#define CHECK(cond)                                                           \
    do {                                                                      \
        if (!(cond)) {                                                        \
            fprintf(stderr, FUZZ_TARGET ": check failed: %s (line %d)\n",     \
                    #cond, __LINE__);                                         \
            abort();                                                          \
        }                                                                     \
    } while (0)


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


/* n bytes in a buffer of exactly n bytes (1 when n is 0); NULL when out
 * of memory */

static inline uint8_t *
fuzz_dup(const uint8_t *p, size_t n)
{
    uint8_t  *c;

    c = malloc(n ? n : 1);

    if (c != NULL && n) {
        memcpy(c, p, n);
    }

    return c;
}


/* check() on an exact-size copy of the input: a read past the end is a
 * heap overflow; the result is LLVMFuzzerTestOneInput's */

static inline int
fuzz_exact(const uint8_t *data, size_t size,
    void (*check)(const uint8_t *in, size_t len))
{
    uint8_t  *in;

    in = fuzz_dup(data, size);
    if (in == NULL) {
        return 0;
    }

    check(in, size);

    free(in);

    return 0;
}


#endif /* _FUZZ_UTIL_H_INCLUDED_ */
