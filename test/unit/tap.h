
/*
 * tap.h: the TAP helpers of the unit tests (test_main.c) and the test
 * suites it runs, declared once for every test file.
 *
 * Each tap_* call is one TAP line or a "# " diagnostic; tap_rc checks a
 * codec result (im_rc_t, shared by the protocol codec and the traffic
 * records); tap_dup gives an exact-size heap copy of some bytes, so that
 * the ASan build catches a parser reading one byte past the end.
 */


#ifndef _TAP_H_INCLUDED_
#define _TAP_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>

#include "ngx_im_proto.h"


#define PRINTF(f, a)  __attribute__((format(printf, f, a)))

#define U8(s)         ((const uint8_t *) (s))
/* a string literal as bytes and length, without the terminating NUL */
#define LIT(s)        U8(s), (sizeof(s) - 1)


int tap_ok(int cond, const char *fmt, ...) PRINTF(2, 3);
void tap_diag(const char *fmt, ...) PRINTF(1, 2);
void tap_hex(const char *label, const uint8_t *p, size_t n);
int tap_bytes(const uint8_t *got, size_t glen, const uint8_t *want,
    size_t wlen, const char *fmt, ...) PRINTF(5, 6);
int tap_rc(im_rc_t got, im_rc_t want, const char *fmt, ...) PRINTF(3, 4);
uint8_t *tap_dup(const uint8_t *p, size_t n);


/* the suites, in the order test_main.c runs them */
void test_proto(void);
void test_utf16(void);
void test_payload(void);
void test_wsframe(void);
void test_traffic(void);
void test_merge(void);
void test_slot(void);
void test_vectors(void);


#endif /* _TAP_H_INCLUDED_ */
