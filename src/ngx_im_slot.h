/*
 * ngx_im_slot.h: Redis Cluster's key slots and redirects, without nginx.
 *
 * Owns the two things of Redis Cluster that are pure functions of bytes:
 * which of the 16,384 slots a key or a shard channel is in (CRC16 of the
 * key, or of its hash tag: the part between the first '{' and the next
 * '}', when that part is not empty), and what a MOVED or ASK error reply
 * says (the slot, the address of the node that has it).  Kept free of
 * nginx so that the unit tests and the fuzzers run exactly this code
 * (docs/decisions/043-redis-cluster.md).
 */


#ifndef _NGX_IM_SLOT_H_INCLUDED_
#define _NGX_IM_SLOT_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


#define NGX_IM_SLOTS          16384

#define NGX_IM_REDIRECT_NONE  0
#define NGX_IM_REDIRECT_MOVED 1     /* the slot lives there now */
#define NGX_IM_REDIRECT_ASK   2     /* this key, this once, there */


typedef struct {
    ngx_uint_t     kind;            /* NGX_IM_REDIRECT_* */
    ngx_uint_t     slot;
    const u_char  *addr;            /* "host:port", in the reply's bytes */
    size_t         addr_len;
} ngx_im_redirect_t;


ngx_uint_t ngx_im_slot(const u_char *key, size_t len);

/* NGX_IM_REDIRECT_NONE for any other error (and for a malformed one) */
ngx_uint_t ngx_im_slot_redirect(const u_char *err, size_t len,
    ngx_im_redirect_t *r);


#endif /* _NGX_IM_SLOT_H_INCLUDED_ */
