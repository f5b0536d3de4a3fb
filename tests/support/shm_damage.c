/* SPDX-License-Identifier: BSD-2-Clause */
#define _GNU_SOURCE /* memmem */
#include "tests/support/shm_damage.h"

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int tc_test_shm_flip_all(const char *name, const char *mark)
{
    char path[128];
    snprintf(path, sizeof(path), "/%s", name);
    int fd = shm_open(path, O_RDWR, 0);
    if (fd < 0) {
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return -1;
    }
    size_t len = (size_t)st.st_size;
    uint8_t *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (m == MAP_FAILED) {
        return -1;
    }
    int n = 0;
    size_t ml = strlen(mark);
    for (uint8_t *p = m; (p = memmem(p, len - (size_t)(p - m), mark, ml)) != NULL; p += ml) {
        p[0] ^= 0x20;
        n++;
    }
    munmap(m, len);
    return n;
}
