/*
 * imgen's timers: a binary min-heap of (time, connection, generation).
 * The full-box scenario schedules each connection's next connect (backoff
 * and jitter) and the deadline of its login attempt here. An entry is
 * never removed: a connection bumps its generation instead, and an entry
 * whose generation is old is dropped when it comes up.
 */
#ifndef IMGEN_TIMERS_H
#define IMGEN_TIMERS_H
#include <stdint.h>
#include <stdlib.h>

enum { TM_START = 1, TM_DEADLINE = 2 };

typedef struct {
    uint64_t t;
    uint32_t idx;
    uint32_t gen;
    uint32_t kind;
} tm_entry_t;

typedef struct {
    tm_entry_t *h;
    long        n, cap;
} tm_heap_t;

static inline int tm_less(const tm_entry_t *a, const tm_entry_t *b)
{
    return a->t < b->t;
}

/* returns -1 when out of memory */
static inline int tm_push(tm_heap_t *q, uint64_t t, uint32_t idx, uint32_t gen,
                          uint32_t kind)
{
    long i;

    if (q->n == q->cap) {
        long cap = q->cap ? q->cap * 2 : 1024;
        tm_entry_t *h = realloc(q->h, cap * sizeof(tm_entry_t));
        if (h == NULL) return -1;
        q->h = h;
        q->cap = cap;
    }
    i = q->n++;
    q->h[i] = (tm_entry_t) { t, idx, gen, kind };
    while (i > 0) {
        long p = (i - 1) / 2;
        if (!tm_less(&q->h[i], &q->h[p])) break;
        tm_entry_t x = q->h[p];
        q->h[p] = q->h[i];
        q->h[i] = x;
        i = p;
    }
    return 0;
}

/* the earliest entry due at or before now into *e; 0 when none is due */
static inline int tm_pop_due(tm_heap_t *q, uint64_t now, tm_entry_t *e)
{
    long i = 0;

    if (q->n == 0 || q->h[0].t > now) return 0;
    *e = q->h[0];
    q->h[0] = q->h[--q->n];
    for (;;) {
        long l = 2 * i + 1, r = l + 1, m = i;
        if (l < q->n && tm_less(&q->h[l], &q->h[m])) m = l;
        if (r < q->n && tm_less(&q->h[r], &q->h[m])) m = r;
        if (m == i) break;
        tm_entry_t x = q->h[m];
        q->h[m] = q->h[i];
        q->h[i] = x;
        i = m;
    }
    return 1;
}
#endif
