/*
 * ngx_im_alone.h: skipping the channel of a uid nobody else holds.
 *
 * Most users are online in one place.  When a PUBLISH to a uid's channel
 * reaches only this worker's own subscription, the uid is marked alone and
 * later messages skip the channel (and its echo) while it stays so.  The
 * router asks here whether to skip, probes with the counts PUBLISH
 * returns, and hands over the 'J', 'S' and 'A' records, which also hold
 * a newcomer's first inbox read, and its CONNECT_ACK, until every worker
 * that holds the uid publishes on its channel.
 * "im_alone off" never skips the channel; the records are still answered.
 */

#ifndef _NGX_IM_ALONE_H_INCLUDED_
#define _NGX_IM_ALONE_H_INCLUDED_


#include "ngx_im_table.h"
#include "ngx_im_traffic.h"


/* a message for u's sessions here, none elsewhere known: 1 when the
 * channel is skipped, 0 to publish */
ngx_uint_t ngx_im_alone_skip(ngx_im_user_t *u);

/* a stamp when the count of a PUBLISH to u's channel can tell that u is
 * alone (a probe), 0 when not */
uint32_t ngx_im_alone_stamp(ngx_im_user_t *u);
/* the reply of a probing PUBLISH */
void ngx_im_alone_learn(uint32_t uid, uint32_t stamp, redisReply *reply);
/* the same as a Redis callback, with a record from ngx_im_alone_probe() */
void *ngx_im_alone_probe(ngx_im_user_t *u);
void ngx_im_alone_probed(redisReply *reply, void *data);
void ngx_im_alone_probe_free(void *data);

/* u's subscription is (again) confirmed, or the connection its 'J' went
 * out on came back: announce it and hold the inbox read for the answers */
void ngx_im_alone_announce(ngx_im_user_t *u);
/* the subscription is not known to be in place: not alone any more */
void ngx_im_alone_forget(ngx_im_user_t *u);
/* u's sessions wait for the answers to its 'J' before reading the inbox */
ngx_uint_t ngx_im_alone_holding(ngx_im_user_t *u);
/* u's record goes away */
void ngx_im_alone_free(ngx_im_user_t *u);

/* a 'J', 'S' or 'A' for uid (u: its record here; own: this worker's) */
void ngx_im_alone_record(uint32_t uid, ngx_im_user_t *u, im_traffic_t *t,
    ngx_uint_t own);


#endif /* _NGX_IM_ALONE_H_INCLUDED_ */
