
/*
 * ngx_im_traffic.h: the records workers and nodes exchange (traffic).
 *
 * Owns the byte layout of what goes over a uid's Redis channel
 * ("im:u:<uid>") and, between the workers of one node, over unix
 * datagrams: parsing one record and building each kind.  Pure C on libc
 * only, like ngx_im_proto.h, so that the unit tests and the fuzz target
 * exercise exactly the code the module runs.  The format is deployed:
 * nodes of different builds share channels, so what is accepted here
 * must stay what older builds accepted (see the notes on each type).
 *
 *   'D' OriginLen:8 Origin Flags:8 Seq:64 Entry   a message; Entry is
 *                                     the stored message, opaque here
 *   'K' OriginLen:8 Origin Flags:8 ClientId:8 Token:64
 *                                     a login elsewhere (kick)
 *   'J' OriginLen:8 Origin Flags:8 [Nonce:64]
 *                                     a worker subscribed to the channel;
 *                                     builds from before 'A' send no nonce
 *   'S' OriginLen:8 Origin Flags:8    load the inbox again
 *   'A' OriginLen:8 Origin Flags:8 Nonce:64
 *                                     a worker heard the 'J' of this nonce
 *   'M' OriginLen:8 Origin Flags:8 Nonce:64
 *                                     a mark behind a session's inbox
 *                                     read: only its own worker acts on
 *                                     it.  Builds from before it ignore
 *                                     it (a record that does not parse)
 *   'R' OriginLen:8 Origin Flags:8 Receipt
 *                                     a delivery receipt for the uid's
 *                                     sessions: the RECEIPT message as
 *                                     they get it, opaque here; builds
 *                                     from before it ignore it
 *   'L' OriginLen:8 Origin Flags:8 Scope:8 ClientId:8
 *                                     an administrator's kick (the admin
 *                                     API): the uid's sessions of
 *                                     ClientId, or all of them when
 *                                     Scope is 1, are logged out; a
 *                                     login's kick is 'K'.  Builds from
 *                                     before it ignore it
 *   'W' OriginLen:8 Origin Flags:8 Token:64 Uid:32 ClientId:8 AfterMs:32
 *       MsgId                        a watched message was acked (the
 *                                     admin API's publish with a wait):
 *                                     to the worker that waits, by
 *                                     datagram or on its channel
 *                                     "im:w:<worker id>"; Origin is the
 *                                     acking worker, AfterMs the time
 *                                     since acceptance.  Builds from
 *                                     before it ignore it
 *   'C' OriginLen:8 Origin Flags:8 MsgId
 *                                     a recall (the admin API's DELETE
 *                                     /api/inbox): the workers where the
 *                                     uid owes an ack of MsgId in a group
 *                                     record clear it (decision 052).
 *                                     Builds from before it ignore it
 *
 * Origin is the sending worker's id ("node:worker"), Flags a bit set of
 * IM_TRAFFIC_STORED (the message is in the inbox), IM_TRAFFIC_ALL (this
 * node's workers must take the channel copy too: a datagram could not be
 * sent) and IM_TRAFFIC_TIMED ('K': its Token is the time the login's
 * CONNECT was read, microseconds since the epoch, so that a login that
 * started later wins; builds from before it send counters there and
 * ignore the bit).  Integers are big-endian.
 *
 * Acceptance, as the router has always had it: the head (type, OriginLen,
 * Origin, Flags) must be complete; 'D' needs its Seq (the entry is
 * checked by the caller, it may be empty here); 'R' takes the rest as its
 * receipt (in entry, checked by the caller); 'K' needs ClientId and
 * Token, 'L' Scope and ClientId, 'W' every field, 'C' its MsgId (in
 * entry), 'A' its Nonce; 'J'
 * has a nonce when 8 bytes follow the head; bytes after the last field
 * are ignored, except for 'D', where they are the entry.  Any other type
 * is an error.
 *
 * The parser never copies: origin and entry point into the input.  The
 * builders never allocate: the caller sizes the output with the
 * IM_TRAFFIC_*_LEN macros; the flags byte may be patched in place later
 * (at IM_TRAFFIC_FLAGS_AT).
 */


#ifndef _NGX_IM_TRAFFIC_H_INCLUDED_
#define _NGX_IM_TRAFFIC_H_INCLUDED_


#include <stdint.h>
#include <stddef.h>

#include "ngx_im_proto.h"


#define IM_TRAFFIC_STORED             1
#define IM_TRAFFIC_ALL                2
#define IM_TRAFFIC_TIMED              4

#define IM_TRAFFIC_ORIGIN_MAX         255

#define IM_TRAFFIC_HEAD_LEN(olen)     (3 + (olen))
#define IM_TRAFFIC_FLAGS_AT(olen)     (2 + (olen))
#define IM_TRAFFIC_D_LEN(olen, elen)  (IM_TRAFFIC_HEAD_LEN(olen) + 8 + (elen))
#define IM_TRAFFIC_K_LEN(olen)        (IM_TRAFFIC_HEAD_LEN(olen) + 9)
#define IM_TRAFFIC_R_LEN(olen, rlen)  (IM_TRAFFIC_HEAD_LEN(olen) + (rlen))
#define IM_TRAFFIC_L_LEN(olen)        (IM_TRAFFIC_HEAD_LEN(olen) + 2)
#define IM_TRAFFIC_W_LEN(olen)                                                \
    (IM_TRAFFIC_HEAD_LEN(olen) + 17 + IM_MSGID_LEN)
#define IM_TRAFFIC_C_LEN(olen)        (IM_TRAFFIC_HEAD_LEN(olen) + IM_MSGID_LEN)

/* 'L' Scope */
#define IM_TRAFFIC_L_ONE              0
#define IM_TRAFFIC_L_EVERY            1
#define IM_TRAFFIC_NOTICE_MAX                                                 \
    (IM_TRAFFIC_HEAD_LEN(IM_TRAFFIC_ORIGIN_MAX) + 8)


typedef struct {
    uint8_t         type;         /* 'D' 'K' 'J' 'S' 'A' 'M' 'R' 'L' 'W' */
    uint8_t         flags;
    const uint8_t  *origin;       /* origin_len bytes into the input */
    size_t          origin_len;

    /* D; R's receipt in entry; W's MsgId in entry */
    uint64_t        seq;
    const uint8_t  *entry;        /* into the input, not checked here */
    size_t          entry_len;

    /* K, L, W */
    uint8_t         client_id;
    uint8_t         scope;        /* L */
    uint64_t        token;        /* K, W */

    /* W */
    uint32_t        uid;
    uint32_t        after_ms;

    /* A, and J when has_nonce */
    uint64_t        nonce;
    unsigned        has_nonce;
} im_traffic_t;


/*
 * Parse one record of len bytes.  Sets t->type whenever len > 0 (even on
 * an error); never reads past p + len.  Results: IM_OK; IM_ERR_EMPTY
 * (len 0); IM_ERR_TRUNCATED (no room for OriginLen and Flags, or a fixed
 * field of the type missing); IM_ERR_LENGTH (OriginLen past the end);
 * IM_ERR_UNKNOWN_CMD (another type byte, the head being complete).
 */
im_rc_t im_traffic_parse(const uint8_t *p, size_t len, im_traffic_t *t);

uint8_t *im_traffic_put_u64(uint8_t *p, uint64_t v);
uint64_t im_traffic_get_u64(const uint8_t *p);

/*
 * Builders write into buf and return the number of bytes written:
 * IM_TRAFFIC_D_LEN(olen, elen), IM_TRAFFIC_K_LEN(olen), and for a notice
 * ('J', 'S', 'A', 'M', flags 0) IM_TRAFFIC_HEAD_LEN(olen), plus 8 with a
 * nonce (at most IM_TRAFFIC_NOTICE_MAX).  olen must not exceed
 * IM_TRAFFIC_ORIGIN_MAX.
 */
size_t im_traffic_build_d(uint8_t *buf, const uint8_t *origin, size_t olen,
    uint8_t flags, uint64_t seq, const uint8_t *entry, size_t elen);
size_t im_traffic_build_k(uint8_t *buf, const uint8_t *origin, size_t olen,
    uint8_t flags, uint8_t client_id, uint64_t token);
size_t im_traffic_build_l(uint8_t *buf, const uint8_t *origin, size_t olen,
    uint8_t flags, uint8_t scope, uint8_t client_id);
size_t im_traffic_build_r(uint8_t *buf, const uint8_t *origin, size_t olen,
    uint8_t flags, const uint8_t *receipt, size_t rlen);
size_t im_traffic_build_w(uint8_t *buf, const uint8_t *origin, size_t olen,
    uint8_t flags, uint64_t token, uint32_t uid, uint8_t client_id,
    uint32_t after_ms, const uint8_t *msgid);
size_t im_traffic_build_c(uint8_t *buf, const uint8_t *origin, size_t olen,
    uint8_t flags, const uint8_t *msgid);
size_t im_traffic_build_notice(uint8_t *buf, uint8_t type,
    const uint8_t *origin, size_t olen, const uint64_t *nonce);


#endif /* _NGX_IM_TRAFFIC_H_INCLUDED_ */
