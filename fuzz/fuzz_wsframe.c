
/*
 * fuzz_wsframe.c: libFuzzer target of the RFC 6455 frame layer.
 *
 * Owns the properties checked on arbitrary input.  The first three bytes
 * choose the side (server or client), max_message and a split point; the
 * rest is a byte stream that is parsed
 *   - whole, from one exact-size buffer,
 *   - split in two at the data-derived point, each part in its own
 *     exact-size buffer,
 *   - for short streams, one byte per call,
 * and every way must give the same events (result, opcode, code,
 * payload bytes, stream offset).  Each event must also be sane on its
 * own: data messages within max_message, control payloads within 125
 * bytes, close codes valid with a UTF-8 reason, error codes among those
 * documented, and an error sticks.
 *
 * When the top bit of the first byte is set, the rest is instead read as
 * a list of frames (opcode/FIN byte, length, payload), encoded with the
 * module's builders (masked for a server, bare for a client), and the
 * events are also compared with a small independent model of RFC 6455.
 */


#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ngx_im_wsframe.h"

#define FUZZ_TARGET  "fuzz_wsframe"
#include "fuzz_util.h"


typedef struct {
    im_ws_rc_t   rc;
    int          opcode;
    uint16_t     code;
    size_t       len;
    uint8_t     *data;
    size_t       end;
} rec_t;


typedef struct {
    rec_t       *recs;
    size_t       n;
    size_t       size;
} recs_t;


static const size_t  maxes[8] = {
    0, 1, 125, 126, 1024, 65535, 65536, 1 << 20
};


static void
add(recs_t *r, im_ws_rc_t rc, const im_ws_event_t *ev, size_t end)
{
    rec_t  *nr;

    if (r->n == r->size) {
        r->size = r->size ? r->size * 2 : 16;
        nr = realloc(r->recs, r->size * sizeof(rec_t));
        CHECK(nr != NULL);
        r->recs = nr;
    }

    nr = &r->recs[r->n++];

    nr->rc = rc;
    nr->opcode = ev->opcode;
    nr->code = ev->code;
    nr->len = ev->len;
    nr->end = end;

    /* reading it all is the check that ev->data/len is real memory */
    nr->data = fuzz_dup(ev->data, ev->len);
    CHECK(nr->data != NULL);
}


static void
free_recs(recs_t *r)
{
    size_t  i;

    for (i = 0; i < r->n; i++) {
        free(r->recs[i].data);
    }

    free(r->recs);
    r->recs = NULL;
    r->n = 0;
    r->size = 0;
}


static void
sane(const im_ws_parser_t *p, im_ws_rc_t rc, const im_ws_event_t *ev)
{
    CHECK(rc == IM_WS_ERROR || ev->data != NULL);

    switch (rc) {

    case IM_WS_MESSAGE:
        CHECK(ev->opcode == IM_WS_OP_TEXT || ev->opcode == IM_WS_OP_BINARY);
        CHECK(ev->len <= p->max_message);
        break;

    case IM_WS_PING:
    case IM_WS_PONG:
        CHECK(ev->opcode == (rc == IM_WS_PING ? IM_WS_OP_PING
                                              : IM_WS_OP_PONG));
        CHECK(ev->len <= IM_WS_MAX_CONTROL);
        break;

    case IM_WS_CLOSE:
        CHECK(ev->opcode == IM_WS_OP_CLOSE);
        CHECK(ev->len <= IM_WS_MAX_CONTROL - 2);

        if (ev->code == IM_WS_CLOSE_NO_STATUS) {
            CHECK(ev->len == 0);

        } else {
            CHECK(im_ws_close_code_valid(ev->code));
            CHECK(im_utf8_valid(ev->data, ev->len));
        }

        break;

    case IM_WS_ERROR:
        CHECK(ev->code == IM_WS_CLOSE_PROTOCOL
              || ev->code == IM_WS_CLOSE_BAD_DATA
              || ev->code == IM_WS_CLOSE_TOO_BIG
              || ev->code == IM_WS_CLOSE_INTERNAL);
        break;

    default:
        CHECK(0);
    }
}


static int
in_range(const uint8_t *base, size_t size, const uint8_t *p, size_t n)
{
    return base != NULL && p >= base && n <= size
           && (size_t) (p - base) <= size - n;
}


/*
 * Parse one piece (in its own exact-size buffer) until it is consumed
 * or the parser fails; returns 0 after an error.
 */

static int
feed(im_ws_parser_t *p, const uint8_t *src, size_t len, size_t base,
    recs_t *r)
{
    size_t          used, n;
    uint8_t        *buf;
    im_ws_rc_t      rc;
    im_ws_event_t   ev;
    int             live;

    buf = fuzz_dup(src, len);
    CHECK(buf != NULL);

    used = 0;
    live = 1;

    for ( ;; ) {
        rc = im_ws_parse(p, buf + used, len - used, &n, &ev);

        CHECK(n <= len - used);
        used += n;

        if (rc == IM_WS_AGAIN) {
            CHECK(used == len);
            break;
        }

        sane(p, rc, &ev);

        /* data lies in this input (zero copy) or in the parser's buffers */

        if (rc != IM_WS_ERROR) {
            CHECK(in_range(buf, len, ev.data, ev.len)
                  || in_range(p->buf, p->buf_size, ev.data, ev.len)
                  || (p->ctl && in_range(p->ctl, IM_WS_MAX_CONTROL, ev.data,
                                         ev.len))
                  || ev.len == 0);
        }

        add(r, rc, &ev, base + used);

        if (rc == IM_WS_ERROR) {
            /* an error sticks and consumes nothing */
            rc = im_ws_parse(p, buf + used, len - used, &n, &ev);
            CHECK(rc == IM_WS_ERROR && n == 0);
            CHECK(ev.code == r->recs[r->n - 1].code);
            live = 0;
            break;
        }
    }

    free(buf);

    return live;
}


/* the stream whole (chunk 0) or in chunks of that size */

static void
run(int server, size_t max, const uint8_t *s, size_t len, size_t chunk,
    recs_t *r)
{
    size_t          off, piece;
    im_ws_parser_t  p;

    im_ws_parser_init(&p, server, max);

    if (chunk == 0) {
        feed(&p, s, len, 0, r);

    } else {
        for (off = 0; off < len; off += piece) {
            piece = (chunk < len - off) ? chunk : len - off;

            if (!feed(&p, s + off, piece, off, r)) {
                break;
            }
        }
    }

    im_ws_parser_free(&p);
}


static void
run_two(int server, size_t max, const uint8_t *s, size_t len, size_t at,
    recs_t *r)
{
    im_ws_parser_t  p;

    im_ws_parser_init(&p, server, max);

    if (feed(&p, s, at, 0, r)) {
        feed(&p, s + at, len - at, at, r);
    }

    im_ws_parser_free(&p);
}


static void
compare(const recs_t *a, const recs_t *b)
{
    size_t  i;

    CHECK(a->n == b->n);

    for (i = 0; i < a->n; i++) {
        CHECK(a->recs[i].rc == b->recs[i].rc);
        CHECK(a->recs[i].opcode == b->recs[i].opcode);
        CHECK(a->recs[i].code == b->recs[i].code);
        CHECK(a->recs[i].len == b->recs[i].len);
        CHECK(a->recs[i].end == b->recs[i].end);
        CHECK(memcmp(a->recs[i].data, b->recs[i].data, a->recs[i].len) == 0);
    }
}


/*
 * The model: what RFC 6455 says a sequence of well-delimited frames
 * gives, written independently of the parser's state machine.
 */

typedef struct {
    int       op;
    int       fin;
    int       rsv;
    uint8_t  *payload;
    size_t    len;
} frame_t;


static int
model_close(const uint8_t *pl, size_t len, recs_t *r)
{
    im_ws_event_t  ev;
    unsigned       code;

    memset(&ev, 0, sizeof(ev));
    ev.opcode = IM_WS_OP_CLOSE;

    if (len == 0) {
        ev.code = 1005;
        add(r, IM_WS_CLOSE, &ev, 0);
        return 1;
    }

    code = len >= 2 ? ((unsigned) pl[0] << 8 | pl[1]) : 0;

    if (len == 1
        || !((code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014)
             || (code >= 3000 && code <= 4999)))
    {
        ev.code = 1002;
        add(r, IM_WS_ERROR, &ev, 0);
        return 0;
    }

    if (!im_utf8_valid(pl + 2, len - 2)) {
        ev.code = 1007;
        add(r, IM_WS_ERROR, &ev, 0);
        return 0;
    }

    ev.code = (uint16_t) code;
    ev.data = (uint8_t *) pl + 2;
    ev.len = len - 2;
    add(r, IM_WS_CLOSE, &ev, 0);

    return 1;
}


static void
model(const frame_t *f, size_t nf, size_t max, size_t payloads, recs_t *r)
{
    size_t          i, acc_len;
    int             msg_op;
    uint8_t        *acc;
    im_ws_event_t   ev;

    acc = malloc(payloads ? payloads : 1);
    CHECK(acc != NULL);
    acc_len = 0;
    msg_op = 0;

    for (i = 0; i < nf; i++) {
        memset(&ev, 0, sizeof(ev));
        ev.code = 1002;

        if (f[i].rsv) {
            add(r, IM_WS_ERROR, &ev, 0);
            break;
        }

        if (f[i].op >= 8) {
            if (f[i].op > 10 || !f[i].fin || f[i].len > 125) {
                add(r, IM_WS_ERROR, &ev, 0);
                break;
            }

            if (f[i].op == IM_WS_OP_CLOSE) {
                if (!model_close(f[i].payload, f[i].len, r)) {
                    break;
                }

                continue;
            }

            ev.code = 0;
            ev.opcode = f[i].op;
            ev.data = f[i].payload;
            ev.len = f[i].len;
            add(r, f[i].op == IM_WS_OP_PING ? IM_WS_PING : IM_WS_PONG, &ev,
                0);
            continue;
        }

        if (f[i].op > 2 || (f[i].op == 0) != (msg_op != 0)) {
            add(r, IM_WS_ERROR, &ev, 0);
            break;
        }

        if (f[i].len > max - acc_len) {
            ev.code = 1009;
            add(r, IM_WS_ERROR, &ev, 0);
            break;
        }

        if (f[i].len) {
            memcpy(acc + acc_len, f[i].payload, f[i].len);
            acc_len += f[i].len;
        }

        if (f[i].op != 0) {
            msg_op = f[i].op;
        }

        if (f[i].fin) {
            ev.code = 0;
            ev.opcode = msg_op;
            ev.data = acc;
            ev.len = acc_len;
            add(r, IM_WS_MESSAGE, &ev, 0);
            acc_len = 0;
            msg_op = 0;
        }
    }

    free(acc);
}


/* the parser's events against the model's, offsets aside */

static void
compare_model(const recs_t *got, const recs_t *want)
{
    size_t  i;

    CHECK(got->n == want->n);

    for (i = 0; i < got->n; i++) {
        CHECK(got->recs[i].rc == want->recs[i].rc);
        CHECK(got->recs[i].code == want->recs[i].code);

        if (want->recs[i].rc != IM_WS_ERROR) {
            CHECK(got->recs[i].opcode == want->recs[i].opcode);
            CHECK(got->recs[i].len == want->recs[i].len);
            CHECK(memcmp(got->recs[i].data, want->recs[i].data,
                         got->recs[i].len) == 0);
        }
    }
}


/*
 * Frames from bytes: [FIN:1 RSV:3 opcode:4] [len8] then, when len8 is
 * 0xff, [len16 BE] + 100 (so that lengths past 125 and 65535 test the
 * longer header forms); the payload is what follows, or a filler when
 * the input ends first.  Any RSV bit in the byte sets RSV1 on the wire.
 */

static void
structured(int server, size_t max, const uint8_t *d, size_t len)
{
    static const uint8_t  mask[4] = { 0xa5, 0x5a, 0x0f, 0xf0 };

    frame_t   f[64];
    int       owned[64];
    size_t    nf, pos, flen, total, payloads, n, i;
    uint8_t  *stream, *s;
    recs_t    got, want;

    nf = 0;
    pos = 0;
    total = 0;
    payloads = 0;

    while (pos < len && nf < 64) {
        f[nf].fin = (d[pos] & 0x80) != 0;
        f[nf].rsv = (d[pos] & 0x70) != 0;
        f[nf].op = d[pos] & 0x0f;
        pos++;

        flen = (pos < len) ? d[pos++] : 0;

        if (flen == 0xff && len - pos >= 2) {
            flen = ((size_t) d[pos] << 8 | d[pos + 1]) + 100;
            pos += 2;
        }

        f[nf].len = flen;

        if (flen <= len - pos) {
            f[nf].payload = (uint8_t *) d + pos;
            owned[nf] = 0;
            pos += flen;

        } else {
            f[nf].payload = malloc(flen);
            CHECK(f[nf].payload != NULL);
            memset(f[nf].payload, (int) (nf * 37 + 1), flen);
            owned[nf] = 1;
            pos = len;
        }

        total += IM_WS_MAX_HEADER + flen;
        payloads += flen;
        nf++;
    }

    stream = malloc(total ? total : 1);
    CHECK(stream != NULL);

    s = stream;

    for (i = 0; i < nf; i++) {
        if (server) {
            n = im_ws_build_masked(s, f[i].op, f[i].fin, f[i].payload,
                                   f[i].len, mask);

        } else {
            n = im_ws_header(s, f[i].op, f[i].fin, f[i].len);

            if (f[i].len) {
                memcpy(s + n, f[i].payload, f[i].len);
            }

            n += f[i].len;
        }

        if (f[i].rsv) {
            s[0] |= 0x40;
        }

        s += n;
    }

    memset(&got, 0, sizeof(got));
    memset(&want, 0, sizeof(want));

    run(server, max, stream, (size_t) (s - stream), 0, &got);
    model(f, nf, max, payloads, &want);
    compare_model(&got, &want);

    free_recs(&got);
    free_recs(&want);

    for (i = 0; i < nf; i++) {
        if (owned[i]) {
            free(f[i].payload);
        }
    }

    free(stream);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int             server;
    size_t          max, len, at;
    recs_t          whole, two, bytes;
    const uint8_t  *s;

    if (size < 3) {
        return 0;
    }

    server = data[0] & 1;
    max = maxes[(data[0] >> 1) & 7];
    s = data + 3;
    len = size - 3;

    if (data[0] & 0x80) {
        structured(server, max, s, len);
        return 0;
    }

    at = ((size_t) data[1] << 8 | data[2]) % (len + 1);

    memset(&whole, 0, sizeof(whole));
    memset(&two, 0, sizeof(two));
    memset(&bytes, 0, sizeof(bytes));

    run(server, max, s, len, 0, &whole);
    run_two(server, max, s, len, at, &two);
    compare(&whole, &two);

    if (len <= 512 || (data[0] & 0x10)) {
        run(server, max, s, len, 1, &bytes);
        compare(&whole, &bytes);
    }

    free_recs(&whole);
    free_recs(&two);
    free_recs(&bytes);

    return 0;
}
