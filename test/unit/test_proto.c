
/*
 * test_proto.c: unit tests of the protocol codec (src/ngx_im_proto.c).
 *
 * Every message of docs/PROTOCOL.md is checked byte for byte in each
 * direction it travels, built and parsed, starting with the worked
 * examples of the original document (docs/PROTOCOL.md 3.1, 3.3), then
 * every error result and when the MsgId is still reported, with every
 * prefix of a message and at the limits of the fields.  Each parse reads
 * from a buffer of the message's exact size, so the ASan build of these
 * tests catches a read past the end.  The examples of docs/vectors.json
 * are checked by test_vectors.c.
 */


#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ngx_im_proto.h"
#include "tap.h"


/* the seed's example MsgId: these 32 ASCII characters are the bytes */
#define MSGID        "550e8400e29b41d4a716446655440000"
#define HELLO        "hello world"

/* a second MsgId, to tell two of them apart */
#define MSGID2       "0123456789abcdef0123456789ABCDEF"


/*
 * The seed's worked examples, transcribed from its byte tables.
 *
 * GROUP_PART_PUBLISH: the seed's table draws ToUserNum as "| 0x02 |",
 * one cell, but its format line says ToUserNum:16 and so does
 * docs/PROTOCOL.md 3.3 (N:16): the field is the two bytes 0x00 0x02.
 * Its text lists the uids as [1234, 2345] while its bytes are 0x04d2
 * and 0x04d3: the bytes (1234, 1235) are what is checked.
 */

static const char seed_connect[] =
    "\x01" "\x00\x04" "test" "\x00\x06" "123456" "\x01";

static const char seed_publish[] =
    "\x03" "\x00\x00\x04\xd2" MSGID "\x00\x0b" HELLO;

static const char seed_pub_ack[] = "\x04" MSGID;

static const char seed_group[] =
    "\x05" "\x00\x00\x04\xd2" MSGID "\x00\x0b" HELLO;

static const char seed_group_ack[] = "\x06" MSGID;

static const char seed_part[] =
    "\x0b" "\x00\x00\x04\xd2" MSGID "\x00\x02"
    "\x00\x00\x04\xd2" "\x00\x00\x04\xd3" "\x00\x0b" HELLO;

static const char seed_part_ack[] = "\x0c" MSGID;

/* S->C push of a 1:1 message: no ToUid */
static const char push_msg[] = "\x03" MSGID "\x00\x0b" HELLO;


static uint8_t  *cur;


/* parse from an exact-size copy, kept until the next parse */

static im_rc_t
parse(int server, const uint8_t *p, size_t len, im_msg_t *m)
{
    free(cur);
    cur = tap_dup(p, len);

    return server ? im_parse_server(cur, len, m)
                  : im_parse_client(cur, len, m);
}


static int
msgid_is(const im_msg_t *m, size_t off, const char *id)
{
    return m->msgid == cur + off
           && memcmp(m->msgid, id, IM_MSGID_LEN) == 0;
}


static void
test_seed_connect(void)
{
    im_msg_t  m;
    uint8_t   out[IM_SIZE_CONNECT(4, 6)];
    size_t    n;

    n = im_build_connect(out, U8("test"), 4, U8("123456"), 6, 1, -1);
    tap_bytes(out, n, LIT(seed_connect),
              "seed CONNECT test/123456 role 1: built bytes");

    tap_rc(parse(0, LIT(seed_connect), &m), IM_OK, "seed CONNECT parses");
    tap_ok(m.cmd == IM_CMD_CONNECT
           && m.user == cur + 3 && m.user_len == 4
           && memcmp(m.user, "test", 4) == 0
           && m.pass == cur + 9 && m.pass_len == 6
           && memcmp(m.pass, "123456", 6) == 0
           && m.has_role && m.role == 1
           && !m.has_client_id && m.client_id == 0
           && m.msgid == NULL,
           "seed CONNECT fields: user, pass, role 1, no client id");
}


static void
test_connect_variants(void)
{
    im_msg_t  m;
    uint8_t   out[IM_SIZE_CONNECT(64, 64)];
    size_t    n;

    static const char none[] = "\x01" "\x00\x04" "test" "\x00\x06" "123456";
    static const char both[] =
        "\x01" "\x00\x04" "test" "\x00\x06" "123456" "\x01\x02";
    static const char trail[] =
        "\x01" "\x00\x04" "test" "\x00\x06" "123456" "\x01\x02\x03";
    static const char empty[] = "\x01" "\x00\x00" "\x00\x00";
    static const char cid0[] = "\x01" "\x00\x01" "u" "\x00\x01" "p" "\x00\x7f";
    static const char bsid[] =
        "\x01" "\x00\x0f" "42|##|app|##|77" "\x00\x00" "\x02\x03";

    n = im_build_connect(out, U8("test"), 4, U8("123456"), 6, -1, -1);
    tap_bytes(out, n, LIT(none), "CONNECT without role: built bytes");
    tap_rc(parse(0, LIT(none), &m), IM_OK, "CONNECT without role");
    tap_ok(!m.has_role && !m.has_client_id && m.role == 0
           && m.client_id == 0 && m.user_len == 4 && m.pass_len == 6,
           "CONNECT without role: role and client id absent, read as 0");

    n = im_build_connect(out, U8("test"), 4, U8("123456"), 6, 1, 2);
    tap_bytes(out, n, LIT(both), "CONNECT role 1 client id 2: built bytes");
    tap_rc(parse(0, LIT(both), &m), IM_OK, "CONNECT role + client id");
    tap_ok(m.has_role && m.role == 1 && m.has_client_id && m.client_id == 2,
           "CONNECT role + client id: fields");

    tap_rc(parse(0, LIT(trail), &m), IM_ERR_TRAILING,
           "CONNECT with one byte after the client id");
    tap_ok(m.cmd == IM_CMD_CONNECT && m.user_len == 4 && m.pass_len == 6,
           "CONNECT trailing: cmd, user and pass still reported");

    n = im_build_connect(out, NULL, 0, NULL, 0, -1, -1);
    tap_bytes(out, n, LIT(empty), "CONNECT empty user and pass: built");
    tap_rc(parse(0, LIT(empty), &m), IM_OK, "CONNECT empty user and pass");
    tap_ok(m.user_len == 0 && m.pass_len == 0 && !m.has_role,
           "CONNECT empty user and pass: fields");

    n = im_build_connect(out, U8("u"), 1, U8("p"), 1, -1, 127);
    tap_bytes(out, n, LIT(cid0),
              "CONNECT client id without role: role sent as 0");

    n = im_build_connect(out, U8("42|##|app|##|77"), 15, NULL, 0, 2, 3);
    tap_bytes(out, n, LIT(bsid), "CONNECT field username, empty password");
    tap_rc(parse(0, LIT(bsid), &m), IM_OK, "CONNECT field username parses");
    tap_ok(m.user_len == 15 && memcmp(m.user, "42|##|app|##|77", 15) == 0
           && m.pass_len == 0 && m.role == 2 && m.client_id == 3,
           "CONNECT field username: fields");

    tap_ok(IM_SIZE_CONNECT(4, 6) == sizeof(seed_connect) - 1 + 1,
           "IM_SIZE_CONNECT covers role and client id");
}


static void
test_connect_errors(void)
{
    size_t     i;
    im_msg_t   m;

    static const struct {
        const char  *bytes;
        size_t       len;
        im_rc_t      rc;
        const char  *name;
    } cases[] = {
        { "\x01", 1, IM_ERR_TRUNCATED, "CONNECT without UserLen" },
        { "\x01\x00", 2, IM_ERR_TRUNCATED, "CONNECT with half a UserLen" },
        { "\x01\x00\x05" "abcd", 7, IM_ERR_LENGTH,
          "CONNECT UserLen past the end" },
        { "\x01\xff\xff" "abcd", 7, IM_ERR_LENGTH,
          "CONNECT UserLen 65535 past the end" },
        { "\x01\x00\x01" "a", 4, IM_ERR_TRUNCATED, "CONNECT without PassLen" },
        { "\x01\x00\x01" "a\x00", 5, IM_ERR_TRUNCATED,
          "CONNECT with half a PassLen" },
        { "\x01\x00\x01" "a\x00\x03" "pp", 8, IM_ERR_LENGTH,
          "CONNECT PassLen past the end" },
        { "\x01\x00\x00\x00\x00\x00\x00\x00", 8, IM_ERR_TRAILING,
          "CONNECT empty fields, 3 bytes after PassLen" },
    };

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        tap_rc(parse(0, U8(cases[i].bytes), cases[i].len, &m), cases[i].rc,
               "%s", cases[i].name);
        tap_ok(m.cmd == IM_CMD_CONNECT && m.msgid == NULL,
               "%s: cmd set, no msgid", cases[i].name);
    }
}


/*
 * Every strict prefix of a message with a MsgId must fail with the
 * error of the field it cuts, and report the MsgId exactly when the 32
 * bytes were there.  cuts[] lists, in order, the end offset of each
 * field and the error a cut before that end gives.
 */

typedef struct {
    size_t   end;
    im_rc_t  rc;
} cut_t;


static void
check_prefixes(int server, const char *msg, size_t len, size_t msgid_off,
    const cut_t *cuts, const char *name)
{
    size_t    k, c;
    im_rc_t   rc, want;
    im_msg_t  m;
    int       good;

    good = 1;

    for (k = 0; k < len && good; k++) {
        want = IM_ERR_EMPTY;

        if (k > 0) {
            for (c = 0; k >= cuts[c].end; c++) {
                /* void */
            }

            want = cuts[c].rc;
        }

        rc = parse(server, U8(msg), k, &m);

        if (rc != want) {
            tap_diag("%s cut at %zu: got %s, want %s", name, k,
                     im_rc_str(rc), im_rc_str(want));
            good = 0;
        }

        if (k > 0 && m.cmd != (uint8_t) msg[0]) {
            tap_diag("%s cut at %zu: cmd not set", name, k);
            good = 0;
        }

        if ((k >= msgid_off + IM_MSGID_LEN) != (m.msgid != NULL)
            || (m.msgid && m.msgid != cur + msgid_off))
        {
            tap_diag("%s cut at %zu: msgid %s", name, k,
                     m.msgid ? "set" : "not set");
            good = 0;
        }
    }

    tap_ok(good, "%s: every prefix gives its field's error, msgid iff read",
           name);
}


static void
test_seed_publish(void)
{
    im_msg_t  m;
    uint8_t   out[IM_SIZE_PUBLISH(11) + 1];
    size_t    n;

    static const cut_t  cuts[] = {
        { 5, IM_ERR_TRUNCATED },        /* ToUid */
        { 37, IM_ERR_TRUNCATED },       /* MsgId */
        { 39, IM_ERR_TRUNCATED },       /* Len */
        { 50, IM_ERR_LENGTH },          /* Payload */
        { (size_t) -1, IM_OK }
    };

    n = im_build_publish(out, 1234, U8(MSGID), U8(HELLO), 11);
    tap_bytes(out, n, LIT(seed_publish),
              "seed PUBLISH to 1234, hello world: built bytes");
    tap_ok(n == IM_SIZE_PUBLISH(11), "IM_SIZE_PUBLISH(11) is %zu", n);

    tap_rc(parse(0, LIT(seed_publish), &m), IM_OK,
           "seed PUBLISH parses (C->S)");
    tap_ok(m.cmd == IM_CMD_PUBLISH && m.to == 1234 && msgid_is(&m, 5, MSGID)
           && m.payload == cur + 39 && m.payload_len == 11
           && memcmp(m.payload, HELLO, 11) == 0
           && m.n_uids == 0 && m.uids == NULL,
           "seed PUBLISH fields: to 1234, msgid, payload");

    check_prefixes(0, seed_publish, sizeof(seed_publish) - 1, 5, cuts,
                   "PUBLISH C->S");

    memcpy(out, seed_publish, sizeof(seed_publish) - 1);
    out[sizeof(seed_publish) - 1] = 'X';
    tap_rc(parse(0, out, sizeof(seed_publish), &m), IM_ERR_TRAILING,
           "PUBLISH with a byte after the payload");
    tap_ok(msgid_is(&m, 5, MSGID) && m.to == 1234,
           "PUBLISH trailing: msgid and to still reported");

    n = im_build_ack(out, IM_CMD_PUB_ACK, U8(MSGID));
    tap_bytes(out, n, LIT(seed_pub_ack), "seed PUB_ACK: built bytes");
    tap_rc(parse(1, LIT(seed_pub_ack), &m), IM_OK,
           "seed PUB_ACK parses (S->C)");
    tap_ok(m.cmd == IM_CMD_PUB_ACK && msgid_is(&m, 1, MSGID)
           && m.ack_extra == 0, "seed PUB_ACK (S->C) fields");
    tap_rc(parse(0, LIT(seed_pub_ack), &m), IM_OK, "PUB_ACK parses (C->S)");
    tap_ok(msgid_is(&m, 1, MSGID) && m.ack_extra == 0,
           "PUB_ACK (C->S) fields");
}


static void
test_push(void)
{
    im_msg_t  m;
    uint8_t   out[IM_SIZE_PUSH(11)];
    size_t    n;

    static const cut_t  cuts[] = {
        { 33, IM_ERR_TRUNCATED },       /* MsgId */
        { 35, IM_ERR_TRUNCATED },       /* Len */
        { 46, IM_ERR_LENGTH },          /* Payload */
        { (size_t) -1, IM_OK }
    };

    n = im_build_push(out, U8(MSGID), U8(HELLO), 11);
    tap_bytes(out, n, LIT(push_msg), "S->C push <<3,MsgId,Len,P>>: built");
    tap_ok(n == IM_SIZE_PUSH(11), "IM_SIZE_PUSH(11) is %zu", n);

    tap_rc(parse(1, LIT(push_msg), &m), IM_OK, "push parses (S->C)");
    tap_ok(m.cmd == IM_CMD_PUBLISH && m.to == 0 && msgid_is(&m, 1, MSGID)
           && m.payload == cur + 35 && m.payload_len == 11,
           "push fields: msgid, payload, no to");

    check_prefixes(1, push_msg, sizeof(push_msg) - 1, 1, cuts, "push S->C");

    /* an empty payload is a valid message */
    n = im_build_push(out, U8(MSGID2), NULL, 0);
    tap_bytes(out, n, LIT("\x03" MSGID2 "\x00\x00"), "push with no payload");
    tap_rc(parse(1, out, n, &m), IM_OK, "push with no payload parses");
    tap_ok(m.payload_len == 0 && m.payload == cur + 35,
           "push with no payload: empty payload at the end");
}


static void
test_seed_group(void)
{
    im_msg_t  m;
    uint8_t   out[IM_SIZE_GROUP(11)];
    size_t    n;
    int       dir;

    static const cut_t  cuts[] = {
        { 5, IM_ERR_TRUNCATED },
        { 37, IM_ERR_TRUNCATED },
        { 39, IM_ERR_TRUNCATED },
        { 50, IM_ERR_LENGTH },
        { (size_t) -1, IM_OK }
    };

    n = im_build_group(out, 1234, U8(MSGID), U8(HELLO), 11);
    tap_bytes(out, n, LIT(seed_group),
              "seed GROUP_PUBLISH to group 1234: built bytes");

    for (dir = 0; dir < 2; dir++) {
        tap_rc(parse(dir, LIT(seed_group), &m), IM_OK,
               "seed GROUP_PUBLISH parses (%s)", dir ? "S->C" : "C->S");
        tap_ok(m.cmd == IM_CMD_GROUP_PUBLISH && m.to == 1234
               && msgid_is(&m, 5, MSGID) && m.payload == cur + 39
               && m.payload_len == 11, "GROUP_PUBLISH %s fields",
               dir ? "S->C" : "C->S");
        check_prefixes(dir, seed_group, sizeof(seed_group) - 1, 5, cuts,
                       dir ? "GROUP_PUBLISH S->C" : "GROUP_PUBLISH C->S");
    }

    n = im_build_ack(out, IM_CMD_GROUP_PUB_ACK, U8(MSGID));
    tap_bytes(out, n, LIT(seed_group_ack), "seed GROUP_PUB_ACK: built bytes");
    tap_rc(parse(1, LIT(seed_group_ack), &m), IM_OK,
           "GROUP_PUB_ACK parses (S->C)");
    tap_ok(m.cmd == IM_CMD_GROUP_PUB_ACK && msgid_is(&m, 1, MSGID),
           "GROUP_PUB_ACK fields");
}


static void
test_seed_part(void)
{
    im_msg_t  m;
    uint8_t   out[IM_SIZE_PART(2, 11)];
    uint8_t   uids[8];
    size_t    n;
    int       dir;

    static const cut_t  cuts[] = {
        { 5, IM_ERR_TRUNCATED },        /* Gid */
        { 37, IM_ERR_TRUNCATED },       /* MsgId */
        { 39, IM_ERR_TRUNCATED },       /* N */
        { 47, IM_ERR_LENGTH },          /* Uid x N */
        { 49, IM_ERR_TRUNCATED },       /* Len */
        { 60, IM_ERR_LENGTH },          /* Payload */
        { (size_t) -1, IM_OK }
    };

    im_put_u32(im_put_u32(uids, 1234), 1235);

    n = im_build_part(out, 1234, U8(MSGID), 2, uids, U8(HELLO), 11);
    tap_bytes(out, n, LIT(seed_part),
              "seed GROUP_PART_PUBLISH group 1234 uids [1234, 1235]: built");
    tap_ok(n == IM_SIZE_PART(2, 11), "IM_SIZE_PART(2, 11) is %zu", n);

    for (dir = 0; dir < 2; dir++) {
        tap_rc(parse(dir, LIT(seed_part), &m), IM_OK,
               "seed GROUP_PART_PUBLISH parses (%s)", dir ? "S->C" : "C->S");
        tap_ok(m.cmd == IM_CMD_GROUP_PART_PUBLISH && m.to == 1234
               && msgid_is(&m, 5, MSGID) && m.n_uids == 2
               && m.uids == cur + 39 && im_get_u32(m.uids) == 1234
               && im_get_u32(m.uids + 4) == 1235
               && m.payload == cur + 49 && m.payload_len == 11
               && memcmp(m.payload, HELLO, 11) == 0,
               "GROUP_PART_PUBLISH %s fields: gid, msgid, 2 uids, payload",
               dir ? "S->C" : "C->S");
        check_prefixes(dir, seed_part, sizeof(seed_part) - 1, 5, cuts,
                       dir ? "GROUP_PART_PUBLISH S->C"
                           : "GROUP_PART_PUBLISH C->S");
    }

    n = im_build_ack(out, IM_CMD_GROUP_PART_PUB_ACK, U8(MSGID));
    tap_bytes(out, n, LIT(seed_part_ack),
              "seed GROUP_PART_PUB_ACK: built bytes");
    tap_rc(parse(1, LIT(seed_part_ack), &m), IM_OK,
           "GROUP_PART_PUB_ACK parses (S->C)");

    /* no recipients is well formed; refusing it is the session's job */
    n = im_build_part(out, 7, U8(MSGID2), 0, NULL, U8("x"), 1);
    tap_bytes(out, n,
              LIT("\x0b" "\x00\x00\x00\x07" MSGID2 "\x00\x00" "\x00\x01" "x"),
              "GROUP_PART_PUBLISH with N = 0: built");
    tap_rc(parse(0, out, n, &m), IM_OK, "GROUP_PART_PUBLISH with N = 0");
    tap_ok(m.n_uids == 0 && m.payload_len == 1 && m.to == 7,
           "GROUP_PART_PUBLISH with N = 0: fields");

    tap_rc(parse(0, LIT("\x0b" "\x00\x00\x00\x07" MSGID2 "\xff\xff"
                        "\x00\x00\x00\x01" "\x00\x00"), &m),
           IM_ERR_LENGTH, "GROUP_PART_PUBLISH N = 65535 past the end");
    tap_ok(msgid_is(&m, 5, MSGID2) && m.uids == NULL && m.n_uids == 0,
           "GROUP_PART_PUBLISH N past the end: msgid set, uids not");
}


static void
test_acks(void)
{
    static const uint8_t  cmds[] = {
        IM_CMD_PUB_ACK, IM_CMD_GROUP_PUB_ACK, IM_CMD_GROUP_PART_PUB_ACK
    };

    size_t       i;
    im_msg_t     m;
    uint8_t      msg[1 + IM_MSGID_LEN + 1 + IM_MSGID_LEN + 1];
    const char  *name;

    for (i = 0; i < sizeof(cmds); i++) {
        name = im_cmd_str(cmds[i]);

        /* <<Cmd, MsgId>>, then MsgId ++ "_" ++ 32 more bytes */
        msg[0] = cmds[i];
        memcpy(msg + 1, MSGID, IM_MSGID_LEN);
        msg[1 + IM_MSGID_LEN] = '_';
        memcpy(msg + 2 + IM_MSGID_LEN, MSGID2, IM_MSGID_LEN);
        msg[sizeof(msg) - 1] = '!';

        tap_rc(parse(0, msg, 33, &m), IM_OK, "%s C->S, 33 bytes", name);
        tap_ok(m.cmd == cmds[i] && msgid_is(&m, 1, MSGID) && m.ack_extra == 0,
               "%s C->S, 33 bytes: msgid, no extra", name);

        tap_rc(parse(0, msg, 66, &m), IM_OK,
               "%s C->S, MsgId_MsgId (66 bytes, the field client's)", name);
        tap_ok(msgid_is(&m, 1, MSGID) && m.ack_extra == 33,
               "%s C->S, 66 bytes: first MsgId, extra 33", name);

        tap_rc(parse(0, msg, 34, &m), IM_OK, "%s C->S, 34 bytes", name);
        tap_ok(m.ack_extra == 1, "%s C->S, 34 bytes: extra 1", name);

        tap_rc(parse(0, msg, 32, &m), IM_ERR_TRUNCATED,
               "%s C->S, 32 bytes", name);
        tap_ok(m.cmd == cmds[i] && m.msgid == NULL && m.ack_extra == 0,
               "%s C->S, 32 bytes: cmd set, no msgid", name);

        tap_rc(parse(0, msg, 1, &m), IM_ERR_TRUNCATED,
               "%s C->S, no MsgId at all", name);

        tap_rc(parse(1, msg, 33, &m), IM_OK, "%s S->C, 33 bytes", name);
        tap_ok(msgid_is(&m, 1, MSGID), "%s S->C: msgid", name);

        tap_rc(parse(1, msg, 34, &m), IM_ERR_TRAILING,
               "%s S->C, 34 bytes (the server sends none)", name);
        tap_ok(msgid_is(&m, 1, MSGID),
               "%s S->C, 34 bytes: msgid still set", name);

        tap_rc(parse(1, msg, 20, &m), IM_ERR_TRUNCATED,
               "%s S->C, 20 bytes", name);
    }
}


static void
test_connect_ack(void)
{
    unsigned  code;
    im_msg_t  m;
    uint8_t   out[IM_SIZE_CONNECT_ACK];
    uint8_t   want[2];
    size_t    n;

    for (code = 0; code <= 3; code++) {
        n = im_build_connect_ack(out, (uint8_t) code);
        want[0] = 0x02;
        want[1] = (uint8_t) code;
        tap_bytes(out, n, want, 2, "CONNECT_ACK code %u: built bytes", code);
        tap_rc(parse(1, out, n, &m), IM_OK, "CONNECT_ACK code %u parses",
               code);
        tap_ok(m.cmd == IM_CMD_CONNECT_ACK && m.code == code,
               "CONNECT_ACK code %u: code", code);
    }

    tap_rc(parse(1, LIT("\x02"), &m), IM_ERR_TRUNCATED,
           "CONNECT_ACK without code");
    tap_rc(parse(1, LIT("\x02\x00\x00"), &m), IM_ERR_TRAILING,
           "CONNECT_ACK with a byte more");
    tap_ok(m.code == 0 && m.cmd == IM_CMD_CONNECT_ACK,
           "CONNECT_ACK with a byte more: code read");
    tap_rc(parse(0, LIT("\x02\x00"), &m), IM_ERR_UNKNOWN_CMD,
           "CONNECT_ACK from a client");
}


static void
test_simple(void)
{
    static const uint8_t  both[] = {
        IM_CMD_PING, IM_CMD_PING_RESP, IM_CMD_DISCONNECT
    };

    size_t    i;
    int       dir;
    uint8_t   out[2];
    size_t    n;
    im_msg_t  m;

    for (i = 0; i < sizeof(both); i++) {
        n = im_build_simple(out, both[i]);
        tap_bytes(out, n, &both[i], 1, "%s: built, one byte",
                  im_cmd_str(both[i]));

        for (dir = 0; dir < 2; dir++) {
            tap_rc(parse(dir, out, 1, &m), IM_OK, "%s %s",
                   im_cmd_str(both[i]), dir ? "S->C" : "C->S");
            tap_ok(m.cmd == both[i], "%s %s: cmd", im_cmd_str(both[i]),
                   dir ? "S->C" : "C->S");

            out[1] = 0;
            tap_rc(parse(dir, out, 2, &m), IM_ERR_TRAILING,
                   "%s %s with a byte more", im_cmd_str(both[i]),
                   dir ? "S->C" : "C->S");
            tap_ok(m.cmd == both[i], "%s %s with a byte more: cmd set",
                   im_cmd_str(both[i]), dir ? "S->C" : "C->S");
        }
    }

    n = im_build_simple(out, IM_CMD_LOGOUT);
    tap_bytes(out, n, LIT("\x14"), "LOGOUT: built <<20>>");
    tap_rc(parse(1, out, n, &m), IM_OK, "LOGOUT parses (S->C)");
    tap_rc(parse(1, LIT("\x14\x14"), &m), IM_ERR_TRAILING,
           "LOGOUT with a byte more");
    tap_rc(parse(0, out, n, &m), IM_ERR_UNKNOWN_CMD, "LOGOUT from a client");
}


static void
test_receipt(void)
{
    im_msg_t  m;
    uint8_t   out[IM_SIZE_RECEIPT + 1];
    size_t    n;

    n = im_build_receipt(out, U8(MSGID), 0x01020304);
    tap_bytes(out, n, LIT("\x0d" MSGID "\x01\x02\x03\x04"),
              "RECEIPT <<13,MsgId,Uid>>: built");
    tap_ok(n == IM_SIZE_RECEIPT, "IM_SIZE_RECEIPT is %zu", n);
    tap_rc(parse(1, out, n, &m), IM_OK, "RECEIPT parses (S->C)");
    tap_ok(m.cmd == IM_CMD_RECEIPT && msgid_is(&m, 1, MSGID)
           && m.to == 0x01020304, "RECEIPT: msgid and uid");
    tap_rc(parse(1, out, n - 1, &m), IM_ERR_TRUNCATED,
           "RECEIPT one byte short");
    out[n] = 0;
    tap_rc(parse(1, out, n + 1, &m), IM_ERR_TRAILING,
           "RECEIPT with a byte after the uid");
    tap_rc(parse(0, out, n, &m), IM_ERR_UNKNOWN_CMD,
           "RECEIPT from a client");
}


static void
test_invalid(void)
{
    im_msg_t  m;
    uint8_t   out[IM_SIZE_INVALID + 1];
    size_t    n, k;
    int       good;

    n = im_build_invalid(out, IM_CMD_PUBLISH, NULL);
    tap_bytes(out, n, LIT("\x0a\x03"), "INVALID_PACKET <<10,Cmd>>: built");
    tap_rc(parse(1, out, n, &m), IM_OK, "INVALID_PACKET <<10,Cmd>> parses");
    tap_ok(m.cmd == IM_CMD_INVALID && m.code == IM_CMD_PUBLISH
           && m.msgid == NULL, "INVALID_PACKET <<10,3>>: code 3, no msgid");

    n = im_build_invalid(out, IM_CMD_GROUP_PUBLISH, U8(MSGID));
    tap_bytes(out, n, LIT("\x0a\x05" MSGID),
              "INVALID_PACKET <<10,Cmd,MsgId>>: built");
    tap_ok(n == IM_SIZE_INVALID, "IM_SIZE_INVALID is %zu", n);
    tap_rc(parse(1, out, n, &m), IM_OK, "INVALID_PACKET with MsgId parses");
    tap_ok(m.code == IM_CMD_GROUP_PUBLISH && msgid_is(&m, 2, MSGID),
           "INVALID_PACKET <<10,5,MsgId>>: code 5, msgid");

    out[IM_SIZE_INVALID] = 0;
    tap_rc(parse(1, out, IM_SIZE_INVALID + 1, &m), IM_ERR_TRAILING,
           "INVALID_PACKET with a byte after the MsgId");
    tap_ok(msgid_is(&m, 2, MSGID), "INVALID_PACKET trailing: msgid set");

    tap_rc(parse(1, out, 1, &m), IM_ERR_TRUNCATED, "INVALID_PACKET <<10>>");

    good = 1;

    for (k = 3; k < IM_SIZE_INVALID; k++) {
        if (parse(1, out, k, &m) != IM_ERR_TRUNCATED || m.msgid != NULL
            || m.code != IM_CMD_GROUP_PUBLISH)
        {
            tap_diag("INVALID_PACKET of %zu bytes", k);
            good = 0;
        }
    }

    tap_ok(good, "INVALID_PACKET of 3..33 bytes: truncated MsgId");

    tap_rc(parse(0, out, IM_SIZE_INVALID, &m), IM_ERR_UNKNOWN_CMD,
           "INVALID_PACKET from a client");
}


static void
test_unknown(void)
{
    unsigned  c;
    int       dir, good;
    im_msg_t  m;
    uint8_t   msg[40];
    im_rc_t   rc;

    static const char  client_ok[256] = {
        [1] = 1, [3] = 1, [4] = 1, [5] = 1, [6] = 1, [7] = 1, [8] = 1,
        [9] = 1, [11] = 1, [12] = 1
    };
    static const char  server_ok[256] = {
        [2] = 1, [3] = 1, [4] = 1, [5] = 1, [6] = 1, [7] = 1, [8] = 1,
        [9] = 1, [10] = 1, [11] = 1, [12] = 1, [13] = 1, [20] = 1
    };

    memset(msg, 0, sizeof(msg));

    for (dir = 0; dir < 2; dir++) {
        good = 1;

        for (c = 0; c < 256; c++) {
            msg[0] = (uint8_t) c;
            rc = parse(dir, msg, sizeof(msg), &m);

            if ((rc == IM_ERR_UNKNOWN_CMD) == (dir ? server_ok[c]
                                                    : client_ok[c])
                || m.cmd != c)
            {
                tap_diag("cmd %u: %s", c, im_rc_str(rc));
                good = 0;
            }
        }

        tap_ok(good, "%s: exactly the commands of docs/PROTOCOL.md are"
               " known", dir ? "S->C" : "C->S");

        tap_rc(parse(dir, msg, 0, &m), IM_ERR_EMPTY, "empty message %s",
               dir ? "S->C" : "C->S");
        tap_ok(m.cmd == 0 && m.msgid == NULL, "empty message: nothing set");
    }

    tap_rc(parse(0, LIT("\x00"), &m), IM_ERR_UNKNOWN_CMD, "cmd 0 (C->S)");
    tap_rc(parse(0, LIT("\x0a\x03"), &m), IM_ERR_UNKNOWN_CMD,
           "INVALID_PACKET is not a client command");
    tap_rc(parse(1, LIT("\x01\x00\x00\x00\x00"), &m), IM_ERR_UNKNOWN_CMD,
           "CONNECT is not a server command");
    tap_rc(parse(1, LIT("\xff"), &m), IM_ERR_UNKNOWN_CMD, "cmd 255 (S->C)");
}


static void
test_limits(void)
{
    im_msg_t   m;
    uint8_t   *big, *payload, *uids;
    size_t     n;
    int        i;

    payload = malloc(65535);
    uids = malloc(4 * 65535);
    big = malloc(IM_SIZE_PART(65535, 65535));

    if (payload == NULL || uids == NULL || big == NULL) {
        tap_ok(0, "allocation for the limit tests");
        goto done;
    }

    for (i = 0; i < 65535; i++) {
        payload[i] = (uint8_t) (i * 7);
        im_put_u32(uids + 4 * i, 0xfffe0000 + i);
    }

    n = im_build_publish(big, 0xffffffff, U8(MSGID), payload, 65535);
    tap_ok(n == IM_SIZE_PUBLISH(65535) && im_get_u32(big + 1) == 0xffffffff
           && big[37] == 0xff && big[38] == 0xff
           && memcmp(big + 39, payload, 65535) == 0,
           "PUBLISH with uid 2^32-1 and a 65535-byte payload: built");
    tap_rc(parse(0, big, n, &m), IM_OK, "PUBLISH 65535-byte payload parses");
    tap_ok(m.to == 0xffffffff && m.payload_len == 65535,
           "PUBLISH limits: to and payload length");

    n = im_build_part(big, 1, U8(MSGID), 65535, uids, payload, 65535);
    tap_ok(n == IM_SIZE_PART(65535, 65535)
           && memcmp(big + 37, "\xff\xff\xff\xfe\x00\x00", 6) == 0,
           "GROUP_PART_PUBLISH with 65535 uids: built");
    tap_rc(parse(1, big, n, &m), IM_OK, "GROUP_PART_PUBLISH, 65535 uids");
    tap_ok(m.n_uids == 65535 && m.payload_len == 65535
           && m.uids == cur + 39
           && memcmp(m.uids, uids, 4 * 65535) == 0
           && im_get_u32(m.uids + 4 * 65534) == 0xfffe0000 + 65534,
           "GROUP_PART_PUBLISH 65535 uids: raw big-endian uids");

    tap_rc(parse(0, big, n - 1, &m), IM_ERR_LENGTH,
           "GROUP_PART_PUBLISH, 65535 uids, payload a byte short");
    tap_ok(m.n_uids == 65535 && m.payload == NULL,
           "payload a byte short: uids set, payload not");

done:

    free(payload);
    free(uids);
    free(big);
}


static void
test_helpers(void)
{
    uint8_t  b[6];
    int      i, j, distinct;

    static const im_rc_t  rcs[] = {
        IM_OK, IM_ERR_EMPTY, IM_ERR_UNKNOWN_CMD, IM_ERR_TRUNCATED,
        IM_ERR_LENGTH, IM_ERR_TRAILING
    };

    tap_ok(im_put_u32(b, 0x01020304) == b + 4
           && memcmp(b, "\x01\x02\x03\x04", 4) == 0
           && im_get_u32(b) == 0x01020304, "im_put_u32 / im_get_u32");
    tap_ok(im_put_u16(b + 4, 0xfedc) == b + 6
           && b[4] == 0xfe && b[5] == 0xdc && im_get_u16(b + 4) == 0xfedc,
           "im_put_u16 / im_get_u16");

    distinct = 1;

    for (i = 0; i < 6; i++) {
        for (j = 0; j < i; j++) {
            if (strcmp(im_rc_str(rcs[i]), im_rc_str(rcs[j])) == 0) {
                distinct = 0;
            }
        }
    }

    tap_ok(distinct && strcmp(im_rc_str(IM_OK), "ok") == 0,
           "im_rc_str: a distinct string for each result");
    tap_ok(strcmp(im_cmd_str(IM_CMD_GROUP_PART_PUBLISH),
                  "GROUP_PART_PUBLISH") == 0
           && strcmp(im_cmd_str(0), "UNKNOWN") == 0, "im_cmd_str");
}


void
test_proto(void)
{
    test_seed_connect();
    test_connect_variants();
    test_connect_errors();
    test_seed_publish();
    test_push();
    test_seed_group();
    test_seed_part();
    test_acks();
    test_connect_ack();
    test_simple();
    test_invalid();
    test_receipt();
    test_unknown();
    test_limits();
    test_helpers();

    free(cur);
    cur = NULL;
}
