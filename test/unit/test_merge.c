
/*
 * test_merge.c: unit tests of the inbox merge (src/ngx_im_merge.c).
 *
 * Items are named by a letter: an upper-case one came live (the waiting
 * queue), the same letter in lower case is its inbox copy (the same
 * MsgId).  Each case gives the waiting and inbox queues as strings and
 * checks the merged queue (read forwards and backwards, so a broken link
 * shows), the inbox left empty, and which inbox items were dropped, once
 * each.  Every item is its own heap block, freed by the drop callback, so
 * the ASan build catches the merge touching an item after dropping it.
 * Last, every small input is compared with a plain array model of the
 * merge rules.
 */


#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_im_merge.h"
#include "tap.h"


#define MAX_ITEMS  64


typedef struct {
    ngx_queue_t  queue;
    u_char       msgid[NGX_IM_MERGE_ID_LEN];
    char         name;
} item_t;


/* what the drop callback saw */
typedef struct {
    char         names[MAX_ITEMS + 1];
    size_t       n;
    ngx_uint_t   bad;
} drops_t;


static item_t *
item(ngx_queue_t *q)
{
    return ngx_queue_data(q, item_t, queue);
}


static const u_char *
item_id(ngx_queue_t *q)
{
    return item(q)->msgid;
}


static void
item_drop(ngx_queue_t *q, void *data)
{
    item_t   *it;
    drops_t  *d;

    d = data;
    it = item(q);

    /* only inbox items are dropped */
    if (!islower((unsigned char) it->name) || d->n == MAX_ITEMS) {
        d->bad++;

    } else {
        d->names[d->n++] = it->name;
        d->names[d->n] = '\0';
    }

    free(it);
}


/* a queue of items from names; the MsgId is the letter's upper case,
 * repeated, with the last byte different so memcmp must read them all */

static void
fill(ngx_queue_t *head, const char *names)
{
    item_t  *it;

    ngx_queue_init(head);

    for (; *names; names++) {
        it = malloc(sizeof(item_t));
        if (it == NULL) {
            printf("Bail out! out of memory\n");
            exit(2);
        }

        it->name = *names;
        memset(it->msgid, 'm', NGX_IM_MERGE_ID_LEN);
        it->msgid[NGX_IM_MERGE_ID_LEN - 1] =
            (u_char) toupper((unsigned char) *names);

        ngx_queue_insert_tail(head, &it->queue);
    }
}


/* the names in the queue, checked forwards and backwards; frees them */

static int
drain(ngx_queue_t *head, char *out, size_t size)
{
    size_t        n, m;
    ngx_queue_t  *q;
    int           ok;

    ok = 1;
    n = 0;

    for (q = ngx_queue_head(head);
         q != ngx_queue_sentinel(head);
         q = ngx_queue_next(q))
    {
        if (n + 1 >= size || ngx_queue_next(q)->prev != q) {
            ok = 0;
            break;
        }

        out[n++] = item(q)->name;
    }

    out[n] = '\0';

    /* backwards: the same names in reverse */
    m = n;

    for (q = ngx_queue_last(head);
         ok && q != ngx_queue_sentinel(head);
         q = ngx_queue_prev(q))
    {
        if (m == 0 || out[--m] != item(q)->name) {
            ok = 0;
        }
    }

    if (m != 0) {
        ok = 0;
    }

    while (ok && !ngx_queue_empty(head)) {
        q = ngx_queue_head(head);
        ngx_queue_remove(q);
        free(item(q));
    }

    return ok;
}


/* run one merge; 1 when everything is as wanted (diagnostics if not) */

static int
run(const char *waiting_s, const char *inbox_s, ngx_uint_t later,
    const char *want, const char *want_drops)
{
    char          got[MAX_ITEMS + 1];
    int           links;
    drops_t       d;
    ngx_queue_t   waiting, inbox;

    memset(&d, 0, sizeof(drops_t));

    fill(&waiting, waiting_s);
    fill(&inbox, inbox_s);

    ngx_im_merge(&waiting, &inbox, later, item_id, item_drop, &d);

    links = ngx_queue_empty(&inbox) && inbox.next == &inbox;

    if (!drain(&waiting, got, sizeof(got))) {
        tap_diag("waiting \"%s\", inbox \"%s\", later %lu: broken links",
                 waiting_s, inbox_s, (unsigned long) later);
        return 0;
    }

    if (!links || strcmp(got, want) != 0 || strcmp(d.names, want_drops) != 0
        || d.bad)
    {
        tap_diag("waiting \"%s\", inbox \"%s\", later %lu: got \"%s\" "
                 "dropped \"%s\"%s%s, want \"%s\" dropped \"%s\"",
                 waiting_s, inbox_s, (unsigned long) later, got, d.names,
                 links ? "" : ", inbox not empty",
                 d.bad ? ", a bad drop" : "", want, want_drops);
        return 0;
    }

    return 1;
}


#define CASE(w, i, later, want, drops, name)                                  \
    tap_ok(run(w, i, later, want, drops), "%s: \"%s\" + \"%s\" -> \"%s\"",   \
           name, w, i, want)


static void
test_cases(void)
{
    CASE("", "", 0, "", "", "nothing at all");
    CASE("ABC", "", 0, "ABC", "", "empty inbox");
    CASE("ABC", "", 1, "ABC", "", "empty inbox, later read");
    CASE("", "abc", 0, "abc", "", "empty waiting");
    CASE("", "abc", 1, "abc", "", "empty waiting, later read");

    CASE("DE", "abc", 0, "abcDE", "",
         "first read, the inbox older than everything live");
    CASE("DE", "abc", 1, "DEabc", "",
         "later read, nothing in common: the inbox last");

    CASE("XCY", "abc", 0, "abXCY", "c", "a meeting point in the middle");
    CASE("XCYDZ", "abcd", 0, "abXCYDZ", "cd",
         "two meeting points, the rest of the live queue after them");

    CASE("XYC", "abc", 0, "abXYC", "c",
         "the live copy is the last waiting item");
    CASE("C", "c", 0, "C", "c", "the live copy is the only waiting item");
    CASE("C", "c", 1, "C", "c",
         "the only waiting item, later read");
    CASE("ABC", "abc", 0, "ABC", "abc",
         "every item both live and in the inbox");
    CASE("ABC", "c", 0, "ABC", "c",
         "one inbox item, its live copy last");
    CASE("ABC", "a", 0, "ABC", "a",
         "one inbox item, its live copy first");

    CASE("PAQBRC", "xabyc", 0, "xPAQByRC", "abc",
         "several meeting points, inbox-only items between them");
    CASE("PAQBRCS", "xabyc", 0, "xPAQByRCS", "abc",
         "several meeting points, a live item after the last");

    CASE("PAQB", "xayb", 1, "PAQBxy", "ab",
         "later read: inbox-only items go last");
    CASE("PAQBR", "xaybz", 1, "PAQBRxyz", "ab",
         "later read: inbox-only items last, behind the rest live");

    CASE("AB", "ba", 0, "ABa", "b",
         "the live copy already moved: the inbox copy is kept");
    CASE("AB", "ba", 1, "ABa", "b",
         "the live copy already moved, later read: kept, last");
    CASE("ABC", "cab", 0, "ABCab", "c",
         "all live copies moved by the first match: two kept");

    CASE("ABA", "a", 0, "ABA", "a",
         "a MsgId twice live: the first copy is the meeting point");
    CASE("AB", "aa", 0, "AaB", "a",
         "an inbox MsgId twice: dropped once, then kept");
}


/*
 * The rules as plain arrays: for each inbox item, the first live item
 * with its MsgId; none: the item goes to merged (first read) or late;
 * else the live items up to it go to merged and the inbox item is
 * dropped.  Result: merged, the live items left, late.
 */

static void
model(const char *w, const char *in, ngx_uint_t later, char *out,
    char *drops)
{
    char         merged[MAX_ITEMS + 1], late[MAX_ITEMS + 1];
    size_t       nm, nl, nd, i, k;
    const char  *rest;

    nm = nl = nd = 0;
    rest = w;

    for (i = 0; in[i]; i++) {
        for (k = 0; rest[k]; k++) {
            if (toupper((unsigned char) rest[k])
                == toupper((unsigned char) in[i]))
            {
                break;
            }
        }

        if (rest[k] == '\0') {
            if (later) {
                late[nl++] = in[i];

            } else {
                merged[nm++] = in[i];
            }

            continue;
        }

        memcpy(merged + nm, rest, k + 1);
        nm += k + 1;
        rest += k + 1;
        drops[nd++] = in[i];
    }

    /* the inputs are a few letters: no bounds to mind */
    memcpy(out, merged, nm);
    out += nm;
    k = strlen(rest);
    memcpy(out, rest, k);
    out += k;
    memcpy(out, late, nl);
    out[nl] = '\0';

    drops[nd] = '\0';
}


/* the next word over alpha, shortest first: s counts up in base
 * strlen(alpha), least significant letter first; done past max letters */

static void
next_word(char *s, size_t *len, const char *alpha, size_t max, int *done)
{
    size_t       i;
    const char  *c;

    for (i = 0; i < *len; i++) {
        c = strchr(alpha, s[i]);

        if (c[1]) {
            s[i] = c[1];
            return;
        }

        s[i] = alpha[0];
    }

    if (*len == max) {
        *done = 1;
        return;
    }

    s[(*len)++] = alpha[0];
    s[*len] = '\0';
}


/* every waiting queue of up to 4 items and inbox of up to 3 over a
 * 4-letter alphabet, both reads */

static void
test_model(void)
{
    char        w[8], in[8], want[MAX_ITEMS + 1], drops[MAX_ITEMS + 1];
    size_t      wl, il;
    ngx_uint_t  later, n, failed;
    int         wdone, idone;

    n = failed = 0;

    for (later = 0; later < 2; later++) {
        w[0] = '\0';
        wl = 0;
        wdone = 0;

        while (!wdone) {
            in[0] = '\0';
            il = 0;
            idone = 0;

            while (!idone) {
                model(w, in, later, want, drops);
                n++;

                if (!run(w, in, later, want, drops) && ++failed > 5) {
                    goto done;
                }

                next_word(in, &il, "abcd", 3, &idone);
            }

            next_word(w, &wl, "ABCD", 4, &wdone);
        }
    }

done:

    tap_ok(failed == 0, "%lu inputs (waiting <= 4, inbox <= 3, 4 MsgIds, "
           "both reads): the same as the array model",
           (unsigned long) n);
}


void
test_merge(void)
{
    test_cases();
    test_model();
}
