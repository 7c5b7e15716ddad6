
/*
 * test_wsframe.c: unit tests of the RFC 6455 frame layer and the UTF-8
 * validator (src/ngx_im_wsframe.c).
 *
 * Each test stream is fed whole, one byte per call and in chunks of a
 * few sizes, each chunk in its own exact-size buffer; every way must
 * give the expected events, with the same payloads, at the same stream
 * offsets.  Streams are built with the module's own builders, whose
 * bytes are checked first.
 */


#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ngx_im_wsframe.h"
#include "tap.h"


#define MAX_EVENTS   16
#define BIG          70000


/* an event as seen by a test: the payload is copied out */

typedef struct {
    im_ws_rc_t   rc;
    int          opcode;
    uint16_t     code;
    size_t       len;
    uint8_t     *data;
    size_t       end;      /* stream offset just past the event */
} rec_t;


/* what a test expects; data NULL means "don't check the bytes" */

typedef struct {
    im_ws_rc_t    rc;
    int           opcode;
    uint16_t      code;
    const void   *data;
    size_t        len;
    size_t        end;     /* 0: don't check */
} want_t;


/* the stream under construction */

static uint8_t  stream[BIG * 2];
static size_t   slen;

static const uint8_t  mask1[4] = { 0x37, 0xfa, 0x21, 0x3d };
static const uint8_t  mask0[4] = { 0, 0, 0, 0 };


static void
reset(void)
{
    slen = 0;
}


/* a client frame (masked) */

static void
cframe(int opcode, int fin, const void *payload, size_t len)
{
    slen += im_ws_build_masked(stream + slen, opcode, fin, payload, len,
                               mask1);
}


/* a server frame (unmasked) */

static void
sframe(int opcode, int fin, const void *payload, size_t len)
{
    slen += im_ws_header(stream + slen, opcode, fin, len);

    if (len) {
        memcpy(stream + slen, payload, len);
    }

    slen += len;
}


static void
raw(const void *bytes, size_t len)
{
    memcpy(stream + slen, bytes, len);
    slen += len;
}


static const char *
rc_name(im_ws_rc_t rc)
{
    static const char  *names[] = {
        "AGAIN", "MESSAGE", "PING", "PONG", "CLOSE", "ERROR"
    };

    return (unsigned) rc <= IM_WS_ERROR ? names[rc] : "?";
}


/*
 * Feed the stream in chunks of `chunk` bytes (0: all at once), each in
 * its own exact-size buffer, and record the events.  After an error one
 * more call must repeat it without consuming anything.  With renew, a
 * parser that a chunk leaves idle is freed and a new one taken for the
 * next, as the WebSocket transport does between reads.
 */

static size_t
run(int server, size_t max, size_t chunk, int renew, rec_t *recs,
    int *sane)
{
    size_t           off, clen, used, total, nrec;
    uint8_t         *buf;
    im_ws_rc_t       rc;
    im_ws_event_t    ev;
    im_ws_parser_t   p;

    im_ws_parser_init(&p, server, max);

    nrec = 0;
    total = 0;
    *sane = 1;

    for (off = 0; off < slen || (off == 0 && slen == 0); off += clen) {
        clen = chunk ? chunk : slen;
        if (clen > slen - off) {
            clen = slen - off;
        }

        buf = tap_dup(stream + off, clen);
        used = 0;

        for ( ;; ) {
            rc = im_ws_parse(&p, buf + used, clen - used, &total, &ev);

            if (total > clen - used) {
                tap_diag("consumed %zu of %zu", total, clen - used);
                *sane = 0;
                break;
            }

            used += total;

            if (rc == IM_WS_AGAIN) {
                if (used != clen) {
                    tap_diag("AGAIN with %zu bytes left", clen - used);
                    *sane = 0;
                }

                break;
            }

            if (nrec == MAX_EVENTS) {
                *sane = 0;
                break;
            }

            if (rc != IM_WS_ERROR && ev.data == NULL) {
                tap_diag("event with a NULL data pointer");
                *sane = 0;
                break;
            }

            recs[nrec].rc = rc;
            recs[nrec].opcode = ev.opcode;
            recs[nrec].code = ev.code;
            recs[nrec].len = ev.len;
            recs[nrec].data = tap_dup(ev.data, ev.len);
            recs[nrec].end = off + used;
            nrec++;

            if (rc == IM_WS_ERROR) {
                rc = im_ws_parse(&p, buf + used, clen - used, &total, &ev);

                if (rc != IM_WS_ERROR || total != 0
                    || ev.code != recs[nrec - 1].code)
                {
                    tap_diag("the error is not sticky");
                    *sane = 0;
                }

                free(buf);
                goto done;
            }
        }

        free(buf);

        if (!*sane || slen == 0) {
            break;
        }

        if (renew && im_ws_parser_idle(&p)) {
            im_ws_parser_free(&p);
            memset(&p, 0xa5, sizeof(im_ws_parser_t));
            im_ws_parser_init(&p, server, max);
        }
    }

done:

    im_ws_parser_free(&p);

    return nrec;
}


static void
free_recs(rec_t *recs, size_t n)
{
    size_t  i;

    for (i = 0; i < n; i++) {
        free(recs[i].data);
    }
}


static int
match(const rec_t *got, size_t ngot, const want_t *want, size_t nwant,
    const char *how)
{
    size_t  i;

    if (ngot != nwant) {
        tap_diag("%s: %zu events, want %zu", how, ngot, nwant);

        for (i = 0; i < ngot; i++) {
            tap_diag("  got %s opcode %d code %u len %zu end %zu",
                     rc_name(got[i].rc), got[i].opcode, got[i].code,
                     got[i].len, got[i].end);
        }

        return 0;
    }

    for (i = 0; i < ngot; i++) {
        if (got[i].rc != want[i].rc
            || (want[i].rc != IM_WS_ERROR && got[i].opcode != want[i].opcode)
            || got[i].code != want[i].code
            || (want[i].end && got[i].end != want[i].end)
            || (want[i].data
                && (got[i].len != want[i].len
                    || memcmp(got[i].data, want[i].data, want[i].len) != 0)))
        {
            tap_diag("%s: event %zu: got %s opcode %d code %u len %zu end %zu"
                     ", want %s opcode %d code %u len %zu end %zu", how, i,
                     rc_name(got[i].rc), got[i].opcode, got[i].code,
                     got[i].len, got[i].end, rc_name(want[i].rc),
                     want[i].opcode, want[i].code, want[i].len, want[i].end);
            return 0;
        }
    }

    return 1;
}


static int
same(const rec_t *a, size_t na, const rec_t *b, size_t nb)
{
    size_t  i;

    if (na != nb) {
        return 0;
    }

    for (i = 0; i < na; i++) {
        if (a[i].rc != b[i].rc || a[i].opcode != b[i].opcode
            || a[i].code != b[i].code || a[i].len != b[i].len
            || a[i].end != b[i].end
            || memcmp(a[i].data, b[i].data, a[i].len) != 0)
        {
            return 0;
        }
    }

    return 1;
}


/*
 * The stream gives the wanted events whole, and identical ones one byte
 * at a time and in chunks of 2, 3, 5 and 64 bytes, with one parser and
 * with a new one whenever a chunk leaves it idle: two test lines.
 */

static void
expect(const char *name, int server, size_t max, const want_t *want,
    size_t nwant)
{
    static const size_t  chunks[] = { 1, 2, 3, 5, 64 };

    rec_t    whole[MAX_EVENTS], part[MAX_EVENTS];
    size_t   nwhole, npart, i;
    int      sane, ok, renew;
    char     how[32];

    nwhole = run(server, max, 0, 0, whole, &sane);
    tap_ok(sane && match(whole, nwhole, want, nwant, "whole"),
           "%s: whole stream", name);

    ok = 1;

    for (i = 0; i < 2 * sizeof(chunks) / sizeof(chunks[0]) && ok; i++) {
        renew = i & 1;
        npart = run(server, max, chunks[i / 2], renew, part, &sane);
        snprintf(how, sizeof(how), "chunks of %zu%s", chunks[i / 2],
                 renew ? ", renewed" : "");

        if (!sane || !same(whole, nwhole, part, npart)) {
            match(part, npart, want, nwant, how);
            tap_diag("%s: not the same events as the whole stream", how);
            ok = 0;
        }

        free_recs(part, npart);
    }

    tap_ok(ok, "%s: byte by byte and in chunks, the same events", name);

    free_recs(whole, nwhole);
}


#define EXPECT(name, server, max, ...)                                        \
    do {                                                                      \
        static const want_t  w_[] = { __VA_ARGS__ };                          \
        expect(name, server, max, w_, sizeof(w_) / sizeof(w_[0]));           \
    } while (0)

#define EXPECT_NONE(name, server, max)                                        \
    expect(name, server, max, NULL, 0)

#define MSG(op, s)    { IM_WS_MESSAGE, op, 0, s, sizeof(s) - 1, 0 }
#define PING(s)       { IM_WS_PING, IM_WS_OP_PING, 0, s, sizeof(s) - 1, 0 }
#define PONG(s)       { IM_WS_PONG, IM_WS_OP_PONG, 0, s, sizeof(s) - 1, 0 }
#define CLOSE(c, s)   { IM_WS_CLOSE, IM_WS_OP_CLOSE, c, s, sizeof(s) - 1, 0 }
#define ERR(c, end)   { IM_WS_ERROR, 0, c, NULL, 0, end }


static void
test_builders(void)
{
    uint8_t  out[IM_WS_MAX_HEADER + 8];
    size_t   n;

    n = im_ws_header(out, IM_WS_OP_BINARY, 1, 0);
    tap_bytes(out, n, LIT("\x82\x00"), "header: binary, FIN, empty");
    n = im_ws_header(out, IM_WS_OP_TEXT, 0, 125);
    tap_bytes(out, n, LIT("\x01\x7d"), "header: text, no FIN, 125 (7-bit)");
    n = im_ws_header(out, IM_WS_OP_BINARY, 1, 126);
    tap_bytes(out, n, LIT("\x82\x7e\x00\x7e"), "header: 126 (16-bit)");
    n = im_ws_header(out, IM_WS_OP_BINARY, 1, 65535);
    tap_bytes(out, n, LIT("\x82\x7e\xff\xff"), "header: 65535 (16-bit)");
    n = im_ws_header(out, IM_WS_OP_BINARY, 1, 65536);
    tap_bytes(out, n, LIT("\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
              "header: 65536 (64-bit)");
    n = im_ws_header(out, IM_WS_OP_CLOSE, 1, 0x0102030405060708ULL);
    tap_bytes(out, n, LIT("\x88\x7f\x01\x02\x03\x04\x05\x06\x07\x08"),
              "header: close, 64-bit length byte order");
    n = im_ws_header(out, IM_WS_OP_PONG, 1, 3);
    tap_bytes(out, n, LIT("\x8a\x03"), "header: pong");

    n = im_ws_build_masked(out, IM_WS_OP_BINARY, 1, U8("abcde"), 5,
                           U8("\x01\x02\x03\x04"));
    tap_bytes(out, n,
              LIT("\x82\x85\x01\x02\x03\x04" "\x60\x60\x60\x60\x64"),
              "masked frame: mask bit, key, payload XOR key");

    n = im_ws_build_masked(out, IM_WS_OP_PING, 1, NULL, 0, mask1);
    tap_bytes(out, n, LIT("\x89\x80\x37\xfa\x21\x3d"), "masked empty ping");

    n = im_ws_close_payload(out, 1000, U8("bye"), 3);
    tap_bytes(out, n, LIT("\x03\xe8" "bye"), "close payload 1000 bye");
}


static void
test_basic(void)
{
    reset();
    cframe(IM_WS_OP_BINARY, 1, "hello", 5);
    EXPECT("server: masked binary frame", 1, 1024,
           { IM_WS_MESSAGE, IM_WS_OP_BINARY, 0, "hello", 5, 11 });

    reset();
    cframe(IM_WS_OP_TEXT, 1, "h\xc3\xa9", 3);
    EXPECT("server: masked text frame is a message", 1, 1024,
           MSG(IM_WS_OP_TEXT, "h\xc3\xa9"));

    reset();
    sframe(IM_WS_OP_BINARY, 1, "hello", 5);
    EXPECT("server: unmasked client frame is 1002", 1, 1024, ERR(1002, 2));

    reset();
    sframe(IM_WS_OP_BINARY, 1, "hello", 5);
    EXPECT("client: unmasked server frame", 0, 1024,
           { IM_WS_MESSAGE, IM_WS_OP_BINARY, 0, "hello", 5, 7 });

    reset();
    cframe(IM_WS_OP_BINARY, 1, "hello", 5);
    EXPECT("client: masked server frame is 1002", 0, 1024, ERR(1002, 2));

    reset();
    cframe(IM_WS_OP_PING, 1, "p", 1);
    EXPECT("client: masked ping is 1002", 0, 1024, ERR(1002, 2));

    reset();
    cframe(IM_WS_OP_BINARY, 1, "", 0);
    cframe(IM_WS_OP_TEXT, 1, "", 0);
    EXPECT("server: empty messages", 1, 0,
           { IM_WS_MESSAGE, IM_WS_OP_BINARY, 0, "", 0, 6 },
           { IM_WS_MESSAGE, IM_WS_OP_TEXT, 0, "", 0, 12 });

    reset();
    cframe(IM_WS_OP_PING, 1, "ping!", 5);
    cframe(IM_WS_OP_BINARY, 1, "\x01\x02", 2);
    cframe(IM_WS_OP_PONG, 1, "", 0);
    cframe(IM_WS_OP_CLOSE, 1, "\x03\xe8" "bye", 5);
    EXPECT("server: ping, message, pong, close in one stream", 1, 1024,
           { IM_WS_PING, IM_WS_OP_PING, 0, "ping!", 5, 11 },
           { IM_WS_MESSAGE, IM_WS_OP_BINARY, 0, "\x01\x02", 2, 19 },
           { IM_WS_PONG, IM_WS_OP_PONG, 0, "", 0, 25 },
           { IM_WS_CLOSE, IM_WS_OP_CLOSE, 1000, "bye", 3, 36 });

    reset();
    EXPECT_NONE("empty stream: no event", 1, 1024);

    reset();
    cframe(IM_WS_OP_BINARY, 1, "abc", 3);
    slen -= 1;
    EXPECT_NONE("server: frame short of one byte: no event", 1, 1024);
}


static void
test_lengths(void)
{
    static uint8_t  payload[BIG];
    size_t          i;

    static const size_t  sizes[] = { 125, 126, 127, 65535, 65536, BIG };
    static const size_t  hlen[] = { 2, 4, 4, 4, 10, 10 };

    char    name[96];
    want_t  w;

    for (i = 0; i < sizeof(payload); i++) {
        payload[i] = (uint8_t) (i * 31 + (i >> 8));
    }

    for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        w.rc = IM_WS_MESSAGE;
        w.opcode = IM_WS_OP_BINARY;
        w.code = 0;
        w.data = payload;
        w.len = sizes[i];

        reset();
        cframe(IM_WS_OP_BINARY, 1, payload, sizes[i]);
        w.end = hlen[i] + 4 + sizes[i];
        tap_ok(slen == w.end && (stream[1] & 0x7f) == (hlen[i] == 2 ? 125
                                 : hlen[i] == 4 ? 126 : 127),
               "%zu-byte payload takes a %s length", sizes[i],
               hlen[i] == 2 ? "7-bit" : hlen[i] == 4 ? "16-bit" : "64-bit");
        snprintf(name, sizeof(name), "server: masked %zu-byte frame",
                 sizes[i]);
        expect(name, 1, BIG, &w, 1);

        reset();
        sframe(IM_WS_OP_BINARY, 1, payload, sizes[i]);
        w.end = hlen[i] + sizes[i];
        snprintf(name, sizeof(name), "client: unmasked %zu-byte frame",
                 sizes[i]);
        expect(name, 0, BIG, &w, 1);
    }

    /* a 16-bit length for a short payload is not minimal, but harmless */
    reset();
    raw("\x82\xfe\x00\x03" "\x00\x00\x00\x00" "abc", 11);
    EXPECT("server: 16-bit length 3 is accepted", 1, 1024,
           MSG(IM_WS_OP_BINARY, "abc"));

    reset();
    raw("\x82\xff\x80\x00\x00\x00\x00\x00\x00\x01", 10);
    EXPECT("server: 64-bit length with the top bit set is 1002", 1,
           (size_t) -1, ERR(1002, 10));

    reset();
    raw("\x82\x7f\x80\x00\x00\x00\x00\x00\x00\x00", 10);
    EXPECT("client: 64-bit length with the top bit set is 1002", 0,
           (size_t) -1, ERR(1002, 10));
}


static void
test_fragments(void)
{
    reset();
    cframe(IM_WS_OP_TEXT, 0, "Hel", 3);
    cframe(IM_WS_OP_PING, 1, "p", 1);
    cframe(IM_WS_OP_CONT, 0, "lo ", 3);
    cframe(IM_WS_OP_PONG, 1, "", 0);
    cframe(IM_WS_OP_CONT, 1, "world", 5);
    EXPECT("server: fragmented text with a ping and a pong between", 1, 64,
           { IM_WS_PING, IM_WS_OP_PING, 0, "p", 1, 16 },
           { IM_WS_PONG, IM_WS_OP_PONG, 0, "", 0, 31 },
           { IM_WS_MESSAGE, IM_WS_OP_TEXT, 0, "Hello world", 11, 42 });

    reset();
    sframe(IM_WS_OP_BINARY, 0, "ab", 2);
    sframe(IM_WS_OP_CONT, 0, "", 0);
    sframe(IM_WS_OP_CLOSE, 1, "\x03\xe9", 2);
    sframe(IM_WS_OP_CONT, 1, "cd", 2);
    sframe(IM_WS_OP_BINARY, 1, "ef", 2);
    EXPECT("client: fragmented binary, empty fragment, close between", 0,
           64, CLOSE(1001, ""), MSG(IM_WS_OP_BINARY, "abcd"),
           MSG(IM_WS_OP_BINARY, "ef"));

    reset();
    cframe(IM_WS_OP_BINARY, 0, "", 0);
    cframe(IM_WS_OP_CONT, 1, "", 0);
    EXPECT("server: message of two empty fragments", 1, 0,
           { IM_WS_MESSAGE, IM_WS_OP_BINARY, 0, "", 0, 12 });

    reset();
    cframe(IM_WS_OP_CONT, 1, "x", 1);
    EXPECT("server: CONT without a started message is 1002", 1, 64,
           ERR(1002, 2));

    reset();
    cframe(IM_WS_OP_BINARY, 1, "x", 1);
    cframe(IM_WS_OP_CONT, 0, "x", 1);
    EXPECT("server: CONT after a whole message is 1002", 1, 64,
           MSG(IM_WS_OP_BINARY, "x"), ERR(1002, 9));

    reset();
    cframe(IM_WS_OP_TEXT, 0, "x", 1);
    cframe(IM_WS_OP_BINARY, 1, "y", 1);
    EXPECT("server: binary frame inside a fragmented text is 1002", 1, 64,
           ERR(1002, 9));

    reset();
    cframe(IM_WS_OP_BINARY, 0, "x", 1);
    cframe(IM_WS_OP_BINARY, 0, "y", 1);
    EXPECT("server: new data frame inside a fragmented message is 1002", 1,
           64, ERR(1002, 9));

    reset();
    cframe(IM_WS_OP_TEXT, 0, "x", 1);
    cframe(IM_WS_OP_CONT, 1, "y", 1);
    cframe(IM_WS_OP_CONT, 1, "z", 1);
    EXPECT("server: CONT after the last fragment is 1002", 1, 64,
           MSG(IM_WS_OP_TEXT, "xy"), ERR(1002, 16));
}


static void
test_header_errors(void)
{
    static const uint8_t  bad_ops[] = { 3, 4, 5, 6, 7, 11, 12, 13, 14, 15 };

    size_t   i;
    char     name[64];
    want_t   w = ERR(1002, 2);

    for (i = 0; i < 3; i++) {
        reset();
        cframe(IM_WS_OP_BINARY, 1, "x", 1);
        stream[0] |= (uint8_t) (0x40 >> i);
        snprintf(name, sizeof(name), "server: RSV%zu set is 1002", i + 1);
        expect(name, 1, 64, &w, 1);
    }

    reset();
    cframe(IM_WS_OP_PING, 1, "x", 1);
    stream[0] |= 0x70;
    EXPECT("server: RSV bits on a ping are 1002", 1, 64, ERR(1002, 2));

    for (i = 0; i < sizeof(bad_ops); i++) {
        reset();
        cframe(bad_ops[i], 1, "x", 1);
        snprintf(name, sizeof(name), "server: opcode %u is 1002",
                 bad_ops[i]);
        expect(name, 1, 64, &w, 1);
    }

    reset();
    sframe(11, 1, "", 0);
    EXPECT("client: opcode 11 is 1002", 0, 64, ERR(1002, 2));

    reset();
    cframe(IM_WS_OP_PING, 0, "x", 1);
    EXPECT("server: ping without FIN is 1002", 1, 64, ERR(1002, 2));

    reset();
    cframe(IM_WS_OP_CLOSE, 0, "", 0);
    EXPECT("server: close without FIN is 1002", 1, 64, ERR(1002, 2));

    reset();
    cframe(IM_WS_OP_TEXT, 0, "a", 1);
    cframe(IM_WS_OP_PONG, 0, "", 0);
    EXPECT("server: pong without FIN inside a message is 1002", 1, 64,
           ERR(1002, 9));

    reset();
    {
        static uint8_t  p126[126];

        cframe(IM_WS_OP_PING, 1, p126, 126);
    }
    EXPECT("server: ping of 126 bytes is 1002", 1, 4096, ERR(1002, 2));

    reset();
    raw("\x89\xff", 2);
    EXPECT("server: ping with a 64-bit length is 1002", 1, 4096,
           ERR(1002, 2));

    reset();
    {
        static uint8_t  p125[125];

        cframe(IM_WS_OP_PING, 1, p125, 125);
        cframe(IM_WS_OP_PONG, 1, p125, 125);
    }
    EXPECT("server: ping and pong of 125 bytes", 1, 16,
           { IM_WS_PING, IM_WS_OP_PING, 0, NULL, 125, 131 },
           { IM_WS_PONG, IM_WS_OP_PONG, 0, NULL, 125, 262 });
}


static void
test_too_big(void)
{
    static uint8_t  payload[300];

    reset();
    cframe(IM_WS_OP_BINARY, 1, payload, 100);
    EXPECT("server: frame of exactly max_message", 1, 100,
           { IM_WS_MESSAGE, IM_WS_OP_BINARY, 0, payload, 100, 106 });

    reset();
    cframe(IM_WS_OP_BINARY, 1, payload, 101);
    slen = 2;
    EXPECT("server: 7-bit length over max is 1009 at byte 2", 1, 100,
           ERR(1009, 2));

    reset();
    cframe(IM_WS_OP_BINARY, 1, payload, 300);
    slen = 4;
    EXPECT("server: 16-bit length over max is 1009 at byte 4", 1, 299,
           ERR(1009, 4));

    reset();
    raw("\x82\xff\x00\x00\x00\x01\x00\x00\x00\x00", 10);
    EXPECT("server: 64-bit length 2^32 is 1009 at byte 10", 1, 1 << 20,
           ERR(1009, 10));

    reset();
    raw("\x82\x7f\x7f\xff\xff\xff\xff\xff\xff\xff", 10);
    EXPECT("client: 64-bit length 2^63-1 is 1009 at byte 10", 0, 1 << 20,
           ERR(1009, 10));

    reset();
    cframe(IM_WS_OP_TEXT, 0, payload, 60);
    cframe(IM_WS_OP_CONT, 0, payload, 40);
    cframe(IM_WS_OP_CONT, 1, payload, 1);
    EXPECT("server: fragments adding up past max are 1009 at the header",
           1, 100, ERR(1009, 66 + 46 + 2));

    reset();
    cframe(IM_WS_OP_TEXT, 0, payload, 60);
    cframe(IM_WS_OP_PING, 1, payload, 100);
    cframe(IM_WS_OP_CONT, 1, payload, 40);
    EXPECT("server: fragments adding up to max, ping between", 1, 100,
           { IM_WS_PING, IM_WS_OP_PING, 0, payload, 100, 66 + 106 },
           { IM_WS_MESSAGE, IM_WS_OP_TEXT, 0, payload, 100,
             66 + 106 + 46 });

    reset();
    cframe(IM_WS_OP_BINARY, 1, payload, 1);
    EXPECT("server: max_message 0 refuses a 1-byte message", 1, 0,
           ERR(1009, 2));
}


static void
test_close(void)
{
    static const unsigned  valid[] = {
        1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013,
        1014, 3000, 3999, 4000, 4999
    };
    static const unsigned  invalid[] = {
        0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000,
        65535
    };

    uint8_t   pl[64], reason[60];
    size_t    i, n;
    char      name[64];
    want_t    w;
    int       good;

    reset();
    cframe(IM_WS_OP_CLOSE, 1, "", 0);
    EXPECT("server: empty close is 1005", 1, 64,
           { IM_WS_CLOSE, IM_WS_OP_CLOSE, 1005, "", 0, 6 });

    reset();
    cframe(IM_WS_OP_CLOSE, 1, "\x03", 1);
    EXPECT("server: close with 1 byte is 1002", 1, 64, ERR(1002, 7));

    for (i = 0; i < sizeof(valid) / sizeof(valid[0]); i++) {
        n = im_ws_close_payload(pl, (uint16_t) valid[i], U8("ok"), 2);

        reset();
        cframe(IM_WS_OP_CLOSE, 1, pl, n);

        w.rc = IM_WS_CLOSE;
        w.opcode = IM_WS_OP_CLOSE;
        w.code = (uint16_t) valid[i];
        w.data = "ok";
        w.len = 2;
        w.end = 10;
        snprintf(name, sizeof(name), "server: close code %u is valid",
                 valid[i]);
        expect(name, 1, 64, &w, 1);
    }

    for (i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++) {
        n = im_ws_close_payload(pl, (uint16_t) invalid[i], NULL, 0);

        reset();
        cframe(IM_WS_OP_CLOSE, 1, pl, n);

        w.rc = IM_WS_ERROR;
        w.code = 1002;
        w.data = NULL;
        w.end = 8;
        snprintf(name, sizeof(name), "server: close code %u is 1002",
                 invalid[i]);
        expect(name, 1, 64, &w, 1);
    }

    good = 1;

    for (i = 0; i < 65536; i++) {
        if (im_ws_close_code_valid((unsigned) i)
            != ((i >= 1000 && i <= 1003) || (i >= 1007 && i <= 1014)
                || (i >= 3000 && i <= 4999)))
        {
            good = 0;
        }
    }

    tap_ok(good, "im_ws_close_code_valid over every 16-bit code");

    reset();
    n = im_ws_close_payload(pl, 1000, U8("caf\xc3\xa9 \xe2\x82\xac"), 9);
    cframe(IM_WS_OP_CLOSE, 1, pl, n);
    EXPECT("server: close reason in UTF-8", 1, 64,
           CLOSE(1000, "caf\xc3\xa9 \xe2\x82\xac"));

    reset();
    n = im_ws_close_payload(pl, 1000, U8("\xce\xba\xe1\xbd\xb9\xcf\x83"
                                         "\xce\xbc\xce\xb5\xed\xa0\x80"
                                         "edited"), 20);
    cframe(IM_WS_OP_CLOSE, 1, pl, n);
    EXPECT("server: close reason not UTF-8 is 1007", 1, 64,
           ERR(1007, 28));

    reset();
    n = im_ws_close_payload(pl, 1000, U8("\xc3"), 1);
    sframe(IM_WS_OP_CLOSE, 1, pl, n);
    EXPECT("client: close reason truncated UTF-8 is 1007", 0, 64,
           ERR(1007, 5));

    reset();
    memset(reason, 'r', sizeof(reason));
    n = im_ws_close_payload(pl, 4999, reason, sizeof(reason));
    cframe(IM_WS_OP_CLOSE, 1, pl, n);
    cframe(IM_WS_OP_BINARY, 1, "after", 5);
    EXPECT("server: frames after a close are still parsed", 1, 64,
           { IM_WS_CLOSE, IM_WS_OP_CLOSE, 4999, NULL, 60, 68 },
           MSG(IM_WS_OP_BINARY, "after"));
}


/* idle between frames and messages only; never once failed */

static void
test_idle(void)
{
    uint8_t          buf[64];
    size_t           n, used;
    im_ws_rc_t       rc;
    im_ws_event_t    ev;
    im_ws_parser_t   p;

    im_ws_parser_init(&p, 1, 1024);
    tap_ok(im_ws_parser_idle(&p), "idle: a new parser");

    n = im_ws_build_masked(buf, IM_WS_OP_BINARY, 1, U8("abc"), 3, mask1);
    rc = im_ws_parse(&p, buf, 1, &used, &ev);
    tap_ok(rc == IM_WS_AGAIN && !im_ws_parser_idle(&p),
           "idle: not inside a header");
    rc = im_ws_parse(&p, buf + 1, 6, &used, &ev);
    tap_ok(rc == IM_WS_AGAIN && !im_ws_parser_idle(&p),
           "idle: not inside a payload");
    rc = im_ws_parse(&p, buf + 7, n - 7, &used, &ev);
    tap_ok(rc == IM_WS_MESSAGE && ev.len == 3 && im_ws_parser_idle(&p),
           "idle: after a message read in pieces (its buffer is free to "
           "go)");

    n = im_ws_build_masked(buf, IM_WS_OP_BINARY, 0, U8("ab"), 2, mask1);
    rc = im_ws_parse(&p, buf, n, &used, &ev);
    tap_ok(rc == IM_WS_AGAIN && !im_ws_parser_idle(&p),
           "idle: not between the fragments of a message");
    n = im_ws_build_masked(buf, IM_WS_OP_CONT, 1, U8("c"), 1, mask1);
    rc = im_ws_parse(&p, buf, n, &used, &ev);
    tap_ok(rc == IM_WS_MESSAGE && ev.len == 3 && im_ws_parser_idle(&p),
           "idle: after the last fragment");

    n = im_ws_build_masked(buf, IM_WS_OP_PING, 1, U8("pq"), 2, mask1);
    rc = im_ws_parse(&p, buf, n - 1, &used, &ev);
    tap_ok(rc == IM_WS_AGAIN && !im_ws_parser_idle(&p),
           "idle: not inside a control frame");
    rc = im_ws_parse(&p, buf + n - 1, 1, &used, &ev);
    tap_ok(rc == IM_WS_PING && ev.len == 2 && im_ws_parser_idle(&p),
           "idle: after a control frame read in pieces");

    buf[0] = 0x82;
    buf[1] = 0x02;      /* unmasked from a client */
    rc = im_ws_parse(&p, buf, 2, &used, &ev);
    tap_ok(rc == IM_WS_ERROR && !im_ws_parser_idle(&p),
           "idle: never once failed");

    im_ws_parser_free(&p);
}


/* ev->data points into the input for a whole frame, else into the
   parser's buffer, and the input is unmasked in place */

static void
test_zero_copy(void)
{
    uint8_t          buf[64];
    size_t           n, used;
    im_ws_rc_t       rc;
    im_ws_event_t    ev;
    im_ws_parser_t   p;

    im_ws_parser_init(&p, 1, 1024);

    n = im_ws_build_masked(buf, IM_WS_OP_BINARY, 1, U8("zero copy"), 9,
                           mask1);
    rc = im_ws_parse(&p, buf, n, &used, &ev);
    tap_ok(rc == IM_WS_MESSAGE && used == n && ev.data == buf + 6
           && ev.len == 9 && memcmp(buf + 6, "zero copy", 9) == 0,
           "whole frame: data points into the input, unmasked in place");

    n = im_ws_build_masked(buf, IM_WS_OP_PING, 1, U8("pp"), 2, mask1);
    rc = im_ws_parse(&p, buf, n, &used, &ev);
    tap_ok(rc == IM_WS_PING && ev.data == buf + 6 && ev.len == 2
           && memcmp(ev.data, "pp", 2) == 0, "whole ping: zero copy");

    n = im_ws_build_masked(buf, IM_WS_OP_BINARY, 1, U8("split"), 5, mask1);
    rc = im_ws_parse(&p, buf, 8, &used, &ev);
    tap_ok(rc == IM_WS_AGAIN && used == 8, "first part of a frame: AGAIN");
    rc = im_ws_parse(&p, buf + 8, n - 8, &used, &ev);
    tap_ok(rc == IM_WS_MESSAGE && used == n - 8 && ev.len == 5
           && memcmp(ev.data, "split", 5) == 0
           && (ev.data < buf || ev.data >= buf + sizeof(buf)),
           "split frame: data in the parser's buffer");

    /* header in one call, whole payload in the next: still zero copy */
    n = im_ws_build_masked(buf, IM_WS_OP_TEXT, 1, U8("later"), 5, mask1);
    rc = im_ws_parse(&p, buf, 6, &used, &ev);
    tap_ok(rc == IM_WS_AGAIN && used == 6, "header alone: AGAIN");
    rc = im_ws_parse(&p, buf + 6, 5, &used, &ev);
    tap_ok(rc == IM_WS_MESSAGE && ev.data == buf + 6 && ev.opcode == 1,
           "payload after its header: zero copy");

    rc = im_ws_parse(&p, buf, 0, &used, &ev);
    tap_ok(rc == IM_WS_AGAIN && used == 0, "empty input: AGAIN");

    im_ws_parser_free(&p);
    im_ws_parser_free(&p);

    /* unmasked side: the input is left as it is */
    im_ws_parser_init(&p, 0, 1024);
    n = im_ws_build_masked(buf, IM_WS_OP_BINARY, 1, U8("abc"), 3, mask0);
    buf[1] &= 0x7f;
    memmove(buf + 2, buf + 6, 3);
    rc = im_ws_parse(&p, buf, 5, &used, &ev);
    tap_ok(rc == IM_WS_MESSAGE && ev.data == buf + 2 && ev.len == 3
           && memcmp(ev.data, "abc", 3) == 0, "client side: zero copy");
    im_ws_parser_free(&p);
}


typedef struct {
    const char  *bytes;
    size_t       len;
    int          valid;
    const char  *name;
} utf8_case_t;

#define V(s, name)   { s, sizeof(s) - 1, 1, name }
#define X(s, name)   { s, sizeof(s) - 1, 0, name }


static void
test_utf8(void)
{
    static const utf8_case_t  cases[] = {
        V("", "empty"),
        V("Hello-\x7f", "ASCII"),
        V("\x00", "NUL"),
        V("\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5", "kosme (Greek)"),
        V("\xc2\x80", "U+0080, first 2-byte"),
        V("\xdf\xbf", "U+07FF, last 2-byte"),
        V("\xe0\xa0\x80", "U+0800, first 3-byte"),
        V("\xed\x9f\xbf", "U+D7FF, before the surrogates"),
        V("\xee\x80\x80", "U+E000, after the surrogates"),
        V("\xef\xbf\xbd", "U+FFFD"),
        V("\xef\xbf\xbe\xef\xbf\xbf", "U+FFFE, U+FFFF noncharacters"),
        V("\xf0\x90\x80\x80", "U+10000, first 4-byte"),
        V("\xf4\x8f\xbf\xbf", "U+10FFFF, last code point"),
        V("\xf0\x9f\x98\x80 ok", "emoji then ASCII"),
        X("\x80", "lone continuation 0x80"),
        X("\xbf", "lone continuation 0xbf"),
        X("a\x80\x80\x80", "continuations after ASCII"),
        X("\xc0\x80", "overlong NUL (2 bytes)"),
        X("\xc0\xaf", "overlong '/' (2 bytes)"),
        X("\xc1\xbf", "overlong U+007F (2 bytes)"),
        X("\xe0\x80\xaf", "overlong '/' (3 bytes)"),
        X("\xe0\x9f\xbf", "overlong U+07FF (3 bytes)"),
        X("\xf0\x80\x80\xaf", "overlong '/' (4 bytes)"),
        X("\xf0\x8f\xbf\xbf", "overlong U+FFFF (4 bytes)"),
        X("\xf8\x88\x80\x80\x80", "5-byte sequence"),
        X("\xfc\x84\x80\x80\x80\x80", "6-byte sequence"),
        X("\xed\xa0\x80", "U+D800 high surrogate"),
        X("\xed\xad\xbf", "U+DB7F"),
        X("\xed\xb0\x80", "U+DC00 low surrogate"),
        X("\xed\xbf\xbf", "U+DFFF"),
        X("\xed\xa0\x80\xed\xb0\x80", "surrogate pair U+D800 U+DC00"),
        X("\xf4\x90\x80\x80", "U+110000"),
        X("\xf5\x80\x80\x80", "F5 lead"),
        X("\xf7\xbf\xbf\xbf", "U+1FFFFF"),
        X("\xfe", "FE"),
        X("\xff", "FF"),
        X("\xfe\xfe\xff\xff", "FE FE FF FF"),
        X("\xc2", "2-byte sequence missing its last byte"),
        X("\xe0\xa0", "3-byte sequence missing its last byte"),
        X("\xe1", "3-byte sequence missing two bytes"),
        X("\xf0\x90\x80", "4-byte sequence missing its last byte"),
        X("\xf4", "4-byte sequence missing three bytes"),
        X("\xc2\x41", "2-byte sequence cut by ASCII"),
        X("\xe1\x80\x41", "3-byte sequence cut by ASCII"),
        X("\xf1\x80\x80\xc0", "4-byte sequence cut by a lead byte"),
        X("\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80" "edited",
          "kosme-edited (Autobahn 6.3)"),
        X("\xce\xba\xe1\xbd", "kosme cut inside a character"),
    };

    size_t    i;
    uint8_t  *c;
    int       got;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        c = tap_dup(U8(cases[i].bytes), cases[i].len);
        got = im_utf8_valid(c, cases[i].len);
        free(c);

        tap_ok(got == cases[i].valid, "utf8 %s: %s", cases[i].name,
               cases[i].valid ? "valid" : "invalid");
    }
}


/* every code point round trip: encoded by hand here, validated there */

static void
test_utf8_all(void)
{
    uint32_t  cp;
    uint8_t   b[4];
    size_t    n;
    int       good, want;

    good = 1;

    for (cp = 0; cp <= 0x10ffff && good; cp++) {
        if (cp < 0x80) {
            b[0] = (uint8_t) cp;
            n = 1;

        } else if (cp < 0x800) {
            b[0] = (uint8_t) (0xc0 | (cp >> 6));
            b[1] = (uint8_t) (0x80 | (cp & 0x3f));
            n = 2;

        } else if (cp < 0x10000) {
            b[0] = (uint8_t) (0xe0 | (cp >> 12));
            b[1] = (uint8_t) (0x80 | ((cp >> 6) & 0x3f));
            b[2] = (uint8_t) (0x80 | (cp & 0x3f));
            n = 3;

        } else {
            b[0] = (uint8_t) (0xf0 | (cp >> 18));
            b[1] = (uint8_t) (0x80 | ((cp >> 12) & 0x3f));
            b[2] = (uint8_t) (0x80 | ((cp >> 6) & 0x3f));
            b[3] = (uint8_t) (0x80 | (cp & 0x3f));
            n = 4;
        }

        want = !(cp >= 0xd800 && cp <= 0xdfff);

        if (im_utf8_valid(b, n) != want) {
            tap_diag("U+%04X", (unsigned) cp);
            good = 0;
        }

        /* every strict prefix of a multi-byte character is invalid */
        if (n > 1 && im_utf8_valid(b, n - 1)) {
            tap_diag("prefix of U+%04X", (unsigned) cp);
            good = 0;
        }
    }

    tap_ok(good, "utf8: every code point valid but the surrogates, "
           "no prefix valid");
}


void
test_wsframe(void)
{
    test_builders();
    test_basic();
    test_lengths();
    test_fragments();
    test_header_errors();
    test_too_big();
    test_close();
    test_zero_copy();
    test_idle();
    test_utf8();
    test_utf8_all();
}
