/*
 * ngx_http_im_locate.h: which location would serve a URI, asked at
 * configuration time (nginx -t), before any request exists.
 */

#ifndef _NGX_HTTP_IM_LOCATE_H_INCLUDED_
#define _NGX_HTTP_IM_LOCATE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


/*
 * The location of server cscf that a subrequest to uri (arguments
 * ignored) would run in, found as nginx's find_config phase finds it:
 * exact and prefix locations, nested ones, then regular expressions.  NULL
 * when none would.  The location trees must be built: call it from a
 * postconfiguration handler.
 */
ngx_http_core_loc_conf_t *ngx_http_im_locate(ngx_http_core_srv_conf_t *cscf,
    ngx_str_t *uri);


#endif /* _NGX_HTTP_IM_LOCATE_H_INCLUDED_ */
