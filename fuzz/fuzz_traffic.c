
/*
 * fuzz_traffic.c: libFuzzer target of the traffic records
 * (src/ngx_im_traffic.c).
 *
 * Owns the properties checked on arbitrary input, parsed from an
 * exact-size copy (so ASan sees any read past the end):
 *   - the result is the one the acceptance rules of ngx_im_traffic.h
 *     give for the input's length, type byte and OriginLen, worked out
 *     here independently; the type is set whenever len > 0;
 *   - a record that parses has its origin, flags and entry where the
 *     format puts them, inside the input;
 *   - rebuilt from its fields with the builders (into exact-size
 *     buffers), a 'D' gives back the input byte for byte, the other
 *     types its first bytes (what follows their fields is ignored);
 *     notices are built with flags 0 and the flags byte is set after, as
 *     the router does;
 *   - the rebuilt bytes parse again to the same fields.
 */


#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ngx_im_traffic.h"

#define FUZZ_TARGET  "fuzz_traffic"
#include "fuzz_util.h"


/* the rules of ngx_im_traffic.h, written out apart from the parser */

static im_rc_t
expected(const uint8_t *in, size_t len)
{
    size_t  head, rest;

    if (len == 0) {
        return IM_ERR_EMPTY;
    }

    if (len < 3) {
        return IM_ERR_TRUNCATED;
    }

    head = IM_TRAFFIC_HEAD_LEN((size_t) in[1]);

    if (len < head) {
        return IM_ERR_LENGTH;
    }

    rest = len - head;

    switch (in[0]) {
    case 'D':
    case 'A':
        return rest >= 8 ? IM_OK : IM_ERR_TRUNCATED;
    case 'K':
        return rest >= 9 ? IM_OK : IM_ERR_TRUNCATED;
    case 'L':
        return rest >= 2 ? IM_OK : IM_ERR_TRUNCATED;
    case 'W':
        return rest >= 17 + IM_MSGID_LEN ? IM_OK : IM_ERR_TRUNCATED;
    case 'J':
    case 'S':
    case 'R':
        return IM_OK;
    default:
        return IM_ERR_UNKNOWN_CMD;
    }
}


/* the fields two parses share (the pointers aside) */

static int
same_fields(const im_traffic_t *a, const im_traffic_t *b)
{
    return a->type == b->type && a->flags == b->flags
           && a->origin_len == b->origin_len
           && memcmp(a->origin, b->origin, a->origin_len) == 0
           && a->seq == b->seq && a->entry_len == b->entry_len
           && (a->entry_len == 0
               || memcmp(a->entry, b->entry, a->entry_len) == 0)
           && a->client_id == b->client_id && a->token == b->token
           && a->scope == b->scope
           && a->uid == b->uid && a->after_ms == b->after_ms
           && a->nonce == b->nonce && a->has_nonce == b->has_nonce;
}


/* build t's record again into an exact-size buffer; compare it with the
 * input's first bytes and parse it */

static void
rebuild(const uint8_t *in, size_t len, const im_traffic_t *t)
{
    size_t        size, n;
    uint8_t      *out;
    im_traffic_t  t2;

    switch (t->type) {

    case 'D':
        size = IM_TRAFFIC_D_LEN(t->origin_len, t->entry_len);
        CHECK(size == len);
        break;

    case 'K':
        size = IM_TRAFFIC_K_LEN(t->origin_len);
        break;

    case 'L':
        size = IM_TRAFFIC_L_LEN(t->origin_len);
        break;

    case 'W':
        size = IM_TRAFFIC_W_LEN(t->origin_len);
        CHECK(t->entry_len == IM_MSGID_LEN);
        break;

    case 'R':
        size = IM_TRAFFIC_R_LEN(t->origin_len, t->entry_len);
        CHECK(size == len);
        break;

    case 'J':
        size = IM_TRAFFIC_HEAD_LEN(t->origin_len) + (t->has_nonce ? 8 : 0);
        break;

    case 'S':
        size = IM_TRAFFIC_HEAD_LEN(t->origin_len);
        break;

    case 'A':
        size = IM_TRAFFIC_HEAD_LEN(t->origin_len) + 8;
        CHECK(size <= IM_TRAFFIC_NOTICE_MAX);
        break;

    default:
        /* an unknown type must never parse */
        CHECK(0);
        return;
    }

    CHECK(size <= len);

    out = malloc(size);
    CHECK(out != NULL);

    switch (t->type) {

    case 'D':
        n = im_traffic_build_d(out, t->origin, t->origin_len, t->flags,
                               t->seq, t->entry, t->entry_len);
        break;

    case 'K':
        n = im_traffic_build_k(out, t->origin, t->origin_len, t->flags,
                               t->client_id, t->token);
        break;

    case 'L':
        n = im_traffic_build_l(out, t->origin, t->origin_len, t->flags,
                               t->scope, t->client_id);
        break;

    case 'W':
        n = im_traffic_build_w(out, t->origin, t->origin_len, t->flags,
                               t->token, t->uid, t->client_id, t->after_ms,
                               t->entry);
        break;

    case 'R':
        n = im_traffic_build_r(out, t->origin, t->origin_len, t->flags,
                               t->entry, t->entry_len);
        break;

    default:
        n = im_traffic_build_notice(out, t->type, t->origin, t->origin_len,
                                    (t->type == 'A' || t->has_nonce)
                                    ? &t->nonce : NULL);
        CHECK(out[IM_TRAFFIC_FLAGS_AT(t->origin_len)] == 0);
        out[IM_TRAFFIC_FLAGS_AT(t->origin_len)] = t->flags;
        break;
    }

    CHECK(n == size);
    CHECK(memcmp(out, in, size) == 0);

    /* the canonical bytes read back the same */
    CHECK(im_traffic_parse(out, size, &t2) == IM_OK);
    CHECK(same_fields(t, &t2));
    CHECK(t2.origin == out + 2);

    free(out);
}


static void
check(const uint8_t *in, size_t len)
{
    im_rc_t       rc;
    im_traffic_t  t;

    rc = im_traffic_parse(in, len, &t);

    CHECK(rc == expected(in, len));
    CHECK(im_rc_str(rc) != NULL);
    CHECK(t.type == (len ? in[0] : 0));

    if (rc != IM_OK) {
        return;
    }

    CHECK(t.origin == in + 2 && t.origin_len == in[1]);
    CHECK(t.flags == in[IM_TRAFFIC_FLAGS_AT(t.origin_len)]);

    if (t.type == 'D') {
        CHECK(t.entry == in + IM_TRAFFIC_HEAD_LEN(t.origin_len) + 8);
        CHECK(t.entry_len == len - IM_TRAFFIC_HEAD_LEN(t.origin_len) - 8);

    } else if (t.type == 'R') {
        CHECK(t.entry == in + IM_TRAFFIC_HEAD_LEN(t.origin_len));
        CHECK(t.entry_len == len - IM_TRAFFIC_HEAD_LEN(t.origin_len));
        CHECK(t.seq == 0);

    } else if (t.type == 'W') {
        CHECK(t.entry == in + IM_TRAFFIC_HEAD_LEN(t.origin_len) + 17);
        CHECK(t.entry_len == IM_MSGID_LEN && t.seq == 0);

    } else {
        CHECK(t.entry == NULL && t.entry_len == 0 && t.seq == 0);
    }

    if (t.type == 'J') {
        CHECK(t.has_nonce
              == (len - IM_TRAFFIC_HEAD_LEN(t.origin_len) >= 8));
    } else {
        CHECK(!t.has_nonce);
    }

    rebuild(in, len, &t);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_exact(data, size, check);
}
