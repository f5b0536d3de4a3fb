/* SPDX-License-Identifier: BSD-2-Clause */
#include "bench/sim.h"

#include <stdlib.h>
#include <string.h>

/* Nodes are indexed from 1 (0 = none). An object keeps its node for the
 * whole run, cached or not, so the id map never deletes (no tombstones on
 * the hot path). */
struct node {
    uint32_t prev, next;
    uint32_t cached;
    uint64_t size;
};

struct map {
    uint64_t *ids;  /* id + 1 (0 = empty slot) ... ids of UINT64_MAX are stored in `max_node` */
    uint32_t *node; /* node index for the slot */
    size_t mask;
    size_t used;
    uint32_t max_node; /* node of id UINT64_MAX, which id + 1 cannot hold */
};

static size_t slot_of(uint64_t id, size_t mask)
{
    uint64_t h = id * 0x9E3779B97F4A7C15ull;
    return (size_t)(h ^ (h >> 29)) & mask;
}

static int map_grow(struct map *m)
{
    size_t ncap = m->mask ? (m->mask + 1) * 2 : 1u << 16;
    uint64_t *ids = calloc(ncap, sizeof(*ids));
    uint32_t *node = malloc(ncap * sizeof(*node));
    if (ids == NULL || node == NULL) {
        free(ids);
        free(node);
        return -1;
    }
    for (size_t i = 0; m->mask && i <= m->mask; i++) {
        if (m->ids[i] != 0) {
            size_t j = slot_of(m->ids[i] - 1, ncap - 1);
            while (ids[j] != 0) {
                j = (j + 1) & (ncap - 1);
            }
            ids[j] = m->ids[i];
            node[j] = m->node[i];
        }
    }
    free(m->ids);
    free(m->node);
    m->ids = ids;
    m->node = node;
    m->mask = ncap - 1;
    return 0;
}

/* The node of @p id, made (index *next_node) when new; 0 when out of memory. */
static uint32_t map_get(struct map *m, uint64_t id, uint32_t *next_node)
{
    if (id == UINT64_MAX) {
        if (m->max_node == 0) {
            m->max_node = (*next_node)++;
        }
        return m->max_node;
    }
    size_t j = slot_of(id, m->mask);
    for (;;) {
        uint64_t v = m->ids[j];
        if (v == id + 1) {
            return m->node[j];
        }
        if (v == 0) {
            break;
        }
        j = (j + 1) & m->mask;
    }
    if ((m->used + 1) * 2 > m->mask + 1) {
        if (map_grow(m) != 0) {
            return 0;
        }
        return map_get(m, id, next_node);
    }
    m->ids[j] = id + 1;
    m->node[j] = (*next_node)++;
    m->used++;
    return m->node[j];
}

const char *tb_sim_policy_name(enum tb_sim_policy p)
{
    return p == TB_SIM_LRU ? "lru" : "fifo";
}

int tb_sim_run(enum tb_sim_policy p, uint64_t capacity, const struct tb_req *reqs, size_t n,
               struct tb_sim_result *out)
{
    struct map m = {0};
    struct node *nodes = NULL;
    size_t ncap = 0;
    uint32_t next_node = 1, head = 0, tail = 0; /* newest at head */
    uint64_t used = 0;
    int rc = -1;
    memset(out, 0, sizeof(*out));
    if (map_grow(&m) != 0) {
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        const struct tb_req *r = &reqs[i];
        uint32_t x = map_get(&m, r->id, &next_node);
        if (x == 0) {
            goto out;
        }
        if (x >= ncap) {
            size_t nc = ncap ? ncap * 2 : 1u << 16;
            struct node *nn = realloc(nodes, nc * sizeof(*nn));
            if (nn == NULL) {
                goto out;
            }
            memset(nn + ncap, 0, (nc - ncap) * sizeof(*nn));
            nodes = nn;
            ncap = nc;
        }
        struct node *nd = &nodes[x];
        uint64_t size = (uint64_t)r->vsize + r->ksize;
        out->requests++;
        if (nd->cached) {
            if (p == TB_SIM_LRU && head != x) {
                /* Unlink (x is not the head, so it has a prev) and push. */
                nodes[nd->prev].next = nd->next;
                if (nd->next) {
                    nodes[nd->next].prev = nd->prev;
                } else {
                    tail = nd->prev;
                }
                nd->prev = 0;
                nd->next = head;
                nodes[head].prev = x;
                head = x;
            }
            continue;
        }
        out->misses++;
        out->miss_bytes += size;
        if (size > capacity) {
            continue;
        }
        while (used + size > capacity) {
            struct node *v = &nodes[tail];
            uint32_t vp = v->prev;
            v->cached = 0;
            used -= v->size;
            if (vp) {
                nodes[vp].next = 0;
            } else {
                head = 0;
            }
            tail = vp;
        }
        nd->cached = 1;
        nd->size = size;
        nd->prev = 0;
        nd->next = head;
        if (head) {
            nodes[head].prev = x;
        } else {
            tail = x;
        }
        head = x;
        used += size;
    }
    rc = 0;
out:
    free(m.ids);
    free(m.node);
    free(nodes);
    return rc;
}
