/*
 * ngx_im_slot.c: key slots and redirect replies of Redis Cluster.
 *
 * The slot is CRC16 (the XMODEM variant: polynomial 0x1021, initial value
 * 0, no reflection) of the key's hash tag, or of the whole key when it has
 * none, modulo 16,384.  Computed bit by bit: a per-uid key is a dozen bytes
 * and a slot is computed once per command, so a 512-byte table would buy
 * nothing measurable.
 */

#include "ngx_im_slot.h"


static uint16_t
ngx_im_slot_crc16(const u_char *p, size_t len)
{
    uint16_t    crc;
    ngx_uint_t  i;

    crc = 0;

    while (len--) {
        crc ^= (uint16_t) (*p++ << 8);

        for (i = 0; i < 8; i++) {
            crc = (crc & 0x8000) ? (uint16_t) ((crc << 1) ^ 0x1021)
                                 : (uint16_t) (crc << 1);
        }
    }

    return crc;
}


ngx_uint_t
ngx_im_slot(const u_char *key, size_t len)
{
    const u_char  *open, *close, *last;

    last = key + len;

    /* the first '{', then the first '}' after it; an empty tag ("{}")
     * is no tag: the whole key is hashed */

    open = memchr(key, '{', len);

    if (open != NULL) {
        close = memchr(open + 1, '}', last - open - 1);

        if (close != NULL && close > open + 1) {
            key = open + 1;
            len = close - key;
        }
    }

    return ngx_im_slot_crc16(key, len) & (NGX_IM_SLOTS - 1);
}


/* "MOVED <slot> <host>:<port>" or "ASK <slot> <host>:<port>" */

ngx_uint_t
ngx_im_slot_redirect(const u_char *err, size_t len, ngx_im_redirect_t *r)
{
    ngx_uint_t     kind, slot, digits;
    const u_char  *p, *last, *colon;

    last = err + len;

    if (len > 6 && memcmp(err, "MOVED ", 6) == 0) {
        kind = NGX_IM_REDIRECT_MOVED;
        p = err + 6;

    } else if (len > 4 && memcmp(err, "ASK ", 4) == 0) {
        kind = NGX_IM_REDIRECT_ASK;
        p = err + 4;

    } else {
        return NGX_IM_REDIRECT_NONE;
    }

    slot = 0;
    digits = 0;

    while (p < last && *p >= '0' && *p <= '9') {
        slot = slot * 10 + (*p++ - '0');

        if (++digits > 5 || slot >= NGX_IM_SLOTS) {
            return NGX_IM_REDIRECT_NONE;
        }
    }

    if (digits == 0 || p == last || *p++ != ' ' || p == last) {
        return NGX_IM_REDIRECT_NONE;
    }

    /* the address: no space in it, a port after the last ':' (an IPv6
     * address has colons of its own); the host may be empty, when the
     * node does not know its endpoint: the caller then uses the host of
     * the connection that got the reply */

    colon = NULL;

    for (r->addr = p; p < last; p++) {
        if (*p == ' ' || *p == '\r' || *p == '\n') {
            return NGX_IM_REDIRECT_NONE;
        }

        if (*p == ':') {
            colon = p;
        }
    }

    if (colon == NULL || colon + 1 == last) {
        return NGX_IM_REDIRECT_NONE;
    }

    for (p = colon + 1; p < last; p++) {
        if (*p < '0' || *p > '9') {
            return NGX_IM_REDIRECT_NONE;
        }
    }

    r->kind = kind;
    r->slot = slot;
    r->addr_len = last - r->addr;

    return kind;
}
