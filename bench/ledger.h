/*
 * imgen's message ledger (full-box scenario): one byte per message a
 * generator process sent, indexed by the message's number in that process
 * (carried in the MsgId and in the payload). It records what the sender
 * was told (PUB_ACK, refused) and what the recipient got, so that at the
 * end "acked but never received" is counted message by message, whatever
 * reconnects, inbox reads and re-pushes happened in between. A sender and
 * its recipient are always in the same process.
 */
#ifndef IMGEN_LEDGER_H
#define IMGEN_LEDGER_H
#include <stdint.h>
#include <stdlib.h>

enum { LG_SENT = 1, LG_ACKED = 2, LG_RECV = 4, LG_REFUSED = 8 };

typedef struct {
    uint8_t  *st;
    uint64_t  cap, n;
    uint64_t  owed;       /* acked, not received yet */
} ledger_t;

typedef struct {
    uint64_t sent, acked, received, refused;
    uint64_t lost;                /* acked, never received */
    uint64_t unacked;             /* sent, neither acked nor refused */
    uint64_t unacked_received;    /* of those, received all the same */
    uint64_t refused_received;    /* refused and received: a defect */
} ledger_sum_t;

static inline int ledger_init(ledger_t *l, uint64_t cap)
{
    l->st = calloc(cap ? cap : 1, 1);
    l->cap = cap;
    l->n = l->owed = 0;
    return l->st ? 0 : -1;
}

/* the next message's number, or -1 when the ledger is full */
static inline int64_t ledger_new(ledger_t *l)
{
    if (l->n == l->cap) return -1;
    l->st[l->n] = LG_SENT;
    return (int64_t) l->n++;
}

/* returns 1 for the first PUB_ACK of a message, 0 for a repeat, -1 for a
 * number never sent */
static inline int ledger_ack(ledger_t *l, uint64_t j)
{
    if (j >= l->n) return -1;
    if (l->st[j] & LG_ACKED) return 0;
    l->st[j] |= LG_ACKED;
    if (!(l->st[j] & LG_RECV)) l->owed++;
    return 1;
}

static inline int ledger_refused(ledger_t *l, uint64_t j)
{
    if (j >= l->n) return -1;
    l->st[j] |= LG_REFUSED;
    return 1;
}

/* returns 1 for the first copy, 0 for a duplicate, -1 for a number never
 * sent */
static inline int ledger_recv(ledger_t *l, uint64_t j)
{
    if (j >= l->n) return -1;
    if (l->st[j] & LG_RECV) return 0;
    l->st[j] |= LG_RECV;
    if (l->st[j] & LG_ACKED) l->owed--;
    return 1;
}

static inline void ledger_sum(const ledger_t *l, ledger_sum_t *s)
{
    uint64_t j;

    *s = (ledger_sum_t) { 0 };
    for (j = 0; j < l->n; j++) {
        uint8_t v = l->st[j];
        s->sent++;
        if (v & LG_ACKED) s->acked++;
        if (v & LG_RECV) s->received++;
        if (v & LG_REFUSED) s->refused++;
        if ((v & LG_ACKED) && !(v & LG_RECV)) s->lost++;
        if (!(v & (LG_ACKED | LG_REFUSED))) {
            s->unacked++;
            if (v & LG_RECV) s->unacked_received++;
        }
        if ((v & LG_REFUSED) && (v & LG_RECV)) s->refused_received++;
    }
}
#endif
