
/*
 * ngx_im_proto.h: the IM wire protocol codec (docs/PROTOCOL.md).
 *
 * Owns the byte layout of every protocol message in both directions:
 * parsing a message received from a client (or, for tests, fuzzing and
 * the load generator, from the server) and building every message.
 * Pure C on libc only, no nginx headers, so that the unit tests and
 * the fuzz targets exercise exactly the code the module runs.
 *
 * Parsers never copy: the pointers of im_msg_t point into the input.
 * Builders never allocate: the caller sizes the output with IM_SIZE_*.
 */


#ifndef _NGX_IM_PROTO_H_INCLUDED_
#define _NGX_IM_PROTO_H_INCLUDED_


#include <stdint.h>
#include <stddef.h>


#define IM_MSGID_LEN  32


enum {
    IM_CMD_CONNECT = 1,
    IM_CMD_CONNECT_ACK = 2,
    IM_CMD_PUBLISH = 3,
    IM_CMD_PUB_ACK = 4,
    IM_CMD_GROUP_PUBLISH = 5,
    IM_CMD_GROUP_PUB_ACK = 6,
    IM_CMD_PING = 7,
    IM_CMD_PING_RESP = 8,
    IM_CMD_DISCONNECT = 9,
    IM_CMD_INVALID = 10,
    IM_CMD_GROUP_PART_PUBLISH = 11,
    IM_CMD_GROUP_PART_PUB_ACK = 12,
    IM_CMD_RECEIPT = 13,
    IM_CMD_LOGOUT = 20
};


typedef enum {
    IM_OK = 0,
    IM_ERR_EMPTY,        /* zero-length message */
    IM_ERR_UNKNOWN_CMD,  /* command not valid in this direction */
    IM_ERR_TRUNCATED,    /* a fixed-size field runs past the end */
    IM_ERR_LENGTH,       /* a length field (UserLen, PassLen, N, Len)
                            points past the end */
    IM_ERR_TRAILING      /* bytes left after the last field */
} im_rc_t;


typedef struct {
    uint8_t         cmd;

    /* CONNECT */
    const uint8_t  *user;
    uint16_t        user_len;
    const uint8_t  *pass;
    uint16_t        pass_len;
    uint8_t         role, client_id;         /* 0 when absent */
    uint8_t         has_role, has_client_id;

    /* PUBLISH (ToUid) / GROUP_PUBLISH and GROUP_PART_PUBLISH (Gid) /
     * RECEIPT (the uid that acked) */
    uint32_t        to;
    const uint8_t  *msgid;   /* IM_MSGID_LEN bytes into the input,
                                NULL if not read */
    uint16_t        n_uids;
    const uint8_t  *uids;    /* 4 * n_uids raw big-endian bytes into
                                the input */
    const uint8_t  *payload;
    uint16_t        payload_len;

    /* CONNECT_ACK code, INVALID_PACKET's cmd */
    uint8_t         code;

    /* acks: bytes after the 32-byte MsgId (the field client's long acks) */
    size_t          ack_extra;

    /* read by im_parse_client_utf16(): the length fields counted UTF-16
     * units; user_len, pass_len and payload_len above are bytes */
    uint8_t         utf16;
} im_msg_t;


/*
 * Parse one message sent by a client (C->S: 1, 3, 4, 5, 6, 7, 8, 9, 11,
 * 12).  Sets m->cmd whenever len > 0 (even on error), m->msgid whenever
 * the MsgId could be read (even on a later error).  Acks shorter than 33
 * bytes are IM_ERR_TRUNCATED, longer ones are fine (ack_extra).
 * PING/PING_RESP/DISCONNECT with extra bytes: IM_ERR_TRAILING.
 * CONNECT: Role and ClientId each optional, more bytes trailing.
 */
im_rc_t im_parse_client(const uint8_t *p, size_t len, im_msg_t *m);

/*
 * The field client's reading (docs/PROTOCOL.md 8), for a message that
 * im_parse_client() refused: CONNECT's UserLen and PassLen, and the Len
 * of PUBLISH, GROUP_PUBLISH and GROUP_PART_PUBLISH, count the UTF-16
 * code units of the well-formed UTF-8 text that follows (a character
 * beyond U+FFFF counts two), not its bytes.  Every other rule is
 * im_parse_client()'s.  IM_OK sets m->utf16; a field of more than 65535
 * bytes, a count that ends inside a character or runs past the end, or
 * text that is not UTF-8 is IM_ERR_LENGTH.  Other commands:
 * IM_ERR_UNKNOWN_CMD.  Text that is all ASCII reads as the strict parse
 * reads it, so only a message the strict parse refused is worth trying.
 */
im_rc_t im_parse_client_utf16(const uint8_t *p, size_t len, im_msg_t *m);

/*
 * Parse one message sent by the server (S->C: 2, 3 push
 * <<3,MsgId,Len,P>>, 4, 5, 6, 7, 8, 9, 10 (<<10,Cmd>> or
 * <<10,Cmd,MsgId>>), 11, 12, 20); used by tests, fuzzing and the load
 * generator.  The server sends acks of exactly 33 bytes, so here a
 * longer ack is IM_ERR_TRAILING.
 */
im_rc_t im_parse_server(const uint8_t *p, size_t len, im_msg_t *m);

/* "ok", "empty message", ...: static strings for logs */
const char *im_rc_str(im_rc_t rc);

/* "CONNECT", "PUBLISH", ...; "UNKNOWN" for other values (for logs) */
const char *im_cmd_str(uint8_t cmd);


static inline uint32_t
im_get_u32(const uint8_t *p)
{
    return ((uint32_t) p[0] << 24) | ((uint32_t) p[1] << 16)
           | ((uint32_t) p[2] << 8) | (uint32_t) p[3];
}


static inline uint16_t
im_get_u16(const uint8_t *p)
{
    return (uint16_t) (((unsigned) p[0] << 8) | (unsigned) p[1]);
}


static inline uint8_t *
im_put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t) (v >> 24);
    p[1] = (uint8_t) (v >> 16);
    p[2] = (uint8_t) (v >> 8);
    p[3] = (uint8_t) v;

    return p + 4;
}


static inline uint8_t *
im_put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t) (v >> 8);
    p[1] = (uint8_t) v;

    return p + 2;
}


/*
 * Builders write into out, which must hold at least the matching
 * IM_SIZE_* bytes, and return the number of bytes written.
 */

#define IM_SIZE_CONNECT(ulen, plen)  (1 + 2 + (ulen) + 2 + (plen) + 2)
#define IM_SIZE_CONNECT_ACK          2
/* C->S 3, and 5 both directions */
#define IM_SIZE_PUBLISH(len)         (1 + 4 + IM_MSGID_LEN + 2 + (len))
/* S->C 3 */
#define IM_SIZE_PUSH(len)            (1 + IM_MSGID_LEN + 2 + (len))
#define IM_SIZE_GROUP(len)           IM_SIZE_PUBLISH(len)
#define IM_SIZE_PART(n, len)                                                  \
    (1 + 4 + IM_MSGID_LEN + 2 + 4 * (n) + 2 + (len))
#define IM_SIZE_ACK                  (1 + IM_MSGID_LEN)
#define IM_SIZE_INVALID              (2 + IM_MSGID_LEN)
#define IM_SIZE_SIMPLE               1
/* S->C 13 */
#define IM_SIZE_RECEIPT              (1 + IM_MSGID_LEN + 4)

/*
 * role / client_id: -1 = omit the field (client_id given requires role
 * given; a client_id with role -1 is sent with Role 0, which is what an
 * absent Role means).
 */
size_t im_build_connect(uint8_t *out, const uint8_t *user, uint16_t ulen,
    const uint8_t *pass, uint16_t plen, int role, int client_id);
size_t im_build_connect_ack(uint8_t *out, uint8_t code);
/* C->S <<3,ToUid,MsgId,Len,Payload>> */
size_t im_build_publish(uint8_t *out, uint32_t to_uid, const uint8_t *msgid,
    const uint8_t *payload, uint16_t len);
/* S->C <<3,MsgId,Len,Payload>> */
size_t im_build_push(uint8_t *out, const uint8_t *msgid,
    const uint8_t *payload, uint16_t len);
/* <<5,Gid,MsgId,Len,Payload>> both ways */
size_t im_build_group(uint8_t *out, uint32_t gid, const uint8_t *msgid,
    const uint8_t *payload, uint16_t len);
/* <<11,Gid,MsgId,N,Uid*N,Len,Payload>> both ways, uids raw big-endian */
size_t im_build_part(uint8_t *out, uint32_t gid, const uint8_t *msgid,
    uint16_t n, const uint8_t *uids_be, const uint8_t *payload, uint16_t len);
/* 4, 6, 12: <<Cmd,MsgId>> */
size_t im_build_ack(uint8_t *out, uint8_t cmd, const uint8_t *msgid);
/* 7, 8, 9, 20: one byte */
size_t im_build_simple(uint8_t *out, uint8_t cmd);
/* <<10,Cmd>> when msgid is NULL, else <<10,Cmd,MsgId>> */
size_t im_build_invalid(uint8_t *out, uint8_t cmd, const uint8_t *msgid);
/* S->C <<13,MsgId,Uid>>: uid acked the message MsgId */
size_t im_build_receipt(uint8_t *out, const uint8_t *msgid, uint32_t uid);


#endif /* _NGX_IM_PROTO_H_INCLUDED_ */
