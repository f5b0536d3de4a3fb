/* SPDX-License-Identifier: BSD-2-Clause */
#include "src/hist.h"

const uint64_t tc_hist_le_ns[TC_HIST_NB] = {
    250,      500,       1000,      2500,      5000,       10000,      25000,      50000,
    100000,   250000,    500000,    1000000,   2500000,    5000000,    10000000,   25000000,
    50000000, 100000000, 250000000, 500000000, 1000000000, 2500000000, 5000000000, UINT64_MAX,
};

void tc_hist_add(struct tc_hist *h, uint64_t ns)
{
    int i = 0;
    while (ns > tc_hist_le_ns[i]) {
        i++;
    }
    /* Single writer: load + store, no locked read-modify-write. */
    atomic_store_explicit(&h->b[i], atomic_load_explicit(&h->b[i], memory_order_relaxed) + 1,
                          memory_order_relaxed);
    atomic_store_explicit(&h->sum_ns, atomic_load_explicit(&h->sum_ns, memory_order_relaxed) + ns,
                          memory_order_relaxed);
}

void tc_hist_snap_add(struct tc_hist_snap *s, const struct tc_hist *h)
{
    for (int i = 0; i < TC_HIST_NB; i++) {
        uint64_t v = atomic_load_explicit(&h->b[i], memory_order_relaxed);
        s->b[i] += v;
        s->count += v;
    }
    s->sum_ns += atomic_load_explicit(&h->sum_ns, memory_order_relaxed);
}

uint64_t tc_hist_snap_quantile(const struct tc_hist_snap *s, double q)
{
    if (s->count == 0) {
        return 0;
    }
    double rank = q * (double)s->count;
    uint64_t seen = 0;
    for (int i = 0; i < TC_HIST_NB; i++) {
        if (s->b[i] == 0) {
            continue;
        }
        if ((double)(seen + s->b[i]) >= rank) {
            uint64_t lo = i == 0 ? 0 : tc_hist_le_ns[i - 1];
            uint64_t hi = i == TC_HIST_NB - 1 ? lo * 2 : tc_hist_le_ns[i];
            double frac = (rank - (double)seen) / (double)s->b[i];
            return lo + (uint64_t)(frac * (double)(hi - lo));
        }
        seen += s->b[i];
    }
    return tc_hist_le_ns[TC_HIST_NB - 2];
}
