
/*
 * ngx_im_proto.c: parsing and building of IM protocol messages.
 *
 * Owns every byte of docs/PROTOCOL.md's message layouts.  The parsers take
 * one whole message (the WebSocket or TCP framing has been removed by
 * the caller), check it strictly and point into it; the builders write
 * into a caller buffer sized with IM_SIZE_*.  libc only.
 */


#include <string.h>

#include "ngx_im_proto.h"


static im_rc_t im_parse_connect(const uint8_t *p, size_t len, im_msg_t *m,
    int utf16);
static im_rc_t im_parse_addressed(const uint8_t *p, size_t len, im_msg_t *m,
    int with_to, int with_uids, int utf16);
static im_rc_t im_take(const uint8_t *p, size_t avail, uint16_t n, int utf16,
    uint16_t *bytes);
static size_t im_utf8_char(const uint8_t *p, size_t avail);
static im_rc_t im_parse_ack(const uint8_t *p, size_t len, im_msg_t *m,
    int strict);
static im_rc_t im_parse_invalid(const uint8_t *p, size_t len, im_msg_t *m);
static uint8_t *im_put_bytes(uint8_t *out, const uint8_t *src, size_t n);


im_rc_t
im_parse_client(const uint8_t *p, size_t len, im_msg_t *m)
{
    memset(m, 0, sizeof(im_msg_t));

    if (len == 0) {
        return IM_ERR_EMPTY;
    }

    m->cmd = p[0];

    switch (p[0]) {

    case IM_CMD_CONNECT:
        return im_parse_connect(p, len, m, 0);

    case IM_CMD_PUBLISH:
    case IM_CMD_GROUP_PUBLISH:
        return im_parse_addressed(p, len, m, 1, 0, 0);

    case IM_CMD_GROUP_PART_PUBLISH:
        return im_parse_addressed(p, len, m, 1, 1, 0);

    case IM_CMD_PUB_ACK:
    case IM_CMD_GROUP_PUB_ACK:
    case IM_CMD_GROUP_PART_PUB_ACK:
        /*
         * the field's client acks some pushes with
         * MsgId ++ "_" ++ 32 more bytes: only the MsgId counts
         */
        return im_parse_ack(p, len, m, 0);

    case IM_CMD_PING:
    case IM_CMD_PING_RESP:
    case IM_CMD_DISCONNECT:
        return (len == 1) ? IM_OK : IM_ERR_TRAILING;

    default:
        return IM_ERR_UNKNOWN_CMD;
    }
}


im_rc_t
im_parse_client_utf16(const uint8_t *p, size_t len, im_msg_t *m)
{
    im_rc_t  rc;

    memset(m, 0, sizeof(im_msg_t));

    if (len == 0) {
        return IM_ERR_EMPTY;
    }

    m->cmd = p[0];

    switch (p[0]) {

    case IM_CMD_CONNECT:
        rc = im_parse_connect(p, len, m, 1);
        break;

    case IM_CMD_PUBLISH:
    case IM_CMD_GROUP_PUBLISH:
        rc = im_parse_addressed(p, len, m, 1, 0, 1);
        break;

    case IM_CMD_GROUP_PART_PUBLISH:
        rc = im_parse_addressed(p, len, m, 1, 1, 1);
        break;

    default:
        return IM_ERR_UNKNOWN_CMD;
    }

    m->utf16 = (rc == IM_OK);

    return rc;
}


im_rc_t
im_parse_server(const uint8_t *p, size_t len, im_msg_t *m)
{
    memset(m, 0, sizeof(im_msg_t));

    if (len == 0) {
        return IM_ERR_EMPTY;
    }

    m->cmd = p[0];

    switch (p[0]) {

    case IM_CMD_CONNECT_ACK:
        if (len < 2) {
            return IM_ERR_TRUNCATED;
        }

        m->code = p[1];

        return (len == 2) ? IM_OK : IM_ERR_TRAILING;

    case IM_CMD_PUBLISH:
        /* a push carries no ToUid: the recipient is the connection */
        return im_parse_addressed(p, len, m, 0, 0, 0);

    case IM_CMD_GROUP_PUBLISH:
        return im_parse_addressed(p, len, m, 1, 0, 0);

    case IM_CMD_GROUP_PART_PUBLISH:
        return im_parse_addressed(p, len, m, 1, 1, 0);

    case IM_CMD_PUB_ACK:
    case IM_CMD_GROUP_PUB_ACK:
    case IM_CMD_GROUP_PART_PUB_ACK:
        /* the server only ever sends the bare MsgId */
        return im_parse_ack(p, len, m, 1);

    case IM_CMD_INVALID:
        return im_parse_invalid(p, len, m);

    case IM_CMD_RECEIPT:
        if (len < IM_SIZE_RECEIPT) {
            return IM_ERR_TRUNCATED;
        }

        m->msgid = p + 1;
        m->to = im_get_u32(p + 1 + IM_MSGID_LEN);

        return (len == IM_SIZE_RECEIPT) ? IM_OK : IM_ERR_TRAILING;

    case IM_CMD_PING:
    case IM_CMD_PING_RESP:
    case IM_CMD_DISCONNECT:
    case IM_CMD_LOGOUT:
        return (len == 1) ? IM_OK : IM_ERR_TRAILING;

    default:
        return IM_ERR_UNKNOWN_CMD;
    }
}


/* <<1, UserLen:16, User, PassLen:16, Pass, [Role:8, [ClientId:8]]>> */

static im_rc_t
im_parse_connect(const uint8_t *p, size_t len, im_msg_t *m, int utf16)
{
    size_t    pos;
    uint16_t  n;

    pos = 1;

    if (len - pos < 2) {
        return IM_ERR_TRUNCATED;
    }

    pos += 2;

    if (im_take(p + pos, len - pos, im_get_u16(p + pos - 2), utf16, &n)
        != IM_OK)
    {
        return IM_ERR_LENGTH;
    }

    m->user = p + pos;
    m->user_len = n;
    pos += n;

    if (len - pos < 2) {
        return IM_ERR_TRUNCATED;
    }

    pos += 2;

    if (im_take(p + pos, len - pos, im_get_u16(p + pos - 2), utf16, &n)
        != IM_OK)
    {
        return IM_ERR_LENGTH;
    }

    m->pass = p + pos;
    m->pass_len = n;
    pos += n;

    /*
     * clients in the field send no Role, a Role, or a Role and a
     * ClientId; an absent field reads as 0
     */

    switch (len - pos) {

    case 2:
        m->client_id = p[pos + 1];
        m->has_client_id = 1;
        /* fall through */

    case 1:
        m->role = p[pos];
        m->has_role = 1;
        /* fall through */

    case 0:
        return IM_OK;

    default:
        return IM_ERR_TRAILING;
    }
}


/*
 * The messages that carry a MsgId and a payload:
 *   C->S and S->C <<5,  Gid,   MsgId, Len, Payload>>
 *   C->S and S->C <<11, Gid,   MsgId, N, Uid * N, Len, Payload>>
 *   C->S          <<3,  ToUid, MsgId, Len, Payload>>
 *   S->C          <<3,         MsgId, Len, Payload>>
 *
 * Each field is recorded as soon as it is known to lie inside the
 * input, so that a refusal can echo the MsgId even when a later field
 * is broken; a pointer is never set to bytes past the end.
 */

static im_rc_t
im_parse_addressed(const uint8_t *p, size_t len, im_msg_t *m, int with_to,
    int with_uids, int utf16)
{
    size_t    pos;
    uint16_t  n;

    pos = 1;

    if (with_to) {
        if (len - pos < 4) {
            return IM_ERR_TRUNCATED;
        }

        m->to = im_get_u32(p + pos);
        pos += 4;
    }

    if (len - pos < IM_MSGID_LEN) {
        return IM_ERR_TRUNCATED;
    }

    m->msgid = p + pos;
    pos += IM_MSGID_LEN;

    if (with_uids) {
        if (len - pos < 2) {
            return IM_ERR_TRUNCATED;
        }

        n = im_get_u16(p + pos);
        pos += 2;

        /* N * 4 cannot overflow size_t: N < 2^16 */

        if (len - pos < (size_t) n * 4) {
            return IM_ERR_LENGTH;
        }

        m->uids = p + pos;
        m->n_uids = n;
        pos += (size_t) n * 4;
    }

    if (len - pos < 2) {
        return IM_ERR_TRUNCATED;
    }

    pos += 2;

    if (im_take(p + pos, len - pos, im_get_u16(p + pos - 2), utf16, &n)
        != IM_OK)
    {
        return IM_ERR_LENGTH;
    }

    m->payload = p + pos;
    m->payload_len = n;
    pos += n;

    return (pos == len) ? IM_OK : IM_ERR_TRAILING;
}


/*
 * The bytes of a field whose length field says n: n bytes, or, in the
 * field client's reading, the UTF-8 text of n UTF-16 units.  A field
 * has at most 65535 bytes either way: whatever is built from it again
 * has a 16-bit length.
 */

static im_rc_t
im_take(const uint8_t *p, size_t avail, uint16_t n, int utf16,
    uint16_t *bytes)
{
    size_t  pos, c;

    if (!utf16) {
        if (avail < n) {
            return IM_ERR_LENGTH;
        }

        *bytes = n;
        return IM_OK;
    }

    pos = 0;

    while (n) {
        c = im_utf8_char(p + pos, avail - pos);

        /* a character of 4 bytes is a surrogate pair: 2 units */

        if (c == 0 || (c == 4 && n < 2)) {
            return IM_ERR_LENGTH;
        }

        n -= (c == 4) ? 2 : 1;
        pos += c;
    }

    if (pos > 65535) {
        return IM_ERR_LENGTH;
    }

    *bytes = (uint16_t) pos;

    return IM_OK;
}


/*
 * The length of the well-formed UTF-8 character at p (Unicode 3.9,
 * table 3-7: no overlong forms, no surrogates, nothing past U+10FFFF),
 * 0 when there is none within avail bytes.
 */

static size_t
im_utf8_char(const uint8_t *p, size_t avail)
{
    size_t   n, i;
    uint8_t  lo, hi;

    if (avail == 0) {
        return 0;
    }

    if (p[0] < 0x80) {
        return 1;
    }

    lo = 0x80;
    hi = 0xbf;

    if (p[0] >= 0xc2 && p[0] <= 0xdf) {
        n = 2;

    } else if (p[0] >= 0xe0 && p[0] <= 0xef) {
        n = 3;

        if (p[0] == 0xe0) {
            lo = 0xa0;

        } else if (p[0] == 0xed) {
            hi = 0x9f;
        }

    } else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
        n = 4;

        if (p[0] == 0xf0) {
            lo = 0x90;

        } else if (p[0] == 0xf4) {
            hi = 0x8f;
        }

    } else {
        return 0;
    }

    if (avail < n || p[1] < lo || p[1] > hi) {
        return 0;
    }

    for (i = 2; i < n; i++) {
        if (p[i] < 0x80 || p[i] > 0xbf) {
            return 0;
        }
    }

    return n;
}


/* <<4 | 6 | 12, MsgId>>, and from clients possibly more bytes */

static im_rc_t
im_parse_ack(const uint8_t *p, size_t len, im_msg_t *m, int strict)
{
    if (len < 1 + IM_MSGID_LEN) {
        return IM_ERR_TRUNCATED;
    }

    m->msgid = p + 1;
    m->ack_extra = len - (1 + IM_MSGID_LEN);

    if (strict && m->ack_extra) {
        return IM_ERR_TRAILING;
    }

    return IM_OK;
}


/* <<10, Cmd>> or <<10, Cmd, MsgId>> */

static im_rc_t
im_parse_invalid(const uint8_t *p, size_t len, im_msg_t *m)
{
    if (len < 2) {
        return IM_ERR_TRUNCATED;
    }

    m->code = p[1];

    if (len == 2) {
        return IM_OK;
    }

    /* anything after Cmd must be a whole MsgId */

    if (len < IM_SIZE_INVALID) {
        return IM_ERR_TRUNCATED;
    }

    m->msgid = p + 2;

    return (len == IM_SIZE_INVALID) ? IM_OK : IM_ERR_TRAILING;
}


const char *
im_rc_str(im_rc_t rc)
{
    switch (rc) {
    case IM_OK:
        return "ok";
    case IM_ERR_EMPTY:
        return "empty message";
    case IM_ERR_UNKNOWN_CMD:
        return "unknown command";
    case IM_ERR_TRUNCATED:
        return "truncated field";
    case IM_ERR_LENGTH:
        return "length field past the end";
    case IM_ERR_TRAILING:
        return "trailing bytes";
    }

    return "unknown error";
}


const char *
im_cmd_str(uint8_t cmd)
{
    switch (cmd) {
    case IM_CMD_CONNECT:
        return "CONNECT";
    case IM_CMD_CONNECT_ACK:
        return "CONNECT_ACK";
    case IM_CMD_PUBLISH:
        return "PUBLISH";
    case IM_CMD_PUB_ACK:
        return "PUB_ACK";
    case IM_CMD_GROUP_PUBLISH:
        return "GROUP_PUBLISH";
    case IM_CMD_GROUP_PUB_ACK:
        return "GROUP_PUB_ACK";
    case IM_CMD_PING:
        return "PING";
    case IM_CMD_PING_RESP:
        return "PING_RESP";
    case IM_CMD_DISCONNECT:
        return "DISCONNECT";
    case IM_CMD_INVALID:
        return "INVALID_PACKET";
    case IM_CMD_GROUP_PART_PUBLISH:
        return "GROUP_PART_PUBLISH";
    case IM_CMD_GROUP_PART_PUB_ACK:
        return "GROUP_PART_PUB_ACK";
    case IM_CMD_LOGOUT:
        return "LOGOUT";
    }

    return "UNKNOWN";
}


size_t
im_build_connect(uint8_t *out, const uint8_t *user, uint16_t ulen,
    const uint8_t *pass, uint16_t plen, int role, int client_id)
{
    uint8_t  *p;

    p = out;

    *p++ = IM_CMD_CONNECT;
    p = im_put_u16(p, ulen);
    p = im_put_bytes(p, user, ulen);
    p = im_put_u16(p, plen);
    p = im_put_bytes(p, pass, plen);

    /* ClientId can only follow a Role: an absent Role reads as 0 */

    if (role >= 0 || client_id >= 0) {
        *p++ = (uint8_t) (role >= 0 ? role : 0);
    }

    if (client_id >= 0) {
        *p++ = (uint8_t) client_id;
    }

    return (size_t) (p - out);
}


size_t
im_build_connect_ack(uint8_t *out, uint8_t code)
{
    out[0] = IM_CMD_CONNECT_ACK;
    out[1] = code;

    return IM_SIZE_CONNECT_ACK;
}


/* <<Cmd, To:32, MsgId, Len:16, Payload>>: PUBLISH (C->S) and GROUP_PUBLISH */

static size_t
im_build_addressed(uint8_t *out, uint8_t cmd, uint32_t to,
    const uint8_t *msgid, const uint8_t *payload, uint16_t len)
{
    uint8_t  *p;

    p = out;

    *p++ = cmd;
    p = im_put_u32(p, to);
    p = im_put_bytes(p, msgid, IM_MSGID_LEN);
    p = im_put_u16(p, len);
    p = im_put_bytes(p, payload, len);

    return (size_t) (p - out);
}


size_t
im_build_publish(uint8_t *out, uint32_t to_uid, const uint8_t *msgid,
    const uint8_t *payload, uint16_t len)
{
    return im_build_addressed(out, IM_CMD_PUBLISH, to_uid, msgid, payload,
                              len);
}


size_t
im_build_push(uint8_t *out, const uint8_t *msgid, const uint8_t *payload,
    uint16_t len)
{
    uint8_t  *p;

    p = out;

    *p++ = IM_CMD_PUBLISH;
    p = im_put_bytes(p, msgid, IM_MSGID_LEN);
    p = im_put_u16(p, len);
    p = im_put_bytes(p, payload, len);

    return (size_t) (p - out);
}


size_t
im_build_group(uint8_t *out, uint32_t gid, const uint8_t *msgid,
    const uint8_t *payload, uint16_t len)
{
    return im_build_addressed(out, IM_CMD_GROUP_PUBLISH, gid, msgid, payload,
                              len);
}


size_t
im_build_part(uint8_t *out, uint32_t gid, const uint8_t *msgid, uint16_t n,
    const uint8_t *uids_be, const uint8_t *payload, uint16_t len)
{
    uint8_t  *p;

    p = out;

    *p++ = IM_CMD_GROUP_PART_PUBLISH;
    p = im_put_u32(p, gid);
    p = im_put_bytes(p, msgid, IM_MSGID_LEN);
    p = im_put_u16(p, n);
    p = im_put_bytes(p, uids_be, (size_t) n * 4);
    p = im_put_u16(p, len);
    p = im_put_bytes(p, payload, len);

    return (size_t) (p - out);
}


size_t
im_build_ack(uint8_t *out, uint8_t cmd, const uint8_t *msgid)
{
    out[0] = cmd;
    memcpy(out + 1, msgid, IM_MSGID_LEN);

    return IM_SIZE_ACK;
}


size_t
im_build_simple(uint8_t *out, uint8_t cmd)
{
    out[0] = cmd;

    return IM_SIZE_SIMPLE;
}


size_t
im_build_invalid(uint8_t *out, uint8_t cmd, const uint8_t *msgid)
{
    out[0] = IM_CMD_INVALID;
    out[1] = cmd;

    if (msgid == NULL) {
        return 2;
    }

    memcpy(out + 2, msgid, IM_MSGID_LEN);

    return IM_SIZE_INVALID;
}


size_t
im_build_receipt(uint8_t *out, const uint8_t *msgid, uint32_t uid)
{
    out[0] = IM_CMD_RECEIPT;
    memcpy(out + 1, msgid, IM_MSGID_LEN);
    (void) im_put_u32(out + 1 + IM_MSGID_LEN, uid);

    return IM_SIZE_RECEIPT;
}


/* memcpy() that tolerates src == NULL for an empty field */

static uint8_t *
im_put_bytes(uint8_t *out, const uint8_t *src, size_t n)
{
    if (n) {
        memcpy(out, src, n);
    }

    return out + n;
}
