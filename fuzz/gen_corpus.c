
/*
 * gen_corpus.c: writes the committed seed corpora (`make corpus`).
 *
 * Owns the seed inputs of both fuzz targets, built with the codecs' own
 * builders so that they stay in step with them: every protocol message
 * valid and broken in the usual ways for fuzz_proto; for fuzz_wsframe
 * frame streams on both sides, each behind the target's 3-byte prefix
 * (flags, split point), and a few frame lists for its structured mode;
 * for fuzz_traffic every record type, at and around each length the
 * parser accepts or refuses; for fuzz_payload payloads that pass and
 * fail the sender check.
 * Not linked with libFuzzer; run by hand, its output is committed.
 */


#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ngx_im_proto.h"
#include "ngx_im_wsframe.h"
#include "ngx_im_traffic.h"


#define MSGID   "550e8400e29b41d4a716446655440000"
#define HELLO   "hello world"
#define U8(s)   ((const uint8_t *) (s))

/* fuzz_wsframe's flags byte: side, max_message index, structured mode */
#define SERVER        0x01
#define MAX_125       (2 << 1)
#define MAX_1K        (4 << 1)
#define MAX_1M        (7 << 1)
#define STRUCTURED    0x80


static const char     *dir;
static const uint8_t   mask[4] = { 0x12, 0x34, 0x56, 0x78 };


static void
out(const char *target, const char *name, const uint8_t *p, size_t n)
{
    char   path[512];
    FILE  *f;

    snprintf(path, sizeof(path), "%s/%s/%s", dir, target, name);

    f = fopen(path, "wb");
    if (f == NULL || fwrite(p, 1, n, f) != n || fclose(f) != 0) {
        perror(path);
        exit(1);
    }
}


static void
proto(const char *name, const uint8_t *p, size_t n)
{
    out("fuzz_proto", name, p, n);
}


/* <<Cmd selector, Sender:32, To:32>> ++ payload */

static void
payload(const char *name, uint8_t sel, uint32_t sender, uint32_t to,
    const char *text)
{
    uint8_t  b[512];
    size_t   n;

    n = strlen(text);
    b[0] = sel;
    im_put_u32(b + 1, sender);
    im_put_u32(b + 5, to);
    memcpy(b + 9, text, n);

    out("fuzz_payload", name, b, 9 + n);
}


static void
gen_payload(void)
{
    payload("ok_numbers", 0, 1001, 1002,
            "{\"from\":1001,\"to\":1002,\"content\":{\"type\":\"text\","
            "\"text\":\"hi\"}}");
    payload("ok_strings", 0, 1001, 1002,
            "{\"from\":\"1001\",\"to\":\"1002\"}");
    payload("ok_group", 1, 1001, 7, "{\"from\":1001,\"to\":7,\"gid\":7}");
    payload("ok_part", 2, 1001, 7, "{\"from\":1001,\"gid\":\"7\"}");
    payload("spoof", 0, 1001, 1002, "{\"from\":1003,\"to\":1002}");
    payload("no_from", 0, 1001, 1002, "{\"to\":1002}");
    payload("twice", 0, 1001, 1002, "{\"from\":1001,\"from\":1003}");
    payload("nul_escape", 0, 1001, 1002, "{\"from\":\"1001\\u0000\"}");
    payload("escaped_key", 0, 1001, 1002, "{\"\\u0066rom\":1001}");
    payload("exponent", 0, 1001, 1002, "{\"from\":1.001e3}");
    payload("leading_zero", 0, 1001, 1002, "{\"from\":\"01001\"}");
    payload("gid_in_publish", 0, 1001, 1002, "{\"from\":1001,\"gid\":1}");
    payload("array", 0, 1001, 1002, "[{\"from\":1001}]");
    payload("trailing", 0, 1001, 1002, "{\"from\":1001} x");
    payload("nested", 0, 1001, 1002,
            "{\"from\":1001,\"a\":[[[{\"b\":[1,2.5e-3,true,null]}]]]}");
    payload("text", 0, 1001, 1002, "hello world");
}


static void
gen_proto(void)
{
    uint8_t  b[256], uids[8];
    size_t   n;

    n = im_build_connect(b, U8("test"), 4, U8("123456"), 6, 1, -1);
    proto("connect_seed", b, n);

    /* the field client's lengths in UTF-16 units (docs/PROTOCOL.md 8) */
    proto("connect_utf16",
          U8("\x01\x00\x02" "\xe5\xbc\xa0\xe4\xb8\x89"
             "\x00\x02" "\xe5\xaf\x86\xe7\xa0\x81" "\x01\x02"), 19);
    proto("connect_utf16_pair",
          U8("\x01\x00\x03" "a\xf0\x9f\x98\x80" "\x00\x00"), 10);
    n = im_build_publish(b, 1002, U8(MSGID), U8("h\xc3\xa9"), 3);
    b[1 + 4 + 32 + 1] = 2;
    proto("publish_utf16", b, n);
    n = im_build_part(b, 7, U8(MSGID), 1, U8("\x00\x00\x03\xea"),
                      U8("\xe5\xbc\xa0"), 3);
    b[1 + 4 + 32 + 2 + 4 + 1] = 1;
    proto("part_utf16", b, n);
    n = im_build_connect(b, U8("test"), 4, U8("123456"), 6, -1, -1);
    proto("connect_no_role", b, n);
    n = im_build_connect(b, U8("42|##|app|##|77"), 15, U8("pw"), 2, 2, 3);
    proto("connect_role_client_id", b, n);
    b[n++] = 0;
    proto("connect_trailing", b, n);
    proto("connect_user_past_end", U8("\x01\x00\x09" "abc"), 6);
    proto("connect_no_passlen", U8("\x01\x00\x01" "a"), 4);

    n = im_build_publish(b, 1234, U8(MSGID), U8(HELLO), 11);
    proto("publish_seed", b, n);
    proto("publish_cut_in_msgid", b, 20);
    proto("publish_no_len", b, 37);
    b[n++] = 'x';
    proto("publish_trailing", b, n);
    n = im_build_publish(b, 7, U8(MSGID), U8(HELLO), 11);
    b[38] = 0x20;
    proto("publish_len_past_end", b, n);

    n = im_build_push(b, U8(MSGID), U8("{\"content\":1}"), 13);
    proto("push", b, n);

    n = im_build_group(b, 1234, U8(MSGID), U8(HELLO), 11);
    proto("group_seed", b, n);

    im_put_u32(im_put_u32(uids, 1234), 1235);
    n = im_build_part(b, 1234, U8(MSGID), 2, uids, U8(HELLO), 11);
    proto("part_seed", b, n);
    proto("part_cut_in_uids", b, 43);
    n = im_build_part(b, 9, U8(MSGID), 0, NULL, U8("x"), 1);
    proto("part_no_uids", b, n);
    b[38] = 0x40;
    proto("part_n_past_end", b, n);

    n = im_build_ack(b, IM_CMD_PUB_ACK, U8(MSGID));
    proto("pub_ack", b, n);
    proto("pub_ack_short", b, n - 1);
    b[n] = '_';
    memcpy(b + n + 1, MSGID, 32);
    proto("pub_ack_long", b, n + 33);
    n = im_build_ack(b, IM_CMD_GROUP_PUB_ACK, U8(MSGID));
    proto("group_pub_ack", b, n);
    n = im_build_ack(b, IM_CMD_GROUP_PART_PUB_ACK, U8(MSGID));
    proto("group_part_pub_ack", b, n);

    n = im_build_connect_ack(b, 0);
    proto("connect_ack_0", b, n);
    n = im_build_connect_ack(b, 3);
    proto("connect_ack_3", b, n);
    proto("connect_ack_short", b, 1);

    n = im_build_simple(b, IM_CMD_PING);
    proto("ping", b, n);
    b[n++] = 0;
    proto("ping_trailing", b, n);
    n = im_build_simple(b, IM_CMD_PING_RESP);
    proto("ping_resp", b, n);
    n = im_build_simple(b, IM_CMD_DISCONNECT);
    proto("disconnect", b, n);
    n = im_build_simple(b, IM_CMD_LOGOUT);
    proto("logout", b, n);

    n = im_build_invalid(b, IM_CMD_PUBLISH, NULL);
    proto("invalid", b, n);
    n = im_build_invalid(b, IM_CMD_GROUP_PUBLISH, U8(MSGID));
    proto("invalid_msgid", b, n);
    proto("invalid_cut", b, 20);

    n = im_build_receipt(b, U8(MSGID), 1002);
    proto("receipt", b, n);
    proto("receipt_cut", b, n - 1);

    proto("empty", b, 0);
    proto("cmd_0", U8("\x00"), 1);
    proto("cmd_13", U8("\x0d\x00"), 2);
    proto("cmd_255", U8("\xff"), 1);
}


/* a fuzz_wsframe input: flags, split point, then the stream */

static uint8_t  ws[2048];
static size_t   wlen;


static void
ws_start(unsigned flags, unsigned split)
{
    ws[0] = (uint8_t) flags;
    ws[1] = (uint8_t) (split >> 8);
    ws[2] = (uint8_t) split;
    wlen = 3;
}


/* a frame as the side of the input expects it (masked to a server) */

static void
ws_frame(int opcode, int fin, const void *payload, size_t len)
{
    if (ws[0] & SERVER) {
        wlen += im_ws_build_masked(ws + wlen, opcode, fin, payload, len,
                                   mask);
        return;
    }

    wlen += im_ws_header(ws + wlen, opcode, fin, len);
    memcpy(ws + wlen, payload, len);
    wlen += len;
}


static void
ws_raw(const void *p, size_t len)
{
    memcpy(ws + wlen, p, len);
    wlen += len;
}


static void
ws_out(const char *name)
{
    out("fuzz_wsframe", name, ws, wlen);
}


static void
gen_wsframe(void)
{
    static uint8_t  big[1000];
    uint8_t         cl[64];
    size_t          n;

    memset(big, 'b', sizeof(big));

    ws_start(SERVER | MAX_1K, 5);
    ws_frame(IM_WS_OP_BINARY, 1, HELLO, 11);
    ws_out("server_binary");

    ws_start(SERVER | MAX_1K, 9);
    ws_frame(IM_WS_OP_TEXT, 1, "caf\xc3\xa9", 5);
    ws_frame(IM_WS_OP_BINARY, 1, "", 0);
    ws_out("server_text_then_empty");

    ws_start(SERVER | MAX_1K, 17);
    ws_frame(IM_WS_OP_TEXT, 0, "Hel", 3);
    ws_frame(IM_WS_OP_PING, 1, "p", 1);
    ws_frame(IM_WS_OP_CONT, 0, "lo ", 3);
    ws_frame(IM_WS_OP_PONG, 1, "", 0);
    ws_frame(IM_WS_OP_CONT, 1, "world", 5);
    ws_out("server_fragmented_ping");

    ws_start(SERVER | MAX_1K, 3);
    n = im_ws_close_payload(cl, 1000, U8("bye"), 3);
    ws_frame(IM_WS_OP_CLOSE, 1, cl, n);
    ws_out("server_close_1000");

    ws_start(SERVER | MAX_1K, 1);
    ws_frame(IM_WS_OP_CLOSE, 1, "", 0);
    ws_out("server_close_empty");

    ws_start(SERVER | MAX_1K, 2);
    ws_frame(IM_WS_OP_CLOSE, 1, "\x03", 1);
    ws_out("server_close_1_byte");

    ws_start(SERVER | MAX_1K, 4);
    n = im_ws_close_payload(cl, 1005, NULL, 0);
    ws_frame(IM_WS_OP_CLOSE, 1, cl, n);
    ws_out("server_close_1005");

    ws_start(SERVER | MAX_1K, 6);
    n = im_ws_close_payload(cl, 4000, U8("\xed\xa0\x80"), 3);
    ws_frame(IM_WS_OP_CLOSE, 1, cl, n);
    ws_out("server_close_bad_utf8");

    ws_start(SERVER | MAX_1K, 70);
    ws_frame(IM_WS_OP_PING, 1, big, 125);
    ws_frame(IM_WS_OP_PONG, 1, big, 125);
    ws_out("server_ping_125");

    ws_start(SERVER | MAX_1K, 0);
    ws_frame(IM_WS_OP_PING, 1, big, 126);
    ws_out("server_ping_126");

    ws_start(SERVER | MAX_1K, 1);
    ws_frame(IM_WS_OP_PING, 0, "x", 1);
    ws_out("server_ping_no_fin");

    ws_start(SERVER | MAX_1K, 1);
    ws_frame(IM_WS_OP_BINARY, 1, "x", 1);
    ws[3] |= 0x40;
    ws_out("server_rsv1");

    ws_start(SERVER | MAX_1K, 1);
    ws_frame(3, 1, "x", 1);
    ws_out("server_opcode_3");

    ws_start(SERVER | MAX_1K, 1);
    ws_frame(IM_WS_OP_CONT, 1, "x", 1);
    ws_out("server_cont_alone");

    ws_start(SERVER | MAX_1K, 8);
    ws_frame(IM_WS_OP_TEXT, 0, "x", 1);
    ws_frame(IM_WS_OP_BINARY, 1, "y", 1);
    ws_out("server_data_inside_fragments");

    ws_start(SERVER | MAX_1K, 100);
    ws_frame(IM_WS_OP_BINARY, 1, big, 300);
    ws_out("server_len16");

    ws_start(SERVER | MAX_1K, 12);
    ws_raw("\x82\xff\x00\x00\x00\x00\x00\x00\x00\x05" "\0\0\0\0" "12345",
           19);
    ws_out("server_len64_short");

    ws_start(SERVER | MAX_1M, 2);
    ws_raw("\x82\xff\x80\x00\x00\x00\x00\x00\x00\x05", 10);
    ws_out("server_len64_top_bit");

    ws_start(SERVER | MAX_125, 3);
    ws_frame(IM_WS_OP_BINARY, 1, big, 200);
    ws_out("server_too_big");

    ws_start(SERVER | MAX_125, 50);
    ws_frame(IM_WS_OP_BINARY, 0, big, 100);
    ws_frame(IM_WS_OP_CONT, 1, big, 100);
    ws_out("server_fragments_too_big");

    ws_start(SERVER | MAX_1K, 4);
    wlen += im_ws_header(ws + wlen, IM_WS_OP_BINARY, 1, 3);
    ws_raw("abc", 3);
    ws_out("server_unmasked");

    ws_start(MAX_1K, 3);
    ws_frame(IM_WS_OP_BINARY, 1, HELLO, 11);
    ws_frame(IM_WS_OP_PING, 1, "", 0);
    ws_out("client_binary_ping");

    ws_start(MAX_1K, 7);
    ws_frame(IM_WS_OP_BINARY, 0, "ab", 2);
    n = im_ws_close_payload(cl, 1001, NULL, 0);
    ws_frame(IM_WS_OP_CLOSE, 1, cl, n);
    ws_frame(IM_WS_OP_CONT, 1, "cd", 2);
    ws_out("client_fragmented_close");

    ws_start(MAX_1K, 2);
    wlen += im_ws_build_masked(ws + wlen, IM_WS_OP_BINARY, 1, U8("m"), 1,
                               mask);
    ws_out("client_masked");

    ws_start(MAX_1K, 200);
    ws_frame(IM_WS_OP_BINARY, 1, big, 1000);
    ws_out("client_len16");

    /* structured: [FIN|RSV|op] [len] payload; len 0xff: [len16] + 100 */

    ws_start(STRUCTURED | SERVER | MAX_1K, 0);
    ws_raw("\x01\x03" "abc" "\x89\x01" "p" "\x80\x02" "de", 12);
    ws_out("structured_fragments");

    ws_start(STRUCTURED | MAX_1M, 0);
    ws_raw("\x88\x02" "\x03\xe8" "\x82\xff\x01\x00", 8);
    ws_out("structured_len16_close");

    ws_start(STRUCTURED | SERVER | MAX_125, 0);
    ws_raw("\x82\x80", 2);
    ws_out("structured_too_big");
}


static void
traffic(const char *name, const uint8_t *p, size_t n)
{
    out("fuzz_traffic", name, p, n);
}


/* the n bytes of a record in b, one byte short (named cut) and followed
 * by the bytes of tail (named trailing); b has room for them */

static void
traffic_cut_tail(uint8_t *b, size_t n, const char *cut, const char *trailing,
    const char *tail)
{
    traffic(cut, b, n - 1);
    memcpy(b + n, tail, strlen(tail));
    traffic(trailing, b, n + strlen(tail));
}


/* a notice ('J', 'S', 'A') built into b and written as name */

static size_t
notice(uint8_t *b, const char *name, uint8_t type, const uint8_t *origin,
    size_t olen, const uint64_t *nonce)
{
    size_t  n;

    n = im_traffic_build_notice(b, type, origin, olen, nonce);
    traffic(name, b, n);

    return n;
}


/* a worker id as ngx_im_module.c makes it: node/instance:pid */
#define ORIGIN  "n1/0123456789abcdef:4242"
#define OLEN    24


static void
gen_traffic(void)
{
    uint8_t   b[IM_TRAFFIC_D_LEN(IM_TRAFFIC_ORIGIN_MAX, 64)];
    uint8_t   origin[IM_TRAFFIC_ORIGIN_MAX];
    uint8_t   entry[IM_SIZE_PUSH(11)];
    size_t    n, elen, head;
    uint64_t  nonce;

    memset(origin, 'o', sizeof(origin));
    nonce = 0x0000123400000007ULL;
    head = IM_TRAFFIC_HEAD_LEN(OLEN);

    /* the entry is opaque here: any bytes, a push's look like one */
    elen = im_build_push(entry, U8(MSGID), U8(HELLO), 11);

    n = im_traffic_build_d(b, U8(ORIGIN), OLEN, IM_TRAFFIC_STORED,
                           0x0102030405060708ULL, entry, elen);
    traffic("d_seed", b, n);
    traffic("d_seq_short", b, head + 7);
    traffic("d_no_seq", b, head);
    traffic("d_empty_entry", b, head + 8);
    traffic("d_head_short", b, head - 1);
    b[IM_TRAFFIC_FLAGS_AT(OLEN)] = IM_TRAFFIC_STORED | IM_TRAFFIC_ALL;
    traffic("d_flags_3", b, n);
    n = im_traffic_build_d(b, U8(ORIGIN), OLEN, IM_TRAFFIC_ALL, 1, U8("x"),
                           1);
    traffic("d_offline_all", b, n);
    n = im_traffic_build_d(b, NULL, 0, 0, 0, NULL, 0);
    traffic("d_origin_0", b, n);
    n = im_traffic_build_d(b, origin, IM_TRAFFIC_ORIGIN_MAX, 1, UINT64_MAX,
                           entry, elen);
    traffic("d_origin_255", b, n);

    n = im_traffic_build_k(b, U8(ORIGIN), OLEN, 0, 1,
                           0xf1e2d3c4b5a69788ULL);
    traffic("k_seed", b, n);
    traffic_cut_tail(b, n, "k_token_short", "k_trailing", "more");
    traffic("k_client_id_only", b, head + 1);
    n = im_traffic_build_k(b, U8(ORIGIN), OLEN, IM_TRAFFIC_ALL, 255, 0);
    traffic("k_flags_all", b, n);
    n = im_traffic_build_k(b, NULL, 0, 0, 0, 1);
    traffic("k_origin_0", b, n);

    n = notice(b, "j_nonce", 'J', U8(ORIGIN), OLEN, &nonce);
    traffic_cut_tail(b, n, "j_7_after_head", "j_9_after_head", "z");
    b[IM_TRAFFIC_FLAGS_AT(OLEN)] = IM_TRAFFIC_ALL;
    traffic("j_flags_all", b, n);
    notice(b, "j_old", 'J', U8(ORIGIN), OLEN, NULL);
    notice(b, "j_origin_255", 'J', origin, IM_TRAFFIC_ORIGIN_MAX, &nonce);

    n = notice(b, "s_seed", 'S', U8(ORIGIN), OLEN, NULL);
    traffic_cut_tail(b, n, "s_head_short", "s_trailing", "junk");
    notice(b, "s_origin_0", 'S', NULL, 0, NULL);

    n = notice(b, "a_seed", 'A', U8(ORIGIN), OLEN, &nonce);
    traffic_cut_tail(b, n, "a_nonce_short", "a_trailing", "tail");
    notice(b, "a_origin_255", 'A', origin, IM_TRAFFIC_ORIGIN_MAX, &nonce);

    n = im_traffic_build_w(b, U8(ORIGIN), OLEN, 0, 0x0102030405060708ULL,
                           1002, 3, 1500, U8(MSGID));
    traffic("w_seed", b, n);
    traffic_cut_tail(b, n, "w_msgid_short", "w_trailing", "more");
    traffic("w_head_only", b, head);
    n = im_traffic_build_w(b, origin, IM_TRAFFIC_ORIGIN_MAX, 0, UINT64_MAX,
                           UINT32_MAX, 255, UINT32_MAX, U8(MSGID));
    traffic("w_origin_255", b, n);

    traffic("empty", b, 0);
    traffic("one_byte", U8("S"), 1);
    traffic("two_bytes", U8("S\x00"), 2);
    traffic("origin_past_end", U8("S\x05" "ab\x00"), 5);
    traffic("origin_255_short", U8("D\xff" "abc"), 5);

    n = im_traffic_build_d(b, U8(ORIGIN), OLEN, 0, 1, U8("x"), 1);
    b[0] = 'X';
    traffic("unknown_X", b, n);
    b[0] = 'd';
    traffic("unknown_lower_d", b, n);
    b[0] = 0;
    traffic("unknown_0", b, n);
}


int
main(int argc, char **argv)
{
    char  path[512];

    dir = argc > 1 ? argv[1] : "corpus";

    mkdir(dir, 0755);
    snprintf(path, sizeof(path), "%s/fuzz_proto", dir);
    mkdir(path, 0755);
    snprintf(path, sizeof(path), "%s/fuzz_wsframe", dir);
    mkdir(path, 0755);
    snprintf(path, sizeof(path), "%s/fuzz_traffic", dir);
    mkdir(path, 0755);
    snprintf(path, sizeof(path), "%s/fuzz_payload", dir);
    mkdir(path, 0755);

    gen_proto();
    gen_payload();
    gen_wsframe();
    gen_traffic();

    return 0;
}
