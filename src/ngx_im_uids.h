/*
 * ngx_im_uids.h: lists of uids (group members, part-group recipients).
 */

#ifndef _NGX_IM_UIDS_H_INCLUDED_
#define _NGX_IM_UIDS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


/* order for qsort() and bsearch() */
int ngx_libc_cdecl ngx_im_uid_cmp(const void *one, const void *two);

/* sort and drop repeats; returns the new length */
ngx_uint_t ngx_im_uids_unique(uint32_t *uids, ngx_uint_t n);


#endif /* _NGX_IM_UIDS_H_INCLUDED_ */
