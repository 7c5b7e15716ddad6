
/*
 * test_utf16.c: unit tests of the field client's reading of lengths
 * (im_parse_client_utf16, src/ngx_im_proto.c; docs/PROTOCOL.md 8).
 *
 * CONNECT's UserLen and PassLen and the Len of the three publishes,
 * counted in UTF-16 units of well-formed UTF-8: what the field client
 * sends is read as it meant it, ASCII reads as the strict parse reads
 * it, and every count that ends inside a character, splits a surrogate
 * pair, runs past the end or covers bytes that are not UTF-8 is a length
 * error.  Every parse reads an exact-size copy (the ASan build catches a
 * read past the end).
 */


#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ngx_im_proto.h"
#include "tap.h"


#define MSGID      "0123456789abcdef0123456789ABCDEF"

/* "张三" and "密码": 2 UTF-16 units, 6 bytes each */
#define ZHANGSAN   "\xe5\xbc\xa0\xe4\xb8\x89"
#define MIMA       "\xe5\xaf\x86\xe7\xa0\x81"
/* U+1F600, one character beyond U+FFFF: 2 units, 4 bytes */
#define GRIN       "\xf0\x9f\x98\x80"


static uint8_t  *cur;


static im_rc_t
parse16(const uint8_t *p, size_t len, im_msg_t *m)
{
    free(cur);
    cur = tap_dup(p, len);

    return im_parse_client_utf16(cur, len, m);
}


static im_rc_t
parse(const uint8_t *p, size_t len, im_msg_t *m)
{
    free(cur);
    cur = tap_dup(p, len);

    return im_parse_client(cur, len, m);
}


static void
test_utf16_connect(void)
{
    im_msg_t  m;

    /* the vector of docs/PROTOCOL.md 8: the strict parse refuses it */
    static const char field[] =
        "\x01" "\x00\x02" ZHANGSAN "\x00\x02" MIMA "\x01\x02";
    static const char field_no_role[] =
        "\x01" "\x00\x02" ZHANGSAN "\x00\x02" MIMA;
    static const char ascii_user[] =
        "\x01" "\x00\x04" "test" "\x00\x02" MIMA "\x01\x02";
    static const char grin[] =
        "\x01" "\x00\x03" "a" GRIN "\x00\x00" "\x02\x02";
    static const char grin_split[] =
        "\x01" "\x00\x02" "a" GRIN "\x00\x00" "\x02\x02";
    static const char cut_in_char[] =
        "\x01" "\x00\x01" "\xe5\xbc";
    static const char past_end[] =
        "\x01" "\x00\x03" ZHANGSAN;
    static const char not_utf8[] =
        "\x01" "\x00\x02" "\xc0\xaf" "\xe5\xbc\xa0" "\x00\x00";
    static const char surrogate[] =
        "\x01" "\x00\x01" "\xed\xa0\x80" "\x00\x00";
    static const char trailing[] =
        "\x01" "\x00\x02" ZHANGSAN "\x00\x02" MIMA "\x01\x02\x03";

    tap_rc(parse(LIT(field), &m), IM_ERR_LENGTH,
           "field client's CONNECT, strict");
    tap_rc(parse16(LIT(field), &m), IM_OK,
           "field client's CONNECT, UTF-16 units");
    tap_ok(m.utf16 && m.cmd == IM_CMD_CONNECT
           && m.user == cur + 3 && m.user_len == 6
           && memcmp(m.user, ZHANGSAN, 6) == 0
           && m.pass == cur + 11 && m.pass_len == 6
           && memcmp(m.pass, MIMA, 6) == 0
           && m.has_role && m.role == 1 && m.has_client_id
           && m.client_id == 2,
           "field client's CONNECT: user, pass in bytes, role, ClientId");

    tap_rc(parse16(LIT(field_no_role), &m), IM_OK,
           "UTF-16 CONNECT without Role");
    tap_ok(m.user_len == 6 && m.pass_len == 6 && !m.has_role,
           "UTF-16 CONNECT without Role: fields");

    tap_rc(parse(LIT(ascii_user), &m), IM_ERR_TRAILING,
           "ASCII user, UTF-16 password, strict");
    tap_rc(parse16(LIT(ascii_user), &m), IM_OK,
           "ASCII user, UTF-16 password");
    tap_ok(m.user_len == 4 && m.pass_len == 6 && m.client_id == 2,
           "ASCII user, UTF-16 password: fields");

    tap_rc(parse16(LIT(grin), &m), IM_OK,
           "a character beyond U+FFFF counts 2 units");
    tap_ok(m.user_len == 5 && m.pass_len == 0 && m.role == 2,
           "a character beyond U+FFFF: 5 bytes for 3 units");
    tap_rc(parse16(LIT(grin_split), &m), IM_ERR_LENGTH,
           "a count that splits a surrogate pair");
    tap_rc(parse16(LIT(cut_in_char), &m), IM_ERR_LENGTH,
           "a character cut by the end of the message");
    tap_rc(parse16(LIT(past_end), &m), IM_ERR_LENGTH,
           "a count past the end");
    tap_rc(parse16(LIT(not_utf8), &m), IM_ERR_LENGTH,
           "an overlong form is not UTF-8");
    tap_rc(parse16(LIT(surrogate), &m), IM_ERR_LENGTH,
           "an encoded surrogate is not UTF-8");
    tap_rc(parse16(LIT(trailing), &m), IM_ERR_TRAILING,
           "UTF-16 CONNECT with a byte after ClientId");
    tap_ok(!m.utf16, "a refused reading does not say utf16");

    /* ASCII: the same reading as the strict one */
    {
        static const char ascii[] =
            "\x01" "\x00\x04" "test" "\x00\x06" "123456" "\x01";
        im_msg_t  s;

        tap_rc(parse(LIT(ascii), &s), IM_OK, "ASCII CONNECT, strict");
        tap_rc(parse16(LIT(ascii), &m), IM_OK, "ASCII CONNECT, UTF-16");
        tap_ok(m.user_len == s.user_len && m.pass_len == s.pass_len
               && m.role == s.role,
               "ASCII CONNECT reads the same both ways");
    }

    tap_rc(parse16(U8(""), 0, &m), IM_ERR_EMPTY, "empty");
    tap_rc(parse16(LIT("\x04" MSGID), &m), IM_ERR_UNKNOWN_CMD,
           "an ack has no UTF-16 reading");
}


static void
test_utf16_publish(void)
{
    im_msg_t  m;

    /* "hé": 2 units, 3 bytes */
    static const char pub[] =
        "\x03" "\x00\x00\x03\xea" MSGID "\x00\x02" "h\xc3\xa9";
    static const char group[] =
        "\x05" "\x00\x00\x00\x07" MSGID "\x00\x02" ZHANGSAN;
    static const char part[] =
        "\x0b" "\x00\x00\x00\x07" MSGID "\x00\x01" "\x00\x00\x03\xea"
        "\x00\x03" "a" GRIN;
    static const char short_count[] =
        "\x03" "\x00\x00\x03\xea" MSGID "\x00\x01" "h\xc3\xa9";

    tap_rc(parse(LIT(pub), &m), IM_ERR_TRAILING, "UTF-16 PUBLISH, strict");
    tap_ok(m.msgid != NULL, "... the strict parse still reports the MsgId");
    tap_rc(parse16(LIT(pub), &m), IM_OK, "UTF-16 PUBLISH");
    tap_ok(m.utf16 && m.to == 1002 && m.payload_len == 3
           && memcmp(m.payload, "h\xc3\xa9", 3) == 0
           && memcmp(m.msgid, MSGID, IM_MSGID_LEN) == 0,
           "UTF-16 PUBLISH: ToUid, MsgId, payload in bytes");

    tap_rc(parse16(LIT(group), &m), IM_OK, "UTF-16 GROUP_PUBLISH");
    tap_ok(m.to == 7 && m.payload_len == 6, "UTF-16 GROUP_PUBLISH: fields");

    tap_rc(parse16(LIT(part), &m), IM_OK, "UTF-16 GROUP_PART_PUBLISH");
    tap_ok(m.to == 7 && m.n_uids == 1 && im_get_u32(m.uids) == 1002
           && m.payload_len == 5,
           "UTF-16 GROUP_PART_PUBLISH: fields");

    tap_rc(parse16(LIT(short_count), &m), IM_ERR_TRAILING,
           "a count short of the payload leaves trailing bytes");
}


/* a text of 65535 characters of 3 bytes: too many bytes for one field */

static void
test_utf16_limit(void)
{
    size_t    i, len;
    uint8_t  *p, *q;
    im_msg_t  m;

    len = 1 + 4 + IM_MSGID_LEN + 2 + 3 * 21845 + 1;
    p = malloc(len);

    if (p == NULL) {
        tap_ok(0, "out of memory");
        return;
    }

    q = p;
    *q++ = IM_CMD_PUBLISH;
    q = im_put_u32(q, 1002);
    memcpy(q, MSGID, IM_MSGID_LEN);
    q += IM_MSGID_LEN;

    /* 21845 characters of 3 bytes: 65535 bytes, the most a field holds */
    q = im_put_u16(q, 21845);

    for (i = 0; i < 21845; i++) {
        memcpy(q, "\xe5\xbc\xa0", 3);
        q += 3;
    }

    tap_rc(parse16(p, len - 1, &m), IM_OK, "65535 bytes in 21845 units");
    tap_ok(m.payload_len == 65535, "... all of them the payload");

    /* one character more: 65536 bytes */
    p[len - 1] = 'x';
    im_put_u16(p + 1 + 4 + IM_MSGID_LEN, 21846);
    tap_rc(parse16(p, len, &m), IM_ERR_LENGTH,
           "more than 65535 bytes is a length error");

    free(p);
}


void
test_utf16(void)
{
    test_utf16_connect();
    test_utf16_publish();
    test_utf16_limit();

    free(cur);
    cur = NULL;
}
