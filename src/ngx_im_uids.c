/*
 * ngx_im_uids.c: lists of uids: sorted, each once.
 */

#include "ngx_im_uids.h"


int ngx_libc_cdecl
ngx_im_uid_cmp(const void *one, const void *two)
{
    uint32_t  a = *(const uint32_t *) one;
    uint32_t  b = *(const uint32_t *) two;

    return (a > b) - (a < b);
}


ngx_uint_t
ngx_im_uids_unique(uint32_t *uids, ngx_uint_t n)
{
    ngx_uint_t  i, j;

    if (n < 2) {
        return n;
    }

    ngx_qsort(uids, n, sizeof(uint32_t), ngx_im_uid_cmp);

    for (i = 1, j = 1; i < n; i++) {
        if (uids[i] != uids[j - 1]) {
            uids[j++] = uids[i];
        }
    }

    return j;
}
