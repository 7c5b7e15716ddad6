
/*
 * ngx_im_merge.c: the merge of a session's inbox read with its live
 * queue.
 *
 * Owns the order of docs/PROTOCOL.md 3.4 once the inbox is read: the
 * messages in the order they were accepted.  Each stream is in that order:
 * the
 * inbox by its appends, the live messages by their publisher's.  A
 * message in both marks a point where they meet: the live messages up to
 * its live copy go before it, and its inbox copy is dropped.  Of the rest
 * of the inbox, on the first read, what is older than the first such
 * point is older than anything live (stored before the session
 * subscribed) and goes first; on a later read the session has pushed
 * live messages already, so what the inbox alone has is either on its
 * way live or late anyway, and goes last.  The live ones the inbox lacks
 * were acked by another device before the read, or (offline-only) never
 * stored.
 *
 * An inbox item whose live copy already moved (it met a later inbox item
 * first) is kept: the session's push drops the second copy.
 *
 * The waiting items are moved by splitting and adding whole queues with
 * ngx_queue.h's macros: a loop moving them one at a time, and links edited
 * by hand, once made a loop that never read the queue's head again and
 * hung the worker; the macros keep the last-element case right.
 */


#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_im_merge.h"


static ngx_queue_t *ngx_im_merge_find(ngx_queue_t *head, const u_char *msgid,
    ngx_im_merge_id_pt id);


void
ngx_im_merge(ngx_queue_t *waiting, ngx_queue_t *inbox, ngx_uint_t later,
    ngx_im_merge_id_pt id, ngx_im_merge_drop_pt drop, void *data)
{
    ngx_queue_t  merged, late, rest, *q, *live, *next;

    ngx_queue_init(&merged);
    ngx_queue_init(&late);

    while (!ngx_queue_empty(inbox)) {
        q = ngx_queue_head(inbox);
        ngx_queue_remove(q);

        live = ngx_im_merge_find(waiting, id(q), id);

        if (live == NULL) {
            if (later) {
                ngx_queue_insert_tail(&late, q);

            } else {
                ngx_queue_insert_tail(&merged, q);
            }

            continue;
        }

        /*
         * the live copy stays, behind what came live before it: the
         * waiting items up to it go to merged, those after it stay; when
         * it is the last one, all go (a split at the sentinel would
         * corrupt both queues)
         */

        next = ngx_queue_next(live);

        if (next == ngx_queue_sentinel(waiting)) {
            ngx_queue_init(&rest);

        } else {
            ngx_queue_split(waiting, next, &rest);
        }

        ngx_queue_add(&merged, waiting);
        ngx_queue_init(waiting);

        if (!ngx_queue_empty(&rest)) {
            ngx_queue_add(waiting, &rest);
        }

        drop(q, data);
    }

    /* merged, the rest of what came live, the late ones */

    if (!ngx_queue_empty(waiting)) {
        ngx_queue_add(&merged, waiting);
    }

    if (!ngx_queue_empty(&late)) {
        ngx_queue_add(&merged, &late);
    }

    ngx_queue_init(waiting);

    if (!ngx_queue_empty(&merged)) {
        ngx_queue_add(waiting, &merged);
    }
}


/* the first item of head with this MsgId */

static ngx_queue_t *
ngx_im_merge_find(ngx_queue_t *head, const u_char *msgid,
    ngx_im_merge_id_pt id)
{
    ngx_queue_t  *q;

    for (q = ngx_queue_head(head);
         q != ngx_queue_sentinel(head);
         q = ngx_queue_next(q))
    {
        if (ngx_memcmp(id(q), msgid, NGX_IM_MERGE_ID_LEN) == 0) {
            return q;
        }
    }

    return NULL;
}
