
/*
 * shim/ngx_config.h: the little of nginx's ngx_config.h that the pure
 * cores built on ngx_queue.h need, for the unit tests (no nginx build).
 *
 * Guarded: nginx's ngx_queue.h includes ngx_config.h and ngx_core.h
 * before its own guard, so they are read again from inside ngx_core.h.
 */


#ifndef _NGX_CONFIG_H_INCLUDED_
#define _NGX_CONFIG_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>
#include <string.h>


typedef unsigned char  u_char;
typedef intptr_t       ngx_int_t;
typedef uintptr_t      ngx_uint_t;


#endif /* _NGX_CONFIG_H_INCLUDED_ */
