
/*
 * ngx_im_traffic.c: parsing and building of traffic records.
 *
 * Owns every byte of the records of ngx_im_traffic.h ('D', 'K', 'J',
 * 'S', 'A', 'M', 'R', 'L', 'W', 'C'): the parser takes one whole record (a
 * channel message, or a datagram after its uid), checks exactly what the
 * router always checked and points into it; the builders write into a
 * caller buffer sized with the IM_TRAFFIC_*_LEN macros.  libc only.
 */


#include <string.h>

#include "ngx_im_traffic.h"


static uint8_t *im_traffic_head(uint8_t *p, uint8_t type,
    const uint8_t *origin, size_t olen, uint8_t flags);


im_rc_t
im_traffic_parse(const uint8_t *p, size_t len, im_traffic_t *t)
{
    size_t          olen, rest;
    const uint8_t  *f;

    memset(t, 0, sizeof(im_traffic_t));

    if (len == 0) {
        return IM_ERR_EMPTY;
    }

    t->type = p[0];

    if (len < 3) {
        return IM_ERR_TRUNCATED;
    }

    olen = p[1];

    if (len - 3 < olen) {
        return IM_ERR_LENGTH;
    }

    t->origin = p + 2;
    t->origin_len = olen;
    t->flags = p[IM_TRAFFIC_FLAGS_AT(olen)];

    /* the fields of the type */
    f = p + IM_TRAFFIC_HEAD_LEN(olen);
    rest = len - IM_TRAFFIC_HEAD_LEN(olen);

    switch (p[0]) {

    case 'D':
        if (rest < 8) {
            return IM_ERR_TRUNCATED;
        }

        t->seq = im_traffic_get_u64(f);
        t->entry = f + 8;
        t->entry_len = rest - 8;
        return IM_OK;

    case 'K':
        /* bytes past the token: ignored, as they always were */
        if (rest < 9) {
            return IM_ERR_TRUNCATED;
        }

        t->client_id = f[0];
        t->token = im_traffic_get_u64(f + 1);
        return IM_OK;

    case 'L':
        /* a scope other than 0 and 1 is for a later build: any other
         * value reads as "one ClientId", the narrower kick */
        if (rest < 2) {
            return IM_ERR_TRUNCATED;
        }

        t->scope = f[0];
        t->client_id = f[1];
        return IM_OK;

    case 'J':
        /* builds from before 'A' send no nonce */
        if (rest >= 8) {
            t->nonce = im_traffic_get_u64(f);
            t->has_nonce = 1;
        }

        return IM_OK;

    case 'S':
        return IM_OK;

    case 'R':
        /* the receipt as the client gets it, checked by the caller */
        t->entry = f;
        t->entry_len = rest;
        return IM_OK;

    case 'W':
        if (rest < 17 + IM_MSGID_LEN) {
            return IM_ERR_TRUNCATED;
        }

        t->token = im_traffic_get_u64(f);
        t->uid = im_get_u32(f + 8);
        t->client_id = f[12];
        t->after_ms = im_get_u32(f + 13);
        t->entry = f + 17;
        t->entry_len = IM_MSGID_LEN;
        return IM_OK;

    case 'C':
        if (rest < IM_MSGID_LEN) {
            return IM_ERR_TRUNCATED;
        }

        t->entry = f;
        t->entry_len = IM_MSGID_LEN;
        return IM_OK;

    case 'A':
    case 'M':
        if (rest < 8) {
            return IM_ERR_TRUNCATED;
        }

        t->nonce = im_traffic_get_u64(f);
        return IM_OK;

    default:
        return IM_ERR_UNKNOWN_CMD;
    }
}


uint8_t *
im_traffic_put_u64(uint8_t *p, uint64_t v)
{
    p = im_put_u32(p, (uint32_t) (v >> 32));
    return im_put_u32(p, (uint32_t) v);
}


uint64_t
im_traffic_get_u64(const uint8_t *p)
{
    return ((uint64_t) im_get_u32(p) << 32) | im_get_u32(p + 4);
}


/* Type OriginLen Origin Flags */

static uint8_t *
im_traffic_head(uint8_t *p, uint8_t type, const uint8_t *origin, size_t olen,
    uint8_t flags)
{
    *p++ = type;
    *p++ = (uint8_t) olen;

    if (olen) {
        memcpy(p, origin, olen);
        p += olen;
    }

    *p++ = flags;

    return p;
}


size_t
im_traffic_build_d(uint8_t *buf, const uint8_t *origin, size_t olen,
    uint8_t flags, uint64_t seq, const uint8_t *entry, size_t elen)
{
    uint8_t  *p;

    p = im_traffic_head(buf, 'D', origin, olen, flags);
    p = im_traffic_put_u64(p, seq);

    if (elen) {
        memcpy(p, entry, elen);
        p += elen;
    }

    return (size_t) (p - buf);
}


size_t
im_traffic_build_k(uint8_t *buf, const uint8_t *origin, size_t olen,
    uint8_t flags, uint8_t client_id, uint64_t token)
{
    uint8_t  *p;

    p = im_traffic_head(buf, 'K', origin, olen, flags);
    *p++ = client_id;
    p = im_traffic_put_u64(p, token);

    return (size_t) (p - buf);
}


size_t
im_traffic_build_l(uint8_t *buf, const uint8_t *origin, size_t olen,
    uint8_t flags, uint8_t scope, uint8_t client_id)
{
    uint8_t  *p;

    p = im_traffic_head(buf, 'L', origin, olen, flags);
    *p++ = scope;
    *p++ = client_id;

    return (size_t) (p - buf);
}


size_t
im_traffic_build_r(uint8_t *buf, const uint8_t *origin, size_t olen,
    uint8_t flags, const uint8_t *receipt, size_t rlen)
{
    uint8_t  *p;

    p = im_traffic_head(buf, 'R', origin, olen, flags);
    memcpy(p, receipt, rlen);

    return (size_t) (p - buf) + rlen;
}


size_t
im_traffic_build_c(uint8_t *buf, const uint8_t *origin, size_t olen,
    uint8_t flags, const uint8_t *msgid)
{
    uint8_t  *p;

    p = im_traffic_head(buf, 'C', origin, olen, flags);
    memcpy(p, msgid, IM_MSGID_LEN);

    return (size_t) (p - buf) + IM_MSGID_LEN;
}


size_t
im_traffic_build_w(uint8_t *buf, const uint8_t *origin, size_t olen,
    uint8_t flags, uint64_t token, uint32_t uid, uint8_t client_id,
    uint32_t after_ms, const uint8_t *msgid)
{
    uint8_t  *p;

    p = im_traffic_head(buf, 'W', origin, olen, flags);
    p = im_traffic_put_u64(p, token);
    p = im_put_u32(p, uid);
    *p++ = client_id;
    p = im_put_u32(p, after_ms);
    memcpy(p, msgid, IM_MSGID_LEN);

    return (size_t) (p - buf) + IM_MSGID_LEN;
}


size_t
im_traffic_build_notice(uint8_t *buf, uint8_t type, const uint8_t *origin,
    size_t olen, const uint64_t *nonce)
{
    uint8_t  *p;

    p = im_traffic_head(buf, type, origin, olen, 0);

    if (nonce) {
        p = im_traffic_put_u64(p, *nonce);
    }

    return (size_t) (p - buf);
}
