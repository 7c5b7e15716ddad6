
/*
 * test_main.c: the TAP harness of the codec unit tests.
 *
 * Owns the output format only: "ok N - ...", "not ok N - ..." with "# "
 * diagnostics, the plan "1..N" once every test has run (TAP allows the
 * plan last, and a crash then shows up as a missing plan), and a final
 * "N passed, N failed" line.  The exit status is non-zero on failure.
 */


#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"


static unsigned  tap_count;
static unsigned  tap_failed;


int
tap_ok(int cond, const char *fmt, ...)
{
    va_list  args;

    tap_count++;

    if (!cond) {
        tap_failed++;
    }

    printf("%s %u - ", cond ? "ok" : "not ok", tap_count);

    va_start(args, fmt);
    vprintf(fmt, args);
    va_end(args);

    printf("\n");
    fflush(stdout);

    return cond;
}


void
tap_diag(const char *fmt, ...)
{
    va_list  args;

    printf("# ");

    va_start(args, fmt);
    vprintf(fmt, args);
    va_end(args);

    printf("\n");
    fflush(stdout);
}


void
tap_hex(const char *label, const uint8_t *p, size_t n)
{
    size_t  i;

    printf("#   %s (%zu):", label, n);

    for (i = 0; i < n && i < 96; i++) {
        printf(" %02x", p[i]);
    }

    printf("%s\n", n > 96 ? " ..." : "");
}


/* ok when got equals want byte for byte; dumps both otherwise */

int
tap_bytes(const uint8_t *got, size_t glen, const uint8_t *want, size_t wlen,
    const char *fmt, ...)
{
    int      same;
    va_list  args;
    char     name[256];

    va_start(args, fmt);
    vsnprintf(name, sizeof(name), fmt, args);
    va_end(args);

    same = (glen == wlen && (wlen == 0 || memcmp(got, want, wlen) == 0));

    if (!tap_ok(same, "%s", name)) {
        tap_hex("got ", got, glen);
        tap_hex("want", want, wlen);
    }

    return same;
}


/* ok when a codec gave the result wanted; names the one it gave otherwise */

int
tap_rc(im_rc_t got, im_rc_t want, const char *fmt, ...)
{
    char     name[160];
    va_list  args;

    va_start(args, fmt);
    vsnprintf(name, sizeof(name), fmt, args);
    va_end(args);

    if (!tap_ok(got == want, "%s: %s", name, im_rc_str(want))) {
        tap_diag("got %s", im_rc_str(got));
        return 0;
    }

    return 1;
}


/*
 * A copy of the bytes in a buffer of exactly their size, so that the
 * sanitizer build catches a parser reading one byte too far.
 */

uint8_t *
tap_dup(const uint8_t *p, size_t n)
{
    uint8_t  *c;

    c = malloc(n ? n : 1);
    if (c == NULL) {
        printf("Bail out! out of memory\n");
        exit(2);
    }

    if (n) {
        memcpy(c, p, n);
    }

    return c;
}


int
main(void)
{
    test_proto();
    test_utf16();
    test_payload();
    test_wsframe();
    test_traffic();
    test_merge();
    test_slot();
    test_vectors();

    printf("1..%u\n", tap_count);
    printf("%u passed, %u failed\n", tap_count - tap_failed, tap_failed);

    return tap_failed ? 1 : 0;
}
