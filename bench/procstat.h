/* procstat.h: CPU time of processes and of the machine from /proc, shared by
 * bench/imgen.c and bench/floor.c so both report the same measure. */
#ifndef IMGEN_PROCSTAT_H
#define IMGEN_PROCSTAT_H
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int parse_pids(const char *s, int *pids, int max)
{
    int n = 0;
    while (s && *s && n < max) {
        char *e;
        long v = strtol(s, &e, 10);
        if (e == s) break;
        if (v > 0) pids[n++] = v;
        s = e;
        while (*s == ',' || *s == ' ') s++;
    }
    return n;
}

static double cpu_of(const char *list)
{
    int pids[256], n = parse_pids(list, pids, 256);
    double total = 0;
    long hz = sysconf(_SC_CLK_TCK);

    for (int i = 0; i < n; i++) {
        char path[64], buf[2048];
        snprintf(path, sizeof(path), "/proc/%d/stat", pids[i]);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        size_t l = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[l] = 0;
        char *p = strrchr(buf, ')');
        if (!p) continue;
        /* fields after ')': state(3) ... utime(14) stime(15) */
        unsigned long ut = 0, st = 0;
        int field = 2;
        for (char *q = p + 1; *q; q++) {
            if (*q == ' ') {
                field++;
                if (field == 14) ut = strtoul(q + 1, NULL, 10);
                if (field == 15) {
                    st = strtoul(q + 1, NULL, 10);
                    break;
                }
            }
        }
        total += (double) (ut + st) / hz;
    }
    return total;
}

/* busy CPU seconds of the whole machine (all CPUs) from /proc/stat, and
 * apart from them the time the hypervisor ran something else on our vCPUs
 * ("steal"): a vCPU stolen from for milliseconds at a time stalls whatever
 * it was running, which a latency tail shows and no server can avoid */
static double machine_steal_s;

static double machine_busy(void)
{
    unsigned long long v[10] = { 0 };
    FILE *f = fopen("/proc/stat", "r");
    if (!f) return 0;
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1],
                   &v[2], &v[3], &v[4], &v[5], &v[6], &v[7], &v[8], &v[9]);
    fclose(f);
    if (n < 8) return 0;
    /* user nice system [idle iowait] irq softirq [steal] */
    machine_steal_s = (double) v[7] / sysconf(_SC_CLK_TCK);
    return (double) (v[0] + v[1] + v[2] + v[5] + v[6]) / sysconf(_SC_CLK_TCK);
}

#endif
