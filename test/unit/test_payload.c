
/*
 * test_payload.c: unit tests of the sender check (src/ngx_im_payload.c,
 * docs/PROTOCOL.md 3.7).
 *
 * What passes: "from" the sender as a number or a string of digits, "to"
 * and "gid" absent or naming the header's uid or gid.  What is refused,
 * each with its reason: not one JSON object, no "from", another "from",
 * a "to" or "gid" that disagrees, a member given twice, a NUL, a uid
 * written another way.  Each payload is checked from an exact-size copy.
 */


#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ngx_im_proto.h"
#include "ngx_im_payload.h"
#include "tap.h"


typedef struct {
    const char       *payload;
    size_t            len;       /* 0: strlen */
    uint8_t           cmd;
    uint32_t          to;
    im_payload_rc_t   rc;
} pl_case_t;


#define P  IM_CMD_PUBLISH
#define G  IM_CMD_GROUP_PUBLISH
#define T  IM_CMD_GROUP_PART_PUBLISH

/* every case is sent by uid 1001 */
static const pl_case_t  pl_cases[] = {

    /* the apps' convention, as js/src/imclient.js writes it */
    { "{\"from\":1001,\"to\":1002,\"content\":{\"type\":\"text\","
      "\"text\":\"hi\"}}", 0, P, 1002, IM_PAYLOAD_OK },
    { "{\"from\":\"1001\",\"to\":\"1002\"}", 0, P, 1002, IM_PAYLOAD_OK },
    { "{\"from\":1001}", 0, P, 1002, IM_PAYLOAD_OK },
    { " \r\n{\"from\":1001.0,\"to\":1.002e3}\n ", 0, P, 1002,
      IM_PAYLOAD_OK },
    { "{\"from\":1001,\"to\":7}", 0, G, 7, IM_PAYLOAD_OK },
    { "{\"from\":1001,\"to\":7,\"gid\":\"7\"}", 0, T, 7, IM_PAYLOAD_OK },
    { "{\"from\":1001,\"gid\":7}", 0, G, 7, IM_PAYLOAD_OK },
    { "{\"content\":{\"from\":1003},\"from\":1001}", 0, P, 1002,
      IM_PAYLOAD_OK },
    { "{\"From\":1003,\"from\":1001}", 0, P, 1002, IM_PAYLOAD_OK },
    { "{\"\\u0066rom\":1001}", 0, P, 1002, IM_PAYLOAD_OK },
    { "{\"from\":1001,\"text\":\"a \\\\u0000 b\"}", 0, P, 1002,
      IM_PAYLOAD_OK },

    /* the user's report: alice (1001) says she is carol (1003) */
    { "{\"from\":\"1003\",\"to\":\"1002\"}", 0, P, 1002, IM_PAYLOAD_FROM },
    { "{\"from\":1003,\"to\":1002}", 0, P, 1002, IM_PAYLOAD_FROM },

    /* no sender, or one that is not a uid */
    { "{\"to\":1002}", 0, P, 1002, IM_PAYLOAD_NO_FROM },
    { "{}", 0, P, 1002, IM_PAYLOAD_NO_FROM },
    { "{\"from\":null}", 0, P, 1002, IM_PAYLOAD_FROM },
    { "{\"from\":true}", 0, P, 1002, IM_PAYLOAD_FROM },
    { "{\"from\":[1001]}", 0, P, 1002, IM_PAYLOAD_FROM },
    { "{\"from\":{\"uid\":1001}}", 0, P, 1002, IM_PAYLOAD_FROM },
    { "{\"from\":\"01001\"}", 0, P, 1002, IM_PAYLOAD_FROM },
    { "{\"from\":\"+1001\"}", 0, P, 1002, IM_PAYLOAD_FROM },
    { "{\"from\":\" 1001\"}", 0, P, 1002, IM_PAYLOAD_FROM },
    { "{\"from\":\"1001 \"}", 0, P, 1002, IM_PAYLOAD_FROM },
    { "{\"from\":\"\"}", 0, P, 1002, IM_PAYLOAD_FROM },
    { "{\"from\":\"alice\"}", 0, P, 1002, IM_PAYLOAD_FROM },
    { "{\"from\":1001.5}", 0, P, 1002, IM_PAYLOAD_FROM },
    { "{\"from\":-1001}", 0, P, 1002, IM_PAYLOAD_FROM },
    { "{\"from\":4294968297}", 0, P, 1002, IM_PAYLOAD_FROM },
    { "{\"from\":\"4294968297\"}", 0, P, 1002, IM_PAYLOAD_FROM },
    { "{\"from\":\"99999999999999999999\"}", 0, P, 1002, IM_PAYLOAD_FROM },
    { "{\"from\":1e400}", 0, P, 1002, IM_PAYLOAD_FROM },

    /* the addressee */
    { "{\"from\":1001,\"to\":1003}", 0, P, 1002, IM_PAYLOAD_TO },
    { "{\"from\":1001,\"to\":null}", 0, P, 1002, IM_PAYLOAD_TO },
    { "{\"from\":1001,\"to\":[1002]}", 0, P, 1002, IM_PAYLOAD_TO },
    { "{\"from\":1001,\"to\":8}", 0, G, 7, IM_PAYLOAD_TO },
    { "{\"from\":1001,\"to\":1002}", 0, T, 7, IM_PAYLOAD_TO },
    { "{\"from\":1001,\"gid\":7}", 0, P, 1002, IM_PAYLOAD_GID },
    { "{\"from\":1001,\"gid\":8}", 0, G, 7, IM_PAYLOAD_GID },
    { "{\"from\":1001,\"gid\":\"x\"}", 0, T, 7, IM_PAYLOAD_GID },

    /* one text, two readings: refused */
    { "{\"from\":1001,\"from\":1003}", 0, P, 1002, IM_PAYLOAD_TWICE },
    { "{\"from\":1003,\"from\":1001}", 0, P, 1002, IM_PAYLOAD_TWICE },
    { "{\"from\":1001,\"to\":1002,\"to\":1003}", 0, P, 1002,
      IM_PAYLOAD_TWICE },
    { "{\"from\":1001,\"gid\":7,\"gid\":7}", 0, G, 7, IM_PAYLOAD_TWICE },
    { "{\"from\":\"1001\\u0000x\"}", 0, P, 1002, IM_PAYLOAD_NUL },
    { "{\"from\\u0000x\":1003,\"from\":1001}", 0, P, 1002, IM_PAYLOAD_NUL },
    { "{\"from\":\"1001\0\"}", 15, P, 1002, IM_PAYLOAD_NUL },

    /* not one JSON object */
    { "", 0, P, 1002, IM_PAYLOAD_NOT_OBJECT },
    { "hello world", 0, P, 1002, IM_PAYLOAD_NOT_OBJECT },
    { "[{\"from\":1001}]", 0, P, 1002, IM_PAYLOAD_NOT_OBJECT },
    { "\"{\\\"from\\\":1001}\"", 0, P, 1002, IM_PAYLOAD_NOT_OBJECT },
    { "1001", 0, P, 1002, IM_PAYLOAD_NOT_OBJECT },
    { "null", 0, P, 1002, IM_PAYLOAD_NOT_OBJECT },
    { "{\"from\":1001} x", 0, P, 1002, IM_PAYLOAD_NOT_OBJECT },
    { "{\"from\":1001}{\"from\":1003}", 0, P, 1002,
      IM_PAYLOAD_NOT_OBJECT },
    { "{\"from\":1001", 0, P, 1002, IM_PAYLOAD_NOT_OBJECT },
    { "{\"from\":1001,}", 0, P, 1002, IM_PAYLOAD_NOT_OBJECT },
    { "{from:1001}", 0, P, 1002, IM_PAYLOAD_NOT_OBJECT },
};


static void
test_payload_cases(void)
{
    size_t            i, len;
    uint8_t          *copy;
    im_payload_rc_t   rc;
    const pl_case_t  *c;

    for (i = 0; i < sizeof(pl_cases) / sizeof(pl_cases[0]); i++) {
        c = &pl_cases[i];
        len = c->len ? c->len : strlen(c->payload);
        copy = tap_dup(U8(c->payload), len);

        rc = im_payload_check(copy, len, 1001, c->cmd, c->to);

        /* a payload with a line break or a NUL is named by its index */
        if (!tap_ok(rc == c->rc, "cmd %u to %u: %s -> %s", c->cmd, c->to,
                    strpbrk(c->payload, "\r\n") || c->len ? "(case)"
                                                         : c->payload,
                    im_payload_rc_str(c->rc)))
        {
            tap_diag("got %s", im_payload_rc_str(rc));
        }

        free(copy);
    }
}


/* the largest uid, and the reason strings */

static void
test_payload_edges(void)
{
    tap_ok(im_payload_check(LIT("{\"from\":4294967295}"), 4294967295u,
                            IM_CMD_PUBLISH, 1) == IM_PAYLOAD_OK,
           "uid 4294967295 as a number");
    tap_ok(im_payload_check(LIT("{\"from\":\"4294967295\"}"), 4294967295u,
                            IM_CMD_PUBLISH, 1) == IM_PAYLOAD_OK,
           "uid 4294967295 as a string");
    tap_ok(im_payload_check(LIT("{\"from\":1,\"gid\":\"0\"}"), 1,
                            IM_CMD_GROUP_PUBLISH, 0) == IM_PAYLOAD_OK,
           "gid 0 as the string \"0\"");
    tap_ok(strcmp(im_payload_rc_str(IM_PAYLOAD_FROM),
                  "\"from\" is not the sender") == 0
           && strcmp(im_payload_rc_str((im_payload_rc_t) 99), "unknown")
              == 0,
           "reason strings");
}


void
test_payload(void)
{
    test_payload_cases();
    test_payload_edges();
}
