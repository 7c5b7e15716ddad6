
/*
 * shim/ngx_core.h: ngx_memcmp and nginx's own ngx_queue.h, for the unit
 * tests of the pure cores (src/ngx_im_merge.c).  The Makefile finds
 * ngx_queue.h in nginx-dev's tree (-idirafter .../src/core), after this
 * directory, so that these shims win over nginx's real headers.
 */


#ifndef _NGX_CORE_H_INCLUDED_
#define _NGX_CORE_H_INCLUDED_


#include <ngx_config.h>


#define ngx_memcmp  memcmp


#include <ngx_queue.h>


#endif /* _NGX_CORE_H_INCLUDED_ */
