/* series.h: a fixed-rate run's latency over time.
 *
 * One slot per millisecond of intended send time in the measured window:
 * the messages sent in it and the largest latency among them. Written as
 * "ms count max_us" lines, so that a tail can be told apart as a few
 * stalls (many messages of a few milliseconds late together, perhaps at a
 * period) or as scattered waits, and lined up with a scheduler trace
 * taken with the same clock (CLOCK_MONOTONIC: perf record -k mono). */
#ifndef IMGEN_SERIES_H
#define IMGEN_SERIES_H
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct {
    uint64_t  start;               /* ns, CLOCK_MONOTONIC */
    uint32_t  n;                   /* slots */
    uint32_t *cnt, *max_us;
} series_t;

static inline int series_init(series_t *s, uint64_t start, double seconds)
{
    s->start = start;
    s->n = (uint32_t) (seconds * 1000) + 1;
    s->cnt = calloc(s->n, sizeof(uint32_t));
    s->max_us = calloc(s->n, sizeof(uint32_t));
    return s->cnt && s->max_us ? 0 : -1;
}

static inline void series_add(series_t *s, uint64_t intended, uint64_t lat)
{
    uint64_t i, us = lat / 1000;

    if (s->cnt == NULL || intended < s->start) return;
    i = (intended - s->start) / 1000000;
    if (i >= s->n) return;
    s->cnt[i]++;
    if (us > UINT32_MAX) us = UINT32_MAX;
    if (us > s->max_us[i]) s->max_us[i] = (uint32_t) us;
}

static inline void series_write(const series_t *s, FILE *f)
{
    uint32_t i;

    fprintf(f, "# start_mono_ns %llu\n# ms count max_us\n",
            (unsigned long long) s->start);
    for (i = 0; i < s->n; i++) {
        if (s->cnt[i]) fprintf(f, "%u %u %u\n", i, s->cnt[i], s->max_us[i]);
    }
}
#endif
