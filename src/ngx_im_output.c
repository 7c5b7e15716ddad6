/*
 * ngx_im_output.c: a session's output.
 *
 * Owns the output chunks (a chain link, a buffer header and the bytes in
 * one 1 KB allocation, spare ones kept), the worker's list of sessions with
 * output waiting for the end of the event loop pass, and the write itself:
 * send() for one buffer, the chain's writev() for more.  A peer that does
 * not read is closed at im_send_buffer.  The state machine above is told
 * through ngx_im_session_ops when a write went out and when all is said.
 */

#include "ngx_im_output.h"
#include "ngx_im_redis.h"


/*
 * Output chunks: one allocation of 1 KB holds the chain link, the buffer
 * header and the bytes; a session with more to send chains several.  Each
 * session that has output waiting until the end of the pass holds one, so
 * they are small; spare ones are kept for reuse, but no more than
 * NGX_IM_CHUNKS_FREE, or a burst would stay allocated for good.
 */
#define NGX_IM_CHUNK_SIZE   1024
#define NGX_IM_CHUNK        (NGX_IM_CHUNK_SIZE - sizeof(ngx_chain_t)           \
                             - sizeof(ngx_buf_t))
#define NGX_IM_CHUNKS_FREE  256


static void ngx_im_output_post_flush(ngx_im_session_t *s);


/* spare chunks of the standard size; the first word of a spare is its
 * chain link's, rewritten when it is taken again */
static ngx_im_spares_t  ngx_im_spare_chunks =
    { NULL, 0, NGX_IM_CHUNKS_FREE, NGX_IM_CHUNK_SIZE, NULL, 0 };


static ngx_chain_t *
ngx_im_chunk_alloc(size_t size)
{
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    if (size <= NGX_IM_CHUNK) {
        size = NGX_IM_CHUNK;
        cl = ngx_im_spare_get(&ngx_im_spare_chunks);

    } else {
        cl = ngx_alloc(sizeof(ngx_chain_t) + sizeof(ngx_buf_t) + size,
                       ngx_cycle->log);
    }

    if (cl == NULL) {
        return NULL;
    }

    b = (ngx_buf_t *) (cl + 1);
    ngx_memzero(b, sizeof(ngx_buf_t));

    b->start = (u_char *) (b + 1);
    b->pos = b->start;
    b->last = b->start;
    b->end = b->start + size;
    b->temporary = 1;

    cl->buf = b;
    cl->next = NULL;

    return cl;
}


static void
ngx_im_chunk_free(ngx_chain_t *cl)
{
    if ((size_t) (cl->buf->end - cl->buf->start) == NGX_IM_CHUNK) {
        ngx_im_spare_put(&ngx_im_spare_chunks, cl);
        return;
    }

    ngx_free(cl);
}


static ngx_int_t
ngx_im_output_append(ngx_im_session_t *s, u_char *hdr, size_t hlen,
    u_char *p, size_t n)
{
    size_t          total;
    ngx_buf_t      *b;
    ngx_chain_t    *cl, *last;
    ngx_im_busy_t  *busy;
    ngx_im_conf_t  *imcf;

    if (ngx_im_session_torn_down(s) && s->state != NGX_IM_S_CLOSING) {
        return NGX_ERROR;
    }

    busy = ngx_im_busy(s);
    if (busy == NULL) {
        ngx_im_session_ops->close(s, NGX_IM_CLOSE_ERROR);
        return NGX_ERROR;
    }

    imcf = ngx_im_get_conf();

    total = hlen + n;

    if (busy->out_size + total > imcf->send_buffer) {
        ngx_log_error(NGX_LOG_WARN, s->connection->log, 0,
                      "im: uid %uD does not read, %uD bytes unsent: closing",
                      s->route.uid, busy->out_size);
        ngx_im_stats->slow_closed++;
        ngx_im_session_ops->close(s, NGX_IM_CLOSE_SLOW);
        return NGX_ERROR;
    }

    last = (busy->last_out == &busy->out) ? NULL
           : (ngx_chain_t *) ((u_char *) busy->last_out
                              - offsetof(ngx_chain_t, next));

    if (last == NULL || (size_t) (last->buf->end - last->buf->last) < total)
    {
        cl = ngx_im_chunk_alloc(total);
        if (cl == NULL) {
            ngx_im_session_ops->close(s, NGX_IM_CLOSE_ERROR);
            return NGX_ERROR;
        }

        if (last) {
            last->buf->flush = 0;
        }

        *busy->last_out = cl;
        busy->last_out = &cl->next;
        last = cl;
    }

    b = last->buf;

    /* raw output has no header: memcpy() from NULL is undefined even for 0 */
    if (hlen) {
        b->last = ngx_cpymem(b->last, hdr, hlen);
    }

    b->last = ngx_cpymem(b->last, p, n);
    /* nginx's SSL layer sends its buffer when it sees a flush */
    b->flush = 1;

    busy->out_size += total;

    ngx_im_output_post_flush(s);

    return NGX_OK;
}


ngx_int_t
ngx_im_output_send(ngx_im_session_t *s, u_char *p, size_t n)
{
    u_char  hdr[16];

    ngx_im_stats->out[n && p[0] < NGX_IM_CMDS ? p[0] : 0]++;

    if (ngx_im_output_append(s, hdr,
                             ngx_im_session_transport(s)->header(s, hdr, n),
                             p, n)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    s->msgs_out++;

    return NGX_OK;
}


ngx_int_t
ngx_im_output_send_raw(ngx_im_session_t *s, u_char *p, size_t n)
{
    return ngx_im_output_append(s, NULL, 0, p, n);
}


void
ngx_im_output_simple(ngx_im_session_t *s, u_char cmd)
{
    u_char  buf[1];

    (void) ngx_im_output_send(s, buf, im_build_simple(buf, cmd));
}


/*
 * Output leaves once per connection per event loop pass, whatever the
 * number of messages queued in it: sessions with something to send wait in
 * a list flushed at the end of the pass.  A group message reaches a
 * thousand sessions in one pass, and the next group message read in the
 * same pass joins it in the same write: one system call per member for
 * several messages.  (Flushing every 32 sessions instead cost three times
 * the CPU per fan-out delivery, and measured no better latency in 1:1.)
 * The list is flushed early only past NGX_IM_FLUSH_BATCH sessions, so that
 * output held for a pass stays bounded (a chunk per session).  At 1,024 a
 * group of 10,000 got each message in a write of its own per member: 15.5
 * us per delivery with 4 group messages in flight, 9.9 us at 16,384; with
 * one message at a time both cost the same, the first member getting it 5
 * ms later (15 instead of 10) and the last one no later.
 */

#define NGX_IM_FLUSH_BATCH  16384

static ngx_queue_t   ngx_im_flush_queue;
static ngx_uint_t    ngx_im_flush_n;
static ngx_uint_t    ngx_im_flushing;
static ngx_event_t   ngx_im_flush_ev;


static void
ngx_im_output_flush_all(void)
{
    ngx_queue_t       *q;
    ngx_im_session_t  *s;

    if (ngx_im_flushing) {
        return;
    }

    ngx_im_flushing = 1;

    if (ngx_im_flush_n > NGX_IM_TRIM_BURST) {
        /* a chunk per session was held: the heap may keep them */
        ngx_im_trim_note(NGX_IM_TRIM_BURST);
    }

    while (!ngx_queue_empty(&ngx_im_flush_queue)) {
        q = ngx_queue_head(&ngx_im_flush_queue);
        ngx_queue_remove(q);
        ngx_im_flush_n--;

        s = (ngx_queue_data(q, ngx_im_busy_t, flush_link))->session;
        s->flush_posted = 0;

        ngx_im_output_write(s);
    }

    ngx_im_flushing = 0;
}


static void
ngx_im_output_flush_handler(ngx_event_t *ev)
{
    ngx_im_output_flush_all();
}


static void
ngx_im_output_post_flush(ngx_im_session_t *s)
{
    if (s->flush_posted) {
        return;
    }

    if (ngx_im_flush_ev.handler == NULL) {
        ngx_queue_init(&ngx_im_flush_queue);
        ngx_im_event_init(&ngx_im_flush_ev, ngx_im_output_flush_handler);
    }

    s->flush_posted = 1;
    ngx_queue_insert_tail(&ngx_im_flush_queue, &s->busy->flush_link);

    if (++ngx_im_flush_n >= NGX_IM_FLUSH_BATCH) {
        ngx_im_output_flush_all();
        return;
    }

    if (!ngx_im_flush_ev.posted) {
        ngx_post_event(&ngx_im_flush_ev, &ngx_posted_events);
    }
}


static void
ngx_im_output_unflush(ngx_im_session_t *s)
{
    if (s->flush_posted) {
        ngx_queue_remove(&s->busy->flush_link);
        ngx_im_flush_n--;
        s->flush_posted = 0;
    }
}


void
ngx_im_output_write(ngx_im_session_t *s)
{
    size_t             before;
    ssize_t            n;
    ngx_buf_t         *b;
    ngx_chain_t       *cl, *next;
    ngx_im_busy_t     *busy;
    ngx_connection_t  *c;

    c = s->connection;

    if (c->write->timedout) {
        c->write->timedout = 0;
        ngx_im_session_ops->close(s, NGX_IM_CLOSE_SLOW);
        return;
    }

    if (ngx_im_session_transport(s)->pre_flush) {
        switch (ngx_im_session_transport(s)->pre_flush(s)) {
        case NGX_OK:
            break;
        case NGX_AGAIN:
            return;
        default:
            ngx_im_session_ops->close(s, NGX_IM_CLOSE_ERROR);
            return;
        }
    }

    busy = s->busy;
    before = busy->out_size;

    if (busy->out || c->buffered) {

        /*
         * the subscriptions of this pass first: a CONNECT_ACK must not
         * leave before the SUBSCRIBE of its uid (ngx_im_redis_pubsub.c).  Only
         * when something leaves: the write events nginx's upstream module
         * arms on a client connection during its login (one per login,
         * with nothing to write) wrote the batch of the moment each
         */
        ngx_im_redis_flush_new_subs();

        if (busy->out && busy->out->next == NULL && !c->buffered) {

            /*
             * One buffer, the usual case: send() rather than the chain's
             * writev(), which costs a file lookup with its position lock
             * and an iovec import per call (6.1 against 7.1 us for a small
             * write on loopback here)
             */

            b = busy->out->buf;
            n = c->send(c, b->pos, b->last - b->pos);

            if (n == NGX_ERROR) {
                cl = NGX_CHAIN_ERROR;

            } else {
                b->pos += (n > 0) ? n : 0;
                cl = (b->pos == b->last) ? NULL : busy->out;
            }

        } else {
            cl = c->send_chain(c, busy->out, 0);
        }

        if (cl == NGX_CHAIN_ERROR) {
            /* nothing more leaves on this connection: a later write of
             * the close phase would only fail again (a peer gone at
             * logout: ECONNRESET, then EPIPE) */
            ngx_im_output_free(s);
            c->error = 1;
            ngx_im_session_ops->close(s, NGX_IM_CLOSE_ERROR);
            return;
        }

        /* cl is the first chunk not wholly sent; an idle session only
         * had TLS's own buffer to send */

        if (busy != &ngx_im_busy_idle) {
            while (busy->out != cl) {
                next = busy->out->next;
                ngx_im_chunk_free(busy->out);
                busy->out = next;
            }

            busy->out_size = 0;

            if (busy->out == NULL) {
                busy->last_out = &busy->out;

            } else {
                /* partly sent: count only what is left */
                for (cl = busy->out; cl; cl = cl->next) {
                    busy->out_size += cl->buf->last - cl->buf->pos;
                }
            }
        }

        if (busy->out_size < before) {
            /* the socket took some: the peer reads (its heartbeat) */
            s->wrote = 1;
        }
    }

    /* room again: the next pushes waiting for it, out at the next pass */
    ngx_im_session_ops->written(s);

    if (s->busy->out || c->buffered) {
        if (ngx_handle_write_event(c->write, 0) != NGX_OK) {
            ngx_im_session_ops->close(s, NGX_IM_CLOSE_ERROR);
        }
        return;
    }

    /* nothing left to write: the record may go back, if nothing else is
     * under way (written() may have queued more) */
    ngx_im_busy_done(s);

    /* all said: a closing session may end */
    ngx_im_session_ops->flushed(s);
}


void
ngx_im_output_free(ngx_im_session_t *s)
{
    ngx_chain_t  *cl;

    ngx_im_output_unflush(s);

    if (s->busy == &ngx_im_busy_idle) {
        return;
    }

    while (s->busy->out) {
        cl = s->busy->out;
        s->busy->out = cl->next;
        ngx_im_chunk_free(cl);
    }

    s->busy->last_out = &s->busy->out;
    s->busy->out_size = 0;
}
