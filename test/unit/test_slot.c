
/*
 * test_slot.c: unit tests of Redis Cluster's key slots and redirect
 * replies (src/ngx_im_slot.c).
 *
 * The slots expected are what Debian's redis-server 7.0.15 answered to
 * CLUSTER KEYSLOT for the same keys, including the hash-tag corner cases
 * (an empty tag, a second '{', a '}' before the '{'); the redirects are
 * the errors it sent (MOVED) and the forms the cluster specification
 * gives (ASK, IPv6, a host name), then what must not parse.
 */


#include <stdio.h>
#include <string.h>

#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_im_slot.h"
#include "tap.h"


static void
test_slot_keys(void)
{
    size_t      i;
    ngx_uint_t  slot;

    static const struct {
        const char  *key;
        ngx_uint_t   slot;
    } cases[] = {
        { "", 0 },
        { "a", 15495 },
        { "foo", 12182 },
        { "123456789", 12739 },
        { "im:inbox:{42}", 8000 },
        { "im:u:{42}", 8000 },
        { "im:inbox:{4294967295}", 7338 },
        { "im:w:{node-a.12345.7}", 12870 },
        { "foo{}{bar}", 8363 },          /* empty tag: whole key */
        { "foo{{bar}}zap", 4015 },       /* the tag is "{bar" */
        { "foo{bar}{zap}", 5061 },       /* the first tag only */
        { "{user1000}.following", 3443 },
        { "{", 4092 },
        { "}", 12090 },
        { "{}", 15257 },
        { "a{b", 13340 },                /* no closing brace */
        { "x}{y}", 12222 },              /* '}' before '{' is ignored */
    };

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        slot = ngx_im_slot((const u_char *) cases[i].key,
                           strlen(cases[i].key));
        tap_ok(slot == cases[i].slot, "slot of \"%s\" is %lu (got %lu)",
               cases[i].key, (unsigned long) cases[i].slot,
               (unsigned long) slot);
    }

    tap_ok(ngx_im_slot((const u_char *) "im:inbox:{7}", 12)
           == ngx_im_slot((const u_char *) "im:dead:{7}", 11),
           "keys tagged with one uid share a slot");
}


static void
test_slot_redirects(void)
{
    size_t             i;
    ngx_uint_t         kind;
    ngx_im_redirect_t  r;

    static const struct {
        const char  *err;
        ngx_uint_t   kind;
        ngx_uint_t   slot;
        const char  *addr;
    } cases[] = {
        { "MOVED 12182 127.0.0.1:27003", NGX_IM_REDIRECT_MOVED, 12182,
          "127.0.0.1:27003" },
        { "ASK 0 10.0.0.5:6379", NGX_IM_REDIRECT_ASK, 0, "10.0.0.5:6379" },
        { "MOVED 16383 redis-3.internal:6380", NGX_IM_REDIRECT_MOVED, 16383,
          "redis-3.internal:6380" },
        { "MOVED 5 ::1:7000", NGX_IM_REDIRECT_MOVED, 5, "::1:7000" },
        /* a node that does not know its endpoint: the same host */
        { "MOVED 9 :6379", NGX_IM_REDIRECT_MOVED, 9, ":6379" },

        { "MOVED 16384 127.0.0.1:1", NGX_IM_REDIRECT_NONE, 0, NULL },
        { "MOVED 123456 127.0.0.1:1", NGX_IM_REDIRECT_NONE, 0, NULL },
        { "MOVED  1 127.0.0.1:1", NGX_IM_REDIRECT_NONE, 0, NULL },
        { "MOVED 1", NGX_IM_REDIRECT_NONE, 0, NULL },
        { "MOVED 1 ", NGX_IM_REDIRECT_NONE, 0, NULL },
        { "MOVED 1 127.0.0.1", NGX_IM_REDIRECT_NONE, 0, NULL },
        { "MOVED 1 127.0.0.1:", NGX_IM_REDIRECT_NONE, 0, NULL },
        { "MOVED 1 127.0.0.1:63x9", NGX_IM_REDIRECT_NONE, 0, NULL },
        { "MOVED 1 127.0.0.1:6379 extra", NGX_IM_REDIRECT_NONE, 0, NULL },
        { "MOVED x 127.0.0.1:6379", NGX_IM_REDIRECT_NONE, 0, NULL },
        { "moved 1 127.0.0.1:6379", NGX_IM_REDIRECT_NONE, 0, NULL },
        { "CLUSTERDOWN The cluster is down", NGX_IM_REDIRECT_NONE, 0, NULL },
        { "TRYAGAIN Multiple keys request during rehashing of slot",
          NGX_IM_REDIRECT_NONE, 0, NULL },
        { "ASK", NGX_IM_REDIRECT_NONE, 0, NULL },
        { "", NGX_IM_REDIRECT_NONE, 0, NULL },
    };

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        memset(&r, 0, sizeof(r));
        kind = ngx_im_slot_redirect((const u_char *) cases[i].err,
                                    strlen(cases[i].err), &r);

        if (cases[i].kind == NGX_IM_REDIRECT_NONE) {
            tap_ok(kind == NGX_IM_REDIRECT_NONE, "\"%s\" is no redirect",
                   cases[i].err);
            continue;
        }

        tap_ok(kind == cases[i].kind && r.kind == kind
               && r.slot == cases[i].slot
               && r.addr_len == strlen(cases[i].addr)
               && memcmp(r.addr, cases[i].addr, r.addr_len) == 0,
               "\"%s\": %s, slot %lu, %s", cases[i].err,
               kind == NGX_IM_REDIRECT_ASK ? "ASK" : "MOVED",
               (unsigned long) cases[i].slot, cases[i].addr);
    }
}


void
test_slot(void)
{
    test_slot_keys();
    test_slot_redirects();
}
