
/*
 * fuzz_proto.c: libFuzzer target of the protocol codec.
 *
 * Owns the properties checked on arbitrary input, parsed as a client
 * message and as a server message from an exact-size copy (so ASan sees
 * any read past the end):
 *   - the result is a known im_rc_t, cmd is set whenever len > 0, every
 *     pointer the parser returns lies inside the input;
 *   - an IM_OK message rebuilt with the builders (into exact-size
 *     buffers) gives back the input byte for byte (long client acks: the
 *     first 33 bytes, and ack_extra counts the rest);
 *   - no strict prefix of an IM_OK message is IM_OK, except where the
 *     protocol has optional tails (CONNECT's Role and ClientId, the
 *     bytes after a client ack's MsgId);
 *   - read as the field client counts lengths (im_parse_client_utf16),
 *     the same bounds hold, and the fields rebuilt with byte lengths
 *     make a message the strict parse reads to the same fields.
 */


#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ngx_im_proto.h"

#define FUZZ_TARGET  "fuzz_proto"
#include "fuzz_util.h"


/* p..p+n lies inside in..in+len */

static int
inside(const uint8_t *in, size_t len, const uint8_t *p, size_t n)
{
    return p >= in && n <= len && (size_t) (p - in) <= len - n;
}


static void
check_fields(const uint8_t *in, size_t len, im_rc_t rc, const im_msg_t *m)
{
    CHECK(rc >= IM_OK && rc <= IM_ERR_TRAILING);
    CHECK(im_rc_str(rc) != NULL);

    if (len == 0) {
        CHECK(rc == IM_ERR_EMPTY && m->cmd == 0);
        return;
    }

    CHECK(rc != IM_ERR_EMPTY);
    CHECK(m->cmd == in[0]);

    if (m->msgid) {
        CHECK(inside(in, len, m->msgid, IM_MSGID_LEN));
    }

    if (m->user) {
        CHECK(inside(in, len, m->user, m->user_len));
    }

    if (m->pass) {
        CHECK(inside(in, len, m->pass, m->pass_len));
    }

    if (m->uids) {
        CHECK(inside(in, len, m->uids, (size_t) m->n_uids * 4));
    }

    if (m->payload) {
        CHECK(inside(in, len, m->payload, m->payload_len));
    }

    CHECK(m->has_client_id == 0 || m->has_role);
}


/* build into an exact-size buffer and compare with the input */

static void
same(const uint8_t *in, size_t len, const uint8_t *out, size_t n,
    size_t size)
{
    CHECK(n == size);
    CHECK(n == len);
    CHECK(memcmp(in, out, n) == 0);
}


static void
rebuild(int server, const uint8_t *in, size_t len, const im_msg_t *m)
{
    uint8_t  *out;
    size_t    size, n;

    switch (m->cmd) {

    case IM_CMD_CONNECT:
        CHECK(!server);
        size = IM_SIZE_CONNECT(m->user_len, m->pass_len)
               - (m->has_role ? 0 : 1) - (m->has_client_id ? 0 : 1);
        out = malloc(IM_SIZE_CONNECT(m->user_len, m->pass_len));
        CHECK(out != NULL);
        n = im_build_connect(out, m->user, m->user_len, m->pass,
                             m->pass_len, m->has_role ? m->role : -1,
                             m->has_client_id ? m->client_id : -1);
        same(in, len, out, n, size);
        free(out);
        return;

    case IM_CMD_CONNECT_ACK:
        CHECK(server);
        out = malloc(IM_SIZE_CONNECT_ACK);
        CHECK(out != NULL);
        n = im_build_connect_ack(out, m->code);
        same(in, len, out, n, IM_SIZE_CONNECT_ACK);
        free(out);
        return;

    case IM_CMD_PUBLISH:
        CHECK(m->msgid != NULL && m->payload != NULL);

        if (server) {
            size = IM_SIZE_PUSH(m->payload_len);
            out = malloc(size);
            CHECK(out != NULL);
            n = im_build_push(out, m->msgid, m->payload, m->payload_len);

        } else {
            size = IM_SIZE_PUBLISH(m->payload_len);
            out = malloc(size);
            CHECK(out != NULL);
            n = im_build_publish(out, m->to, m->msgid, m->payload,
                                 m->payload_len);
        }

        same(in, len, out, n, size);
        free(out);
        return;

    case IM_CMD_GROUP_PUBLISH:
        CHECK(m->msgid != NULL && m->payload != NULL);
        size = IM_SIZE_GROUP(m->payload_len);
        out = malloc(size);
        CHECK(out != NULL);
        n = im_build_group(out, m->to, m->msgid, m->payload, m->payload_len);
        same(in, len, out, n, size);
        free(out);
        return;

    case IM_CMD_GROUP_PART_PUBLISH:
        CHECK(m->msgid != NULL && m->payload != NULL && m->uids != NULL);
        size = IM_SIZE_PART((size_t) m->n_uids, (size_t) m->payload_len);
        out = malloc(size);
        CHECK(out != NULL);
        n = im_build_part(out, m->to, m->msgid, m->n_uids, m->uids,
                          m->payload, m->payload_len);
        same(in, len, out, n, size);
        free(out);
        return;

    case IM_CMD_PUB_ACK:
    case IM_CMD_GROUP_PUB_ACK:
    case IM_CMD_GROUP_PART_PUB_ACK:
        CHECK(m->msgid == in + 1);
        CHECK(m->ack_extra == len - IM_SIZE_ACK);
        CHECK(!server || m->ack_extra == 0);
        out = malloc(IM_SIZE_ACK);
        CHECK(out != NULL);
        n = im_build_ack(out, m->cmd, m->msgid);
        same(in, IM_SIZE_ACK, out, n, IM_SIZE_ACK);
        free(out);
        return;

    case IM_CMD_PING:
    case IM_CMD_PING_RESP:
    case IM_CMD_DISCONNECT:
    case IM_CMD_LOGOUT:
        CHECK(server || m->cmd != IM_CMD_LOGOUT);
        out = malloc(IM_SIZE_SIMPLE);
        CHECK(out != NULL);
        n = im_build_simple(out, m->cmd);
        same(in, len, out, n, IM_SIZE_SIMPLE);
        free(out);
        return;

    case IM_CMD_INVALID:
        CHECK(server);
        size = m->msgid ? IM_SIZE_INVALID : 2;
        out = malloc(size);
        CHECK(out != NULL);
        n = im_build_invalid(out, m->code, m->msgid);
        same(in, len, out, n, size);
        free(out);
        return;

    case IM_CMD_RECEIPT:
        CHECK(server);
        out = malloc(IM_SIZE_RECEIPT);
        CHECK(out != NULL);
        n = im_build_receipt(out, m->msgid, m->to);
        same(in, len, out, n, IM_SIZE_RECEIPT);
        free(out);
        return;

    default:
        /* an unknown command must never parse */
        CHECK(0);
    }
}


static void
check(int server, const uint8_t *in, size_t len)
{
    im_rc_t   rc, rc2;
    im_msg_t  m, m2;

    rc = server ? im_parse_server(in, len, &m) : im_parse_client(in, len, &m);

    check_fields(in, len, rc, &m);

    if (rc != IM_OK) {
        return;
    }

    rebuild(server, in, len, &m);

    /* a strict prefix of a complete message is not a message */

    if (len > 1 && m.cmd != IM_CMD_CONNECT && m.ack_extra == 0) {
        rc2 = server ? im_parse_server(in, len - 1, &m2)
                     : im_parse_client(in, len - 1, &m2);
        CHECK(rc2 != IM_OK);
        CHECK(rc2 != IM_ERR_TRAILING);
    }
}


/*
 * The field client's reading: the fields it gives, rebuilt with their
 * lengths in bytes, make a message the strict parse reads to the same
 * fields.
 */

static void
check_utf16(const uint8_t *in, size_t len)
{
    size_t    size, n;
    uint8_t  *out;
    im_rc_t   rc;
    im_msg_t  m, s;

    rc = im_parse_client_utf16(in, len, &m);

    check_fields(in, len, rc, &m);

    if (rc != IM_OK) {
        CHECK(m.utf16 == 0);
        return;
    }

    CHECK(m.utf16 == 1);

    switch (m.cmd) {

    case IM_CMD_CONNECT:
        out = malloc(IM_SIZE_CONNECT(m.user_len, m.pass_len));
        CHECK(out != NULL);
        n = im_build_connect(out, m.user, m.user_len, m.pass, m.pass_len,
                             m.has_role ? m.role : -1,
                             m.has_client_id ? m.client_id : -1);
        CHECK(im_parse_client(out, n, &s) == IM_OK);
        CHECK(s.user_len == m.user_len && s.pass_len == m.pass_len
              && memcmp(s.user, m.user, m.user_len) == 0
              && memcmp(s.pass, m.pass, m.pass_len) == 0
              && s.has_role == m.has_role && s.role == m.role
              && s.has_client_id == m.has_client_id
              && s.client_id == m.client_id);
        free(out);
        return;

    case IM_CMD_PUBLISH:
    case IM_CMD_GROUP_PUBLISH:
    case IM_CMD_GROUP_PART_PUBLISH:
        size = IM_SIZE_PART((size_t) m.n_uids, (size_t) m.payload_len);
        out = malloc(size);
        CHECK(out != NULL);

        if (m.cmd == IM_CMD_GROUP_PART_PUBLISH) {
            n = im_build_part(out, m.to, m.msgid, m.n_uids, m.uids,
                              m.payload, m.payload_len);

        } else if (m.cmd == IM_CMD_GROUP_PUBLISH) {
            n = im_build_group(out, m.to, m.msgid, m.payload,
                               m.payload_len);

        } else {
            n = im_build_publish(out, m.to, m.msgid, m.payload,
                                 m.payload_len);
        }

        CHECK(im_parse_client(out, n, &s) == IM_OK);
        CHECK(s.cmd == m.cmd && s.to == m.to && s.n_uids == m.n_uids
              && memcmp(s.msgid, m.msgid, IM_MSGID_LEN) == 0
              && (m.n_uids == 0
                  || memcmp(s.uids, m.uids, (size_t) m.n_uids * 4) == 0)
              && s.payload_len == m.payload_len
              && memcmp(s.payload, m.payload, m.payload_len) == 0);
        free(out);
        return;

    default:
        /* no other command has a UTF-16 reading */
        CHECK(0);
    }
}


/* the input as a client's message and as the server's */

static void
check_both(const uint8_t *in, size_t len)
{
    check(0, in, len);
    check(1, in, len);
    check_utf16(in, len);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_exact(data, size, check_both);
}
