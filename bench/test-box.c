/*
 * test-box: checks of imgen's message ledger (ledger.h) and timer heap
 * (timers.h), the parts of the full-box scenario that decide what counts
 * as lost and when a client comes back.  make -C bench test
 */
#include <stdio.h>
#include <stdlib.h>

#include "ledger.h"
#include "timers.h"

static int fails;

#define CHECK(c) do { if (!(c)) { fails++; \
    fprintf(stderr, "test-box: %s:%d: %s\n", __FILE__, __LINE__, #c); } } while (0)

static void test_ledger(void)
{
    ledger_t     l;
    ledger_sum_t s;

    CHECK(ledger_init(&l, 5) == 0);
    for (int i = 0; i < 5; i++) CHECK(ledger_new(&l) == i);
    CHECK(ledger_new(&l) == -1);              /* full */

    /* 0: acked then received; 1: received then acked (a push can overtake
     * the PUB_ACK); 2: acked, never received (lost); 3: sent, nothing back
     * but received (the connection went down before the PUB_ACK);
     * 4: refused */
    CHECK(ledger_ack(&l, 0) == 1);
    CHECK(l.owed == 1);
    CHECK(ledger_recv(&l, 0) == 1);
    CHECK(l.owed == 0);
    CHECK(ledger_recv(&l, 0) == 0);           /* duplicate */
    CHECK(ledger_recv(&l, 1) == 1);
    CHECK(ledger_ack(&l, 1) == 1);
    CHECK(l.owed == 0);
    CHECK(ledger_ack(&l, 1) == 0);            /* repeated PUB_ACK */
    CHECK(ledger_ack(&l, 2) == 1);
    CHECK(l.owed == 1);
    CHECK(ledger_recv(&l, 3) == 1);
    CHECK(ledger_refused(&l, 4) == 1);
    CHECK(ledger_ack(&l, 5) == -1);           /* never sent */
    CHECK(ledger_recv(&l, 7) == -1);

    ledger_sum(&l, &s);
    CHECK(s.sent == 5);
    CHECK(s.acked == 3);
    CHECK(s.received == 3);
    CHECK(s.refused == 1);
    CHECK(s.lost == 1);
    CHECK(s.unacked == 1);
    CHECK(s.unacked_received == 1);
    CHECK(s.refused_received == 0);
    free(l.st);
}

static void test_timers(void)
{
    tm_heap_t  q = { 0 };
    tm_entry_t e;
    uint64_t   last = 0;
    int        n = 0;

    /* 5,000 entries in a scrambled order come out in time order */
    for (uint32_t i = 0; i < 5000; i++) {
        CHECK(tm_push(&q, (i * 7919u) % 5000 + 1, i, i * 3, TM_START) == 0);
    }
    CHECK(tm_pop_due(&q, 0, &e) == 0);        /* nothing due yet */
    while (tm_pop_due(&q, 2500, &e)) {
        CHECK(e.t >= last && e.t <= 2500);
        CHECK(e.gen == e.idx * 3);
        last = e.t;
        n++;
    }
    CHECK(n == 2500);
    while (tm_pop_due(&q, UINT64_MAX, &e)) {
        CHECK(e.t >= last);
        last = e.t;
        n++;
    }
    CHECK(n == 5000);
    CHECK(q.n == 0);
    free(q.h);
}

int main(void)
{
    test_ledger();
    test_timers();
    if (fails) {
        fprintf(stderr, "test-box: %d failed\n", fails);
        return 1;
    }
    printf("test-box: ok\n");
    return 0;
}
