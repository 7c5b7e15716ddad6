
/*
 * test_traffic.c: unit tests of the traffic records
 * (src/ngx_im_traffic.c).
 *
 * Each of 'D', 'K', 'J', 'S', 'A', 'R', 'L', 'W' and 'C' is checked byte for
 * byte as built and field by field as parsed, then at every length around each
 * acceptance boundary of ngx_im_traffic.h (one byte short fails, the
 * exact length passes), with origins of 0 and 255 bytes, every flags
 * value, and type bytes the format does not have.  Every parse reads
 * from a buffer of the record's exact size, so the ASan build of these
 * tests catches a read past the end.
 */


#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ngx_im_traffic.h"
#include "tap.h"


/* a worker id as ngx_im_module.c makes it: node/instance:pid */
#define ORIGIN      "n1/0123456789abcdef:4242"
#define OLEN        "\x18"
#define ENTRY       "entry bytes"

#define SEQ         0x0102030405060708ULL
#define SEQ_BYTES   "\x01\x02\x03\x04\x05\x06\x07\x08"
#define TOKEN       0xf1e2d3c4b5a69788ULL
#define TOKEN_BYTES "\xf1\xe2\xd3\xc4\xb5\xa6\x97\x88"
#define NONCE       0x00001234deadbeefULL
#define NONCE_BYTES "\x00\x00\x12\x34\xde\xad\xbe\xef"


static uint8_t  *cur;
static uint8_t   long_origin[IM_TRAFFIC_ORIGIN_MAX];


/* parse from an exact-size copy, kept until the next parse */

static im_rc_t
parse(const uint8_t *p, size_t len, im_traffic_t *t)
{
    free(cur);
    cur = tap_dup(p, len);

    return im_traffic_parse(cur, len, t);
}


/* the head of the last parse: type, flags, origin in place */

static int
head_is(const im_traffic_t *t, uint8_t type, uint8_t flags,
    const uint8_t *origin, size_t olen)
{
    return t->type == type && t->flags == flags
           && t->origin == cur + 2 && t->origin_len == olen
           && (olen == 0 || memcmp(t->origin, origin, olen) == 0);
}


/* what the rules of ngx_im_traffic.h give for len bytes of a record of
 * this type with an origin of olen bytes */

static im_rc_t
expect(uint8_t type, size_t olen, size_t len)
{
    size_t  head;

    head = IM_TRAFFIC_HEAD_LEN(olen);

    if (len == 0) {
        return IM_ERR_EMPTY;
    }

    if (len < 3) {
        return IM_ERR_TRUNCATED;
    }

    if (len < head) {
        return IM_ERR_LENGTH;
    }

    switch (type) {
    case 'D':
    case 'A':
    case 'M':
        return (len - head < 8) ? IM_ERR_TRUNCATED : IM_OK;
    case 'K':
        return (len - head < 9) ? IM_ERR_TRUNCATED : IM_OK;
    case 'L':
        return (len - head < 2) ? IM_ERR_TRUNCATED : IM_OK;
    case 'W':
        return (len - head < 17 + IM_MSGID_LEN) ? IM_ERR_TRUNCATED : IM_OK;
    case 'C':
        return (len - head < IM_MSGID_LEN) ? IM_ERR_TRUNCATED : IM_OK;
    case 'J':
    case 'S':
    case 'R':
        return IM_OK;
    default:
        return IM_ERR_UNKNOWN_CMD;
    }
}


/* every prefix of a record (the whole one included) parses as expect()
 * says, with the type set whenever there is a byte */

static void
prefixes(const char *name, const uint8_t *rec, size_t len, size_t olen)
{
    size_t        n;
    im_rc_t       rc, want;
    im_traffic_t  t;
    int           ok;

    ok = 1;

    for (n = 0; n <= len; n++) {
        rc = parse(rec, n, &t);
        want = expect(rec[0], olen, n);

        if (rc != want || t.type != (n ? rec[0] : 0)) {
            tap_diag("%s: %zu of %zu bytes: got %s, want %s, type %d",
                     name, n, len, im_rc_str(rc), im_rc_str(want), t.type);
            ok = 0;
        }
    }

    tap_ok(ok, "%s: each of its %zu prefixes accepted or refused by the "
           "rules", name, len + 1);
}


static void
test_u64(void)
{
    uint8_t  b[8], *p;

    p = im_traffic_put_u64(b, SEQ);
    tap_bytes(b, (size_t) (p - b), LIT(SEQ_BYTES), "put_u64: big-endian");
    tap_ok(im_traffic_get_u64(b) == SEQ, "get_u64: big-endian");

    im_traffic_put_u64(b, 0);
    tap_bytes(b, 8, LIT("\0\0\0\0\0\0\0\0"), "put_u64: 0");
    tap_ok(im_traffic_get_u64(b) == 0, "get_u64: 0");

    im_traffic_put_u64(b, UINT64_MAX);
    tap_bytes(b, 8, LIT("\xff\xff\xff\xff\xff\xff\xff\xff"),
              "put_u64: all ones");
    tap_ok(im_traffic_get_u64(b) == UINT64_MAX, "get_u64: all ones");

    im_traffic_put_u64(b, 0x8000000000000001ULL);
    tap_ok(im_traffic_get_u64(b) == 0x8000000000000001ULL
           && b[0] == 0x80 && b[7] == 0x01,
           "u64: top and bottom bits in place");
}


static void
test_d(void)
{
    uint8_t       b[IM_TRAFFIC_D_LEN(24, 11)];
    size_t        n;
    im_traffic_t  t;

    static const char  want[] =
        "D" OLEN ORIGIN "\x01" SEQ_BYTES ENTRY;
    static const char  empty[] =
        "D" OLEN ORIGIN "\x00" SEQ_BYTES;

    n = im_traffic_build_d(b, U8(ORIGIN), 24, IM_TRAFFIC_STORED, SEQ,
                           U8(ENTRY), 11);
    tap_bytes(b, n, LIT(want), "D: built bytes");
    tap_ok(n == IM_TRAFFIC_D_LEN(24, 11) && n == sizeof(want) - 1,
           "D: IM_TRAFFIC_D_LEN is its length");

    tap_rc(parse(b, n, &t), IM_OK, "D");
    tap_ok(head_is(&t, 'D', IM_TRAFFIC_STORED, U8(ORIGIN), 24)
           && t.seq == SEQ
           && t.entry == cur + IM_TRAFFIC_HEAD_LEN(24) + 8
           && t.entry_len == 11 && memcmp(t.entry, ENTRY, 11) == 0,
           "D: origin, flags, seq, entry in place");
    tap_ok(t.client_id == 0 && t.token == 0 && t.nonce == 0
           && !t.has_nonce, "D: the fields of other types are 0");

    n = im_traffic_build_d(b, U8(ORIGIN), 24, 0, SEQ, NULL, 0);
    tap_bytes(b, n, LIT(empty), "D with an empty entry: built bytes");
    tap_rc(parse(b, n, &t), IM_OK, "D with an empty entry (the router "
           "checks the entry)");
    tap_ok(t.entry_len == 0 && t.entry == cur + n && t.seq == SEQ,
           "D with an empty entry: entry_len 0, at the end");

    /* exact boundary: the Seq complete */
    tap_rc(parse(LIT("D" OLEN ORIGIN "\x00" "\x01\x02\x03\x04\x05\x06\x07"),
                 &t),
           IM_ERR_TRUNCATED, "D: Seq one byte short");
    tap_rc(parse(LIT("D" OLEN ORIGIN "\x00"), &t), IM_ERR_TRUNCATED,
           "D: no Seq at all");
    tap_rc(parse(LIT("D" OLEN ORIGIN "\x00" SEQ_BYTES "x"), &t), IM_OK,
           "D: Seq and a 1-byte entry");
    tap_ok(t.entry_len == 1 && t.entry[0] == 'x', "D: the 1-byte entry");

    n = im_traffic_build_d(b, U8(ORIGIN), 24, IM_TRAFFIC_STORED, SEQ,
                           U8(ENTRY), 11);
    prefixes("D", b, n, 24);
}


static void
test_k(void)
{
    uint8_t       b[IM_TRAFFIC_K_LEN(24) + 4];
    size_t        n;
    im_traffic_t  t;

    static const char  want[] =
        "K" OLEN ORIGIN "\x00" "\x07" TOKEN_BYTES;

    n = im_traffic_build_k(b, U8(ORIGIN), 24, 0, 7, TOKEN);
    tap_bytes(b, n, LIT(want), "K: built bytes");
    tap_ok(n == IM_TRAFFIC_K_LEN(24), "K: IM_TRAFFIC_K_LEN is its length");

    tap_rc(parse(b, n, &t), IM_OK, "K");
    tap_ok(head_is(&t, 'K', 0, U8(ORIGIN), 24) && t.client_id == 7
           && t.token == TOKEN, "K: origin, flags, client id, token");
    tap_ok(t.seq == 0 && t.entry == NULL && t.entry_len == 0
           && t.nonce == 0 && !t.has_nonce,
           "K: the fields of other types are 0");

    tap_rc(parse(b, n - 1, &t), IM_ERR_TRUNCATED, "K: token one byte short");
    tap_rc(parse(b, IM_TRAFFIC_HEAD_LEN(24), &t), IM_ERR_TRUNCATED,
           "K: head only");
    tap_rc(parse(b, IM_TRAFFIC_HEAD_LEN(24) + 1, &t), IM_ERR_TRUNCATED,
           "K: client id only");

    /* bytes past the token: tolerated, as the router always did */
    memcpy(b + n, "more", 4);
    tap_rc(parse(b, n + 4, &t), IM_OK, "K with 4 trailing bytes");
    tap_ok(t.client_id == 7 && t.token == TOKEN,
           "K with trailing bytes: the same client id and token");

    n = im_traffic_build_k(b, U8(ORIGIN), 24, IM_TRAFFIC_ALL, 255,
                           UINT64_MAX);
    tap_rc(parse(b, n, &t), IM_OK, "K client id 255, token all ones, ALL");
    tap_ok(t.flags == IM_TRAFFIC_ALL && t.client_id == 255
           && t.token == UINT64_MAX, "K: the extreme values read back");

    n = im_traffic_build_k(b, U8(ORIGIN), 24, 0, 7, TOKEN);
    prefixes("K", b, n, 24);
}


static void
test_l(void)
{
    uint8_t       b[IM_TRAFFIC_L_LEN(IM_TRAFFIC_ORIGIN_MAX) + 4];
    size_t        n;
    im_traffic_t  t;

    static const char  want[] = "L" OLEN ORIGIN "\x00" "\x01" "\x07";

    n = im_traffic_build_l(b, U8(ORIGIN), 24, 0, IM_TRAFFIC_L_EVERY, 7);
    tap_bytes(b, n, LIT(want), "L: built bytes");
    tap_ok(n == IM_TRAFFIC_L_LEN(24), "L: IM_TRAFFIC_L_LEN is its length");

    tap_rc(parse(b, n, &t), IM_OK, "L");
    tap_ok(head_is(&t, 'L', 0, U8(ORIGIN), 24)
           && t.scope == IM_TRAFFIC_L_EVERY && t.client_id == 7,
           "L: origin, flags, scope, client id");
    tap_ok(t.token == 0 && t.seq == 0 && t.entry == NULL && t.nonce == 0,
           "L: the fields of other types are 0");

    tap_rc(parse(b, n - 1, &t), IM_ERR_TRUNCATED, "L: client id missing");
    tap_rc(parse(b, IM_TRAFFIC_HEAD_LEN(24), &t), IM_ERR_TRUNCATED,
           "L: head only");

    memcpy(b + n, "more", 4);
    tap_rc(parse(b, n + 4, &t), IM_OK, "L with 4 trailing bytes");
    tap_ok(t.scope == 1 && t.client_id == 7,
           "L with trailing bytes: the same fields");

    n = im_traffic_build_l(b, long_origin, IM_TRAFFIC_ORIGIN_MAX,
                           IM_TRAFFIC_ALL, IM_TRAFFIC_L_ONE, 255);
    tap_rc(parse(b, n, &t), IM_OK, "L, 255-byte origin, ALL, client 255");
    tap_ok(t.flags == IM_TRAFFIC_ALL && t.scope == IM_TRAFFIC_L_ONE
           && t.client_id == 255, "L: the extreme values read back");
    prefixes("L, 255-byte origin", b, n, IM_TRAFFIC_ORIGIN_MAX);

    n = im_traffic_build_l(b, U8(ORIGIN), 24, 0, IM_TRAFFIC_L_ONE, 3);
    prefixes("L", b, n, 24);
}


static void
test_w(void)
{
    uint8_t       b[IM_TRAFFIC_W_LEN(IM_TRAFFIC_ORIGIN_MAX) + 4];
    size_t        n;
    im_traffic_t  t;

    static const char  msgid[] = "0123456789abcdef0123456789abcdef";
    static const char  want[] = "W" OLEN ORIGIN "\x00"
                                "\x01\x02\x03\x04\x05\x06\x07\x08"
                                "\x00\x00\x03\xea" "\x05"
                                "\x00\x01\x02\x03"
                                "0123456789abcdef0123456789abcdef";

    n = im_traffic_build_w(b, U8(ORIGIN), 24, 0, 0x0102030405060708ULL,
                           1002, 5, 0x00010203, U8(msgid));
    tap_bytes(b, n, LIT(want), "W: built bytes");
    tap_ok(n == IM_TRAFFIC_W_LEN(24), "W: IM_TRAFFIC_W_LEN is its length");

    tap_rc(parse(b, n, &t), IM_OK, "W");
    tap_ok(head_is(&t, 'W', 0, U8(ORIGIN), 24)
           && t.token == 0x0102030405060708ULL && t.uid == 1002
           && t.client_id == 5 && t.after_ms == 0x00010203
           && t.entry_len == IM_MSGID_LEN
           && memcmp(t.entry, msgid, IM_MSGID_LEN) == 0,
           "W: origin, token, uid, client id, after_ms, MsgId");
    tap_ok(t.seq == 0 && t.nonce == 0 && t.scope == 0,
           "W: the fields of other types are 0");

    tap_rc(parse(b, n - 1, &t), IM_ERR_TRUNCATED, "W: MsgId cut short");
    tap_rc(parse(b, IM_TRAFFIC_HEAD_LEN(24), &t), IM_ERR_TRUNCATED,
           "W: head only");

    memcpy(b + n, "more", 4);
    tap_rc(parse(b, n + 4, &t), IM_OK, "W with 4 trailing bytes");
    tap_ok(t.uid == 1002 && t.entry_len == IM_MSGID_LEN,
           "W with trailing bytes: the same fields");

    n = im_traffic_build_w(b, long_origin, IM_TRAFFIC_ORIGIN_MAX, 0,
                           UINT64_MAX, UINT32_MAX, 255, UINT32_MAX,
                           U8(msgid));
    tap_rc(parse(b, n, &t), IM_OK, "W, 255-byte origin, extreme values");
    tap_ok(t.token == UINT64_MAX && t.uid == UINT32_MAX
           && t.client_id == 255 && t.after_ms == UINT32_MAX,
           "W: the extreme values read back");
    prefixes("W, 255-byte origin", b, n, IM_TRAFFIC_ORIGIN_MAX);
}


static void
test_c(void)
{
    uint8_t       b[IM_TRAFFIC_C_LEN(IM_TRAFFIC_ORIGIN_MAX) + 4];
    size_t        n;
    im_traffic_t  t;

    static const char  msgid[] = "0123456789abcdef0123456789abcdef";
    static const char  want[] = "C" OLEN ORIGIN "\x00"
                                "0123456789abcdef0123456789abcdef";

    n = im_traffic_build_c(b, U8(ORIGIN), 24, 0, U8(msgid));
    tap_bytes(b, n, LIT(want), "C: built bytes");
    tap_ok(n == IM_TRAFFIC_C_LEN(24), "C: IM_TRAFFIC_C_LEN is its length");

    tap_rc(parse(b, n, &t), IM_OK, "C");
    tap_ok(head_is(&t, 'C', 0, U8(ORIGIN), 24)
           && t.entry_len == IM_MSGID_LEN
           && memcmp(t.entry, msgid, IM_MSGID_LEN) == 0,
           "C: origin, MsgId");
    tap_rc(parse(b, n - 1, &t), IM_ERR_TRUNCATED, "C: MsgId cut short");

    memcpy(b + n, "more", 4);
    tap_rc(parse(b, n + 4, &t), IM_OK, "C with 4 trailing bytes");
    tap_ok(t.entry_len == IM_MSGID_LEN, "C with trailing bytes: the MsgId");

    n = im_traffic_build_c(b, long_origin, IM_TRAFFIC_ORIGIN_MAX, 0,
                           U8(msgid));
    prefixes("C, 255-byte origin", b, n, IM_TRAFFIC_ORIGIN_MAX);
}


static void
test_r(void)
{
    uint8_t       b[IM_TRAFFIC_R_LEN(24, 37)];
    size_t        n;
    im_traffic_t  t;

    static const char  rec[] = "\x0d" "0123456789abcdef0123456789abcdef"
                               "\x00\x00\x03\xe9";
    static const char  want[] = "R" OLEN ORIGIN "\x02" "\x0d"
                                "0123456789abcdef0123456789abcdef"
                                "\x00\x00\x03\xe9";

    n = im_traffic_build_r(b, U8(ORIGIN), 24, IM_TRAFFIC_ALL, U8(rec), 37);
    tap_bytes(b, n, LIT(want), "R: built bytes");
    tap_ok(n == IM_TRAFFIC_R_LEN(24, 37), "R: IM_TRAFFIC_R_LEN is its length");
    tap_rc(parse(b, n, &t), IM_OK, "R");
    tap_ok(head_is(&t, 'R', IM_TRAFFIC_ALL, U8(ORIGIN), 24)
           && t.entry == cur + IM_TRAFFIC_HEAD_LEN(24) && t.entry_len == 37
           && memcmp(t.entry, rec, 37) == 0, "R: the receipt, in entry");
    tap_rc(parse(b, IM_TRAFFIC_HEAD_LEN(24), &t), IM_OK,
           "R: head only (an empty receipt, refused by the caller)");
    prefixes("R", b, n, 24);
}


static void
test_notices(void)
{
    uint8_t       b[IM_TRAFFIC_NOTICE_MAX + 4];
    size_t        n;
    uint64_t      nonce;
    im_traffic_t  t;

    static const char  j[] = "J" OLEN ORIGIN "\x00" NONCE_BYTES;
    static const char  j_old[] = "J" OLEN ORIGIN "\x00";
    static const char  s[] = "S" OLEN ORIGIN "\x00";
    static const char  a[] = "A" OLEN ORIGIN "\x00" NONCE_BYTES;

    nonce = NONCE;

    /* J */

    n = im_traffic_build_notice(b, 'J', U8(ORIGIN), 24, &nonce);
    tap_bytes(b, n, LIT(j), "J with a nonce: built bytes");
    tap_rc(parse(b, n, &t), IM_OK, "J with a nonce");
    tap_ok(head_is(&t, 'J', 0, U8(ORIGIN), 24) && t.has_nonce
           && t.nonce == NONCE, "J: origin, nonce");

    n = im_traffic_build_notice(b, 'J', U8(ORIGIN), 24, NULL);
    tap_bytes(b, n, LIT(j_old), "J without a nonce (older builds): built");
    tap_rc(parse(b, n, &t), IM_OK, "J without a nonce");
    tap_ok(head_is(&t, 'J', 0, U8(ORIGIN), 24) && !t.has_nonce
           && t.nonce == 0, "J without a nonce: has_nonce 0, nonce 0");

    tap_rc(parse(LIT("J" OLEN ORIGIN "\x00" "\x00\x00\x12\x34\xde\xad\xbe"),
                 &t),
           IM_OK, "J with 7 bytes after the head");
    tap_ok(!t.has_nonce && t.nonce == 0, "J with 7 bytes: no nonce");

    tap_rc(parse(LIT("J" OLEN ORIGIN "\x00" NONCE_BYTES "z"), &t), IM_OK,
           "J with 9 bytes after the head");
    tap_ok(t.has_nonce && t.nonce == NONCE, "J with 9 bytes: the first 8");

    n = im_traffic_build_notice(b, 'J', U8(ORIGIN), 24, &nonce);
    prefixes("J", b, n, 24);

    /* S */

    n = im_traffic_build_notice(b, 'S', U8(ORIGIN), 24, NULL);
    tap_bytes(b, n, LIT(s), "S: built bytes");
    tap_rc(parse(b, n, &t), IM_OK, "S");
    tap_ok(head_is(&t, 'S', 0, U8(ORIGIN), 24) && !t.has_nonce
           && t.nonce == 0 && t.seq == 0 && t.entry == NULL,
           "S: origin, nothing else");

    memcpy(b + n, "junk", 4);
    tap_rc(parse(b, n + 4, &t), IM_OK, "S with 4 trailing bytes (ignored)");
    tap_ok(head_is(&t, 'S', 0, U8(ORIGIN), 24) && !t.has_nonce,
           "S with trailing bytes: nothing read from them");

    prefixes("S", b, n + 4, 24);

    /* A */

    n = im_traffic_build_notice(b, 'A', U8(ORIGIN), 24, &nonce);
    tap_bytes(b, n, LIT(a), "A: built bytes");
    tap_rc(parse(b, n, &t), IM_OK, "A");
    tap_ok(head_is(&t, 'A', 0, U8(ORIGIN), 24) && t.nonce == NONCE,
           "A: origin, nonce");
    tap_ok(!t.has_nonce, "A: has_nonce is for J only");

    tap_rc(parse(b, n - 1, &t), IM_ERR_TRUNCATED, "A: nonce one byte short");
    tap_rc(parse(b, IM_TRAFFIC_HEAD_LEN(24), &t), IM_ERR_TRUNCATED,
           "A: head only");

    /* M: as A, another type */

    n = im_traffic_build_notice(b, 'M', U8(ORIGIN), 24, &nonce);
    tap_rc(parse(b, n, &t), IM_OK, "M");
    tap_ok(head_is(&t, 'M', 0, U8(ORIGIN), 24) && t.nonce == NONCE
           && n == IM_TRAFFIC_HEAD_LEN(24) + 8, "M: origin, nonce, length");
    tap_rc(parse(b, n - 1, &t), IM_ERR_TRUNCATED, "M: nonce one byte short");
    prefixes("M", b, n, 24);

    memcpy(b + n, "tail", 4);
    tap_rc(parse(b, n + 4, &t), IM_OK, "A with 4 trailing bytes");
    tap_ok(t.nonce == NONCE, "A with trailing bytes: the same nonce");

    prefixes("A", b, n, 24);

    /* sizes */

    tap_ok(IM_TRAFFIC_NOTICE_MAX == 3 + 255 + 8,
           "IM_TRAFFIC_NOTICE_MAX: 266");
    n = im_traffic_build_notice(b, 'A', long_origin, IM_TRAFFIC_ORIGIN_MAX,
                                &nonce);
    tap_ok(n == IM_TRAFFIC_NOTICE_MAX,
           "A with a 255-byte origin: IM_TRAFFIC_NOTICE_MAX bytes");
    n = im_traffic_build_notice(b, 'S', U8(ORIGIN), 24, NULL);
    tap_ok(n == IM_TRAFFIC_HEAD_LEN(24), "S: IM_TRAFFIC_HEAD_LEN bytes");
}


/* the head alone: type byte, OriginLen, Origin, Flags */

static void
test_head(void)
{
    im_traffic_t  t;

    tap_rc(parse(NULL, 0, &t), IM_ERR_EMPTY, "no bytes");
    tap_ok(t.type == 0 && t.origin == NULL, "no bytes: type 0, no origin");

    tap_rc(parse(LIT("S"), &t), IM_ERR_TRUNCATED, "1 byte");
    tap_ok(t.type == 'S', "1 byte: the type is set");
    tap_rc(parse(LIT("S\x00"), &t), IM_ERR_TRUNCATED,
           "2 bytes: no flags byte");
    tap_rc(parse(LIT("S\x00\x00"), &t), IM_OK, "3 bytes, empty origin");
    tap_ok(head_is(&t, 'S', 0, NULL, 0), "3 bytes: origin empty");

    tap_rc(parse(LIT("S\x01\x00"), &t), IM_ERR_LENGTH,
           "OriginLen 1 with 1 byte: no flags byte");
    tap_ok(t.type == 'S' && t.origin == NULL,
           "OriginLen past the end: type set, no origin");
    tap_rc(parse(LIT("S\x01" "a\x03"), &t), IM_OK, "OriginLen 1, exact");
    tap_ok(head_is(&t, 'S', 3, U8("a"), 1), "OriginLen 1: origin, flags");
    tap_rc(parse(LIT("S" OLEN ORIGIN), &t), IM_ERR_LENGTH,
           "a whole origin, no flags byte");
    tap_rc(parse(LIT("S\xff\x00"), &t), IM_ERR_LENGTH,
           "OriginLen 255 with 1 byte");

    /* the head is checked before the type, as in the router */
    tap_rc(parse(LIT("X\x05" "ab"), &t), IM_ERR_LENGTH,
           "unknown type with a short head: the head's error");
}


static void
test_origins(void)
{
    uint8_t       b[IM_TRAFFIC_D_LEN(IM_TRAFFIC_ORIGIN_MAX, 11)];
    char          name[64];
    size_t        n, olen, i;
    uint64_t      nonce;
    im_traffic_t  t;

    static const size_t  olens[] = { 0, 1, IM_TRAFFIC_ORIGIN_MAX };

    nonce = NONCE;

    for (i = 0; i < sizeof(olens) / sizeof(olens[0]); i++) {
        olen = olens[i];

        n = im_traffic_build_d(b, long_origin, olen, IM_TRAFFIC_STORED,
                               SEQ, U8(ENTRY), 11);
        tap_ok(n == IM_TRAFFIC_D_LEN(olen, 11) && b[1] == (uint8_t) olen
               && b[IM_TRAFFIC_FLAGS_AT(olen)] == IM_TRAFFIC_STORED,
               "D, origin of %zu bytes: length, OriginLen, flags at "
               "IM_TRAFFIC_FLAGS_AT", olen);
        tap_rc(parse(b, n, &t), IM_OK, "D, origin of %zu bytes", olen);
        tap_ok(head_is(&t, 'D', IM_TRAFFIC_STORED, long_origin, olen)
               && t.seq == SEQ && t.entry_len == 11
               && memcmp(t.entry, ENTRY, 11) == 0,
               "D, origin of %zu bytes: fields", olen);
        tap_rc(parse(b, IM_TRAFFIC_HEAD_LEN(olen) - 1, &t),
               olen ? IM_ERR_LENGTH : IM_ERR_TRUNCATED,
               "D, origin of %zu bytes: head one byte short", olen);
        tap_rc(parse(b, IM_TRAFFIC_HEAD_LEN(olen) + 7, &t),
               IM_ERR_TRUNCATED, "D, origin of %zu bytes: Seq one byte "
               "short", olen);
        tap_rc(parse(b, IM_TRAFFIC_HEAD_LEN(olen) + 8, &t), IM_OK,
               "D, origin of %zu bytes: Seq exact", olen);

        n = im_traffic_build_k(b, long_origin, olen, 0, 3, TOKEN);
        tap_rc(parse(b, n, &t), IM_OK, "K, origin of %zu bytes", olen);
        tap_ok(head_is(&t, 'K', 0, long_origin, olen) && t.client_id == 3
               && t.token == TOKEN, "K, origin of %zu bytes: fields", olen);
        tap_rc(parse(b, n - 1, &t), IM_ERR_TRUNCATED,
               "K, origin of %zu bytes: one byte short", olen);
        snprintf(name, sizeof(name), "K, origin of %zu bytes", olen);
        prefixes(name, b, n, olen);

        n = im_traffic_build_notice(b, 'J', long_origin, olen, &nonce);
        tap_rc(parse(b, n, &t), IM_OK, "J, origin of %zu bytes", olen);
        tap_ok(head_is(&t, 'J', 0, long_origin, olen) && t.has_nonce
               && t.nonce == NONCE, "J, origin of %zu bytes: nonce", olen);
        tap_rc(parse(b, n - 1, &t), IM_OK,
               "J, origin of %zu bytes: nonce one byte short", olen);
        tap_ok(!t.has_nonce, "J, origin of %zu bytes, 7 bytes: no nonce",
               olen);

        n = im_traffic_build_notice(b, 'S', long_origin, olen, NULL);
        tap_rc(parse(b, n, &t), IM_OK, "S, origin of %zu bytes", olen);
        tap_ok(head_is(&t, 'S', 0, long_origin, olen),
               "S, origin of %zu bytes: origin", olen);

        n = im_traffic_build_notice(b, 'A', long_origin, olen, &nonce);
        tap_rc(parse(b, n, &t), IM_OK, "A, origin of %zu bytes", olen);
        tap_ok(head_is(&t, 'A', 0, long_origin, olen) && t.nonce == NONCE,
               "A, origin of %zu bytes: nonce", olen);
        tap_rc(parse(b, n - 1, &t), IM_ERR_TRUNCATED,
               "A, origin of %zu bytes: one byte short", olen);
    }

    n = im_traffic_build_d(b, long_origin, IM_TRAFFIC_ORIGIN_MAX, 0, SEQ,
                           U8(ENTRY), 11);
    prefixes("D, 255-byte origin", b, n, IM_TRAFFIC_ORIGIN_MAX);
}


static void
test_flags(void)
{
    uint8_t       b[IM_TRAFFIC_D_LEN(24, 11)];
    size_t        n;
    unsigned      f;
    int           ok;
    uint64_t      nonce;
    im_traffic_t  t;

    ok = 1;

    for (f = 0; f < 256; f++) {
        n = im_traffic_build_d(b, U8(ORIGIN), 24, (uint8_t) f, SEQ,
                               U8(ENTRY), 11);
        if (parse(b, n, &t) != IM_OK || t.flags != f) {
            ok = 0;
        }

        n = im_traffic_build_k(b, U8(ORIGIN), 24, (uint8_t) f, 1, TOKEN);
        if (parse(b, n, &t) != IM_OK || t.flags != f) {
            ok = 0;
        }
    }

    tap_ok(ok, "D and K: each of the 256 flags values read back");

    n = im_traffic_build_d(b, U8(ORIGIN), 24,
                           IM_TRAFFIC_STORED | IM_TRAFFIC_ALL, SEQ,
                           U8(ENTRY), 11);
    tap_rc(parse(b, n, &t), IM_OK, "D, STORED and ALL");
    tap_ok(t.flags == 3, "D: STORED | ALL is 3");

    /* the router sets ALL in place after building */
    nonce = NONCE;
    n = im_traffic_build_notice(b, 'J', U8(ORIGIN), 24, &nonce);
    tap_ok(b[IM_TRAFFIC_FLAGS_AT(24)] == 0, "notices are built with flags 0");
    b[IM_TRAFFIC_FLAGS_AT(24)] |= IM_TRAFFIC_ALL;
    tap_rc(parse(b, n, &t), IM_OK, "J with ALL patched in");
    tap_ok(t.flags == IM_TRAFFIC_ALL && t.has_nonce && t.nonce == NONCE,
           "J with ALL patched in: flags and nonce");

    n = im_traffic_build_k(b, U8(ORIGIN), 24, 0, 1, TOKEN);
    b[IM_TRAFFIC_FLAGS_AT(24)] |= IM_TRAFFIC_ALL;
    tap_rc(parse(b, n, &t), IM_OK, "K with ALL patched in");
    tap_ok(t.flags == IM_TRAFFIC_ALL && t.token == TOKEN,
           "K with ALL patched in: flags and token");
}


static void
test_unknown(void)
{
    uint8_t       b[IM_TRAFFIC_D_LEN(24, 11)];
    size_t        n, i;
    unsigned      type;
    int           ok;
    im_traffic_t  t;

    static const uint8_t  types[] = { 0, 'd', 'k', 'j', 's', 'a', 'X',
                                      'B', 'E', 'l', 0x80, 0xff };

    for (i = 0; i < sizeof(types); i++) {
        n = im_traffic_build_d(b, U8(ORIGIN), 24, 0, SEQ, U8(ENTRY), 11);
        b[0] = types[i];
        tap_rc(parse(b, n, &t), IM_ERR_UNKNOWN_CMD, "type 0x%02x",
               types[i]);
        tap_ok(t.type == types[i], "type 0x%02x: the type is set",
               types[i]);
    }

    /* every byte value: the six types and nothing else */
    ok = 1;

    for (type = 0; type < 256; type++) {
        n = im_traffic_build_d(b, U8(ORIGIN), 24, 0, SEQ, U8(ENTRY), 11);
        b[0] = (uint8_t) type;

        /* known: anything but "unknown" ('W' is too long for this) */
        if ((parse(b, n, &t) != IM_ERR_UNKNOWN_CMD)
            != (type == 'D' || type == 'K' || type == 'J' || type == 'S'
                || type == 'A' || type == 'M' || type == 'R'
                || type == 'L' || type == 'W' || type == 'C'))
        {
            tap_diag("type 0x%02x", type);
            ok = 0;
        }
    }

    tap_ok(ok, "of the 256 type bytes, only D K J S A R L W C are known");

    n = im_traffic_build_d(b, U8(ORIGIN), 24, 0, SEQ, U8(ENTRY), 11);
    b[0] = 'X';
    prefixes("unknown type X", b, n, 24);
}


void
test_traffic(void)
{
    memset(long_origin, 'o', sizeof(long_origin));
    long_origin[0] = 'n';
    long_origin[IM_TRAFFIC_ORIGIN_MAX - 1] = '9';

    test_u64();
    test_head();
    test_d();
    test_k();
    test_l();
    test_w();
    test_c();
    test_r();
    test_notices();
    test_origins();
    test_flags();
    test_unknown();

    free(cur);
    cur = NULL;
}
