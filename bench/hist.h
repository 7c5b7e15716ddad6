/* Log-linear latency histogram (HdrHistogram-like): values in ns, exact below
 * 128 ns, then 64 sub-buckets per power of two (relative error < 1.6 %),
 * up to 2^40 ns (~18 min). Mergeable by adding the arrays. */
#ifndef IMGEN_HIST_H
#define IMGEN_HIST_H
#include <math.h>
#include <stdint.h>
#include <stdio.h>

#define HIST_MAXBITS 40
#define HIST_N ((HIST_MAXBITS - 6 + 1) * 64 + 64)

typedef struct {
    uint64_t count, sum, max;
    uint64_t b[HIST_N];
} hist_t;

static inline int hist_idx(uint64_t v)
{
    if (v < 128) return (int) v;
    if (v >= (1ull << HIST_MAXBITS)) v = (1ull << HIST_MAXBITS) - 1;
    int msb = 63 - __builtin_clzll(v);
    int e = msb - 6;                                  /* >= 1 */
    return e * 64 + (int) (v >> e);                   /* v >> e in [64, 127] */
}

static inline double hist_val(int i)                 /* middle of bucket i */
{
    if (i < 128) return i;
    int e = i / 64 - 1;
    uint64_t m = (uint64_t) (i - e * 64);
    return (double) (m << e) + (double) (1ull << e) / 2.0;
}

static inline void hist_add(hist_t *h, uint64_t v)
{
    h->b[hist_idx(v)]++;
    h->count++;
    h->sum += v;
    if (v > h->max) h->max = v;
}

static inline void hist_merge(hist_t *a, const hist_t *b)
{
    for (int i = 0; i < HIST_N; i++) a->b[i] += b->b[i];
    a->count += b->count;
    a->sum += b->sum;
    if (b->max > a->max) a->max = b->max;
}

/* value at percentile p (0..100), ns */
static inline double hist_pct(const hist_t *h, double p)
{
    if (h->count == 0) return 0;
    uint64_t want = (uint64_t) ((double) h->count * p / 100.0 + 0.999999);
    if (want < 1) want = 1;
    uint64_t acc = 0;
    for (int i = 0; i < HIST_N; i++) {
        acc += h->b[i];
        if (acc >= want) {
            double v = hist_val(i);
            return v > (double) h->max ? (double) h->max : v;
        }
    }
    return (double) h->max;
}
/* the percentile curve bench/report.py plots: percentile, value in us and
 * 1/(1-p), 51 points from 0 to 99.999 %, then the maximum */
static inline void hist_write_curve(FILE *f, const hist_t *h, const char *what)
{
    fprintf(f, "# percentile latency_us 1/(1-p)  (%s, %llu samples)\n", what,
            (unsigned long long) h->count);
    for (int k = 0; k <= 50; k++) {
        double q = 1.0 - pow(10.0, -k / 10.0);       /* 0, 20.6 %, ... 99.999 % */
        fprintf(f, "%.5f %.1f %.3f\n", 100 * q, hist_pct(h, 100 * q) / 1e3,
                1.0 / (1.0 - q));
    }
    fprintf(f, "100 %.1f inf\n", (double) h->max / 1e3);
}
#endif
