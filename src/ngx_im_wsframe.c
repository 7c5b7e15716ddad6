
/*
 * ngx_im_wsframe.c: incremental RFC 6455 frame parser, frame builders
 * and a strict UTF-8 validator.
 *
 * Owns the frame layer only.  The parser is a byte-driven state machine
 * so that a stream split anywhere, down to one byte per call, yields the
 * same events, at the same stream offsets, as the whole stream at once.
 * Every check happens at a fixed point of the frame header (byte 2, end
 * of the length, end of the header) for that reason too.  libc only.
 */


#include <stdlib.h>
#include <string.h>

#include "ngx_im_wsframe.h"


#define IM_WS_ST_HEADER   0
#define IM_WS_ST_PAYLOAD  1
#define IM_WS_ST_FAILED   2


/* the data of an empty message: never NULL */
static uint8_t  im_ws_empty[1];


static uint16_t im_ws_check_start(im_ws_parser_t *p);
static uint16_t im_ws_check_length(im_ws_parser_t *p);
static uint64_t im_ws_frame_length(im_ws_parser_t *p);
static uint16_t im_ws_reserve(im_ws_parser_t *p, size_t n);
static void im_ws_unmask(im_ws_parser_t *p, uint8_t *dst, const uint8_t *src,
    size_t n);
static im_ws_rc_t im_ws_control(im_ws_parser_t *p, uint8_t *data, size_t len,
    im_ws_event_t *ev);


void
im_ws_parser_init(im_ws_parser_t *p, int server, size_t max_message)
{
    memset(p, 0, sizeof(im_ws_parser_t));

    p->server = (server != 0);
    p->max_message = (max_message > UINT32_MAX - 1) ? UINT32_MAX - 1
                                                    : (uint32_t) max_message;
}


void
im_ws_parser_free(im_ws_parser_t *p)
{
    free(p->buf);
    free(p->ctl);

    p->buf = NULL;
    p->buf_len = 0;
    p->buf_size = 0;
    p->ctl = NULL;
    p->ctl_release = 0;
}


int
im_ws_parser_idle(const im_ws_parser_t *p)
{
    return p->state == IM_WS_ST_HEADER && p->hdr_have == 0
           && p->msg_opcode == 0
           && (p->buf_len == 0 || p->release)
           && (p->ctl == NULL || p->ctl_release);
}


im_ws_rc_t
im_ws_parse(im_ws_parser_t *p, uint8_t *in, size_t len, size_t *consumed,
    im_ws_event_t *ev)
{
    size_t     pos, n;
    uint8_t   *data;
    uint16_t   code;

    memset(ev, 0, sizeof(im_ws_event_t));
    *consumed = 0;

    if (p->state == IM_WS_ST_FAILED) {
        ev->code = p->error_code;
        return IM_WS_ERROR;
    }

    /* the message handed out by the previous call is no longer needed */

    if (p->release) {
        p->release = 0;
        p->buf_len = 0;
    }

    if (p->ctl_release) {
        p->ctl_release = 0;
        free(p->ctl);
        p->ctl = NULL;
    }

    pos = 0;

    for ( ;; ) {

        if (p->state == IM_WS_ST_HEADER) {

            if (pos == len) {
                *consumed = pos;
                return IM_WS_AGAIN;
            }

            p->hdr[p->hdr_have++] = in[pos++];

            if (p->hdr_have == 2) {
                code = im_ws_check_start(p);
                if (code) {
                    goto failed;
                }
            }

            if (p->hdr_have < 2) {
                continue;
            }

            /* the length is complete once the 2, 4 or 10 bytes are in */

            if (p->hdr_have == p->hdr_need - (p->masked ? 4 : 0)) {
                code = im_ws_check_length(p);
                if (code) {
                    goto failed;
                }
            }

            if (p->hdr_have < p->hdr_need) {
                continue;
            }

            /* the header is complete */

            if (p->masked) {
                memcpy(p->mask, p->hdr + p->hdr_need - 4, 4);
            }

            p->mask_pos = 0;
            p->hdr_have = 0;
            p->ctl_len = 0;
            p->frame_len = p->remaining;
            p->state = IM_WS_ST_PAYLOAD;
        }

        /*
         * A control frame, or a data frame that is a whole message, whose
         * payload is all in this buffer and none of it in an earlier one
         * is unmasked in place and handed out without a copy.  This holds
         * too when the header came in an earlier buffer, as happens when
         * a read ends right after a header.  check_length() has bounded
         * the length by max_message or by 125, so the cast is safe.
         */

        if (p->remaining == p->frame_len
            && p->remaining <= (uint64_t) (len - pos)
            && ((p->opcode & 0x8)
                || (p->fin && p->opcode != IM_WS_OP_CONT)))
        {
            n = (size_t) p->remaining;
            data = in + pos;

            im_ws_unmask(p, data, data, n);

            pos += n;
            p->remaining = 0;
            p->state = IM_WS_ST_HEADER;
            *consumed = pos;

            if (p->opcode & 0x8) {
                return im_ws_control(p, data, n, ev);
            }

            ev->opcode = p->opcode;
            ev->data = data;
            ev->len = n;

            return IM_WS_MESSAGE;
        }

        if (p->remaining) {

            if (pos == len) {
                *consumed = pos;
                return IM_WS_AGAIN;
            }

            n = len - pos;
            if ((uint64_t) n > p->remaining) {
                n = (size_t) p->remaining;
            }

            if (p->opcode & 0x8) {
                if (p->ctl == NULL) {
                    p->ctl = malloc(IM_WS_MAX_CONTROL);
                    if (p->ctl == NULL) {
                        code = IM_WS_CLOSE_INTERNAL;
                        goto failed;
                    }
                }

                im_ws_unmask(p, p->ctl + p->ctl_len, in + pos, n);
                p->ctl_len += n;

            } else {
                code = im_ws_reserve(p, n);
                if (code) {
                    goto failed;
                }

                im_ws_unmask(p, p->buf + p->buf_len, in + pos, n);
                p->buf_len += n;
            }

            pos += n;
            p->remaining -= n;

            if (p->remaining) {
                continue;
            }
        }

        /* the frame is complete */

        p->state = IM_WS_ST_HEADER;

        if (p->opcode & 0x8) {
            *consumed = pos;
            p->ctl_release = (p->ctl != NULL);
            return im_ws_control(p, p->ctl ? p->ctl : im_ws_empty,
                                 p->ctl_len, ev);
        }

        if (!p->fin) {
            /* a fragment: the message continues in later frames */

            if (p->opcode != IM_WS_OP_CONT) {
                p->msg_opcode = p->opcode;
            }

            continue;
        }

        /* an empty message may have no buffer: data is never NULL */

        ev->opcode = p->msg_opcode ? p->msg_opcode : p->opcode;
        ev->data = p->buf ? p->buf : im_ws_empty;
        ev->len = p->buf_len;

        p->msg_opcode = 0;
        p->release = 1;
        *consumed = pos;

        return IM_WS_MESSAGE;
    }

failed:

    p->state = IM_WS_ST_FAILED;
    p->error_code = code;

    ev->opcode = p->opcode;
    ev->code = code;
    *consumed = pos;

    return IM_WS_ERROR;
}


/* the first two header bytes: everything but the length's value */

static uint16_t
im_ws_check_start(im_ws_parser_t *p)
{
    unsigned  len7;

    p->fin = (p->hdr[0] & 0x80) != 0;
    p->opcode = p->hdr[0] & 0x0f;
    p->masked = (p->hdr[1] & 0x80) != 0;
    len7 = p->hdr[1] & 0x7f;

    /* no extension is negotiated, so no RSV bit may be set */

    if (p->hdr[0] & 0x70) {
        return IM_WS_CLOSE_PROTOCOL;
    }

    /* a client masks every frame, a server none (RFC 6455 5.1) */

    if (p->masked != (p->server != 0)) {
        return IM_WS_CLOSE_PROTOCOL;
    }

    switch (p->opcode) {

    case IM_WS_OP_CLOSE:
    case IM_WS_OP_PING:
    case IM_WS_OP_PONG:
        if (!p->fin || len7 > IM_WS_MAX_CONTROL) {
            return IM_WS_CLOSE_PROTOCOL;
        }

        break;

    case IM_WS_OP_CONT:
        if (p->msg_opcode == 0) {
            return IM_WS_CLOSE_PROTOCOL;
        }

        break;

    case IM_WS_OP_TEXT:
    case IM_WS_OP_BINARY:
        if (p->msg_opcode != 0) {
            return IM_WS_CLOSE_PROTOCOL;
        }

        break;

    default:
        return IM_WS_CLOSE_PROTOCOL;
    }

    p->hdr_need = 2 + (len7 == 126 ? 2 : 0) + (len7 == 127 ? 8 : 0)
                  + (p->masked ? 4 : 0);

    return 0;
}


/*
 * The length is known: refuse a message that will not fit before any of
 * it is read, rather than buffer max_message bytes and then fail.
 */

static uint16_t
im_ws_check_length(im_ws_parser_t *p)
{
    uint64_t  flen;

    flen = im_ws_frame_length(p);

    if (flen >> 63) {
        return IM_WS_CLOSE_PROTOCOL;
    }

    /* control frames are already bounded by 125 */

    if (!(p->opcode & 0x8) && flen > (uint64_t) (p->max_message - p->buf_len))
    {
        return IM_WS_CLOSE_TOO_BIG;
    }

    /* at most max_message (a data frame) or 125 (a control frame) */
    p->remaining = (uint32_t) flen;

    return 0;
}


static uint64_t
im_ws_frame_length(im_ws_parser_t *p)
{
    unsigned  i;
    uint64_t  flen;

    flen = p->hdr[1] & 0x7f;

    if (flen == 126) {
        return ((uint64_t) p->hdr[2] << 8) | p->hdr[3];
    }

    if (flen == 127) {
        flen = 0;

        for (i = 2; i < 10; i++) {
            flen = (flen << 8) | p->hdr[i];
        }
    }

    return flen;
}


/*
 * Room for n more bytes of the message being reassembled.  The buffer
 * grows with the bytes actually received, not with what a header
 * announces, so an idle peer costs no more than it sent; it never grows
 * past max_message, which check_length() has already enforced on the
 * total.
 */

static uint16_t
im_ws_reserve(im_ws_parser_t *p, size_t n)
{
    size_t    need, size;
    uint8_t  *buf;

    need = p->buf_len + n;

    if (need <= p->buf_size) {
        return 0;
    }

    size = p->buf_size ? p->buf_size * 2 : 1024;

    if (size < need) {
        size = need;
    }

    if (size > p->max_message) {
        size = p->max_message;
    }

    buf = realloc(p->buf, size);
    if (buf == NULL) {
        return IM_WS_CLOSE_INTERNAL;
    }

    p->buf = buf;
    p->buf_size = size;

    return 0;
}


/*
 * Copy n payload bytes, unmasking them; dst may equal src.  Eight bytes
 * at a time with the mask repeated in byte order, which is the same on
 * any endianness, then byte by byte; 8 is a multiple of the mask's 4
 * bytes, so the mask position carries over unchanged.
 */

static void
im_ws_unmask(im_ws_parser_t *p, uint8_t *dst, const uint8_t *src, size_t n)
{
    size_t    i;
    unsigned  m;
    uint8_t   k[8];
    uint64_t  key, w;

    if (!p->masked) {
        if (dst != src && n) {
            memcpy(dst, src, n);
        }

        return;
    }

    m = p->mask_pos;
    i = 0;

    if (n >= 16) {
        for (i = 0; i < 8; i++) {
            k[i] = p->mask[(m + i) & 3];
        }

        memcpy(&key, k, 8);

        for (i = 0; n - i >= 8; i += 8) {
            memcpy(&w, src + i, 8);
            w ^= key;
            memcpy(dst + i, &w, 8);
        }
    }

    for ( /* void */ ; i < n; i++) {
        dst[i] = src[i] ^ p->mask[m];
        m = (m + 1) & 3;
    }

    p->mask_pos = m;
}


static im_ws_rc_t
im_ws_control(im_ws_parser_t *p, uint8_t *data, size_t len,
    im_ws_event_t *ev)
{
    unsigned  code;

    ev->opcode = p->opcode;

    switch (p->opcode) {

    case IM_WS_OP_PING:
        ev->data = data;
        ev->len = len;
        return IM_WS_PING;

    case IM_WS_OP_PONG:
        ev->data = data;
        ev->len = len;
        return IM_WS_PONG;

    default: /* IM_WS_OP_CLOSE */
        break;
    }

    if (len == 0) {
        ev->code = IM_WS_CLOSE_NO_STATUS;
        ev->data = data;
        return IM_WS_CLOSE;
    }

    if (len == 1) {
        code = IM_WS_CLOSE_PROTOCOL;
        goto failed;
    }

    code = ((unsigned) data[0] << 8) | data[1];

    if (!im_ws_close_code_valid(code)) {
        code = IM_WS_CLOSE_PROTOCOL;
        goto failed;
    }

    if (!im_utf8_valid(data + 2, len - 2)) {
        code = IM_WS_CLOSE_BAD_DATA;
        goto failed;
    }

    ev->code = (uint16_t) code;
    ev->data = data + 2;
    ev->len = len - 2;

    return IM_WS_CLOSE;

failed:

    p->state = IM_WS_ST_FAILED;
    p->error_code = (uint16_t) code;
    ev->code = (uint16_t) code;

    return IM_WS_ERROR;
}


/*
 * Codes a peer may put in a close frame.  RFC 6455 7.4.1 defines
 * 1000-1003 and 1007-1011 (1004 is reserved, 1005 and 1006 must never
 * be sent); IANA has since registered 1012-1014, so they are accepted
 * too; 1015 (TLS failure) must never be sent either.  3000-4999 are for
 * libraries and applications (7.4.2); anything else is unassigned.
 */

int
im_ws_close_code_valid(unsigned code)
{
    if (code >= 3000 && code <= 4999) {
        return 1;
    }

    if (code >= 1000 && code <= 1003) {
        return 1;
    }

    return code >= 1007 && code <= 1014;
}


size_t
im_ws_header(uint8_t *out, int opcode, int fin, uint64_t payload_len)
{
    unsigned  i;

    out[0] = (uint8_t) ((fin ? 0x80 : 0) | (opcode & 0x0f));

    if (payload_len < 126) {
        out[1] = (uint8_t) payload_len;
        return 2;
    }

    if (payload_len <= 0xffff) {
        out[1] = 126;
        out[2] = (uint8_t) (payload_len >> 8);
        out[3] = (uint8_t) payload_len;
        return 4;
    }

    out[1] = 127;

    for (i = 0; i < 8; i++) {
        out[2 + i] = (uint8_t) (payload_len >> (56 - 8 * i));
    }

    return 10;
}


size_t
im_ws_build_masked(uint8_t *out, int opcode, int fin, const uint8_t *payload,
    size_t len, const uint8_t mask[4])
{
    size_t  n, i;

    n = im_ws_header(out, opcode, fin, len);
    out[1] |= 0x80;

    memcpy(out + n, mask, 4);
    n += 4;

    for (i = 0; i < len; i++) {
        out[n + i] = payload[i] ^ mask[i & 3];
    }

    return n + len;
}


size_t
im_ws_close_payload(uint8_t *out, uint16_t code, const uint8_t *reason,
    size_t rlen)
{
    out[0] = (uint8_t) (code >> 8);
    out[1] = (uint8_t) code;

    if (rlen) {
        memcpy(out + 2, reason, rlen);
    }

    return 2 + rlen;
}


/*
 * Well-formed UTF-8 as the Unicode standard defines it (table 3-7): the
 * second byte's range depends on the first so that overlong forms,
 * UTF-16 surrogates (U+D800-DFFF) and code points past U+10FFFF are all
 * refused, as are C0, C1 and F5-FF anywhere.
 */

int
im_utf8_valid(const uint8_t *p, size_t len)
{
    size_t   i, k, need;
    uint8_t  c, lo, hi;

    i = 0;

    while (i < len) {
        c = p[i];

        if (c < 0x80) {
            i++;
            continue;
        }

        lo = 0x80;
        hi = 0xbf;

        if (c >= 0xc2 && c <= 0xdf) {
            need = 1;

        } else if (c >= 0xe0 && c <= 0xef) {
            need = 2;

            if (c == 0xe0) {
                lo = 0xa0;             /* overlong below U+0800 */

            } else if (c == 0xed) {
                hi = 0x9f;             /* surrogates */
            }

        } else if (c >= 0xf0 && c <= 0xf4) {
            need = 3;

            if (c == 0xf0) {
                lo = 0x90;             /* overlong below U+10000 */

            } else if (c == 0xf4) {
                hi = 0x8f;             /* past U+10FFFF */
            }

        } else {
            return 0;
        }

        if (len - i - 1 < need) {
            return 0;
        }

        if (p[i + 1] < lo || p[i + 1] > hi) {
            return 0;
        }

        for (k = 2; k <= need; k++) {
            if ((p[i + k] & 0xc0) != 0x80) {
                return 0;
            }
        }

        i += need + 1;
    }

    return 1;
}
