/*
 * ngx_http_im_locate.c: which location would serve a URI, asked at
 * configuration time.
 *
 * nginx's own lookup (ngx_http_core_find_location) is static to the core
 * module and wants a request; this one walks the same trees with the same
 * rules, so that "nginx -t" can tell an im_auth that names no location.
 */

#include "ngx_http_im_locate.h"


static ngx_http_core_loc_conf_t *ngx_http_im_locate_in(
    ngx_http_core_loc_conf_t *clcf, u_char *uri, size_t len,
    ngx_str_t *whole);


ngx_http_core_loc_conf_t *
ngx_http_im_locate(ngx_http_core_srv_conf_t *cscf, ngx_str_t *uri)
{
    size_t                     len;
    ngx_str_t                  path;
    ngx_http_core_loc_conf_t  *clcf;

    clcf = cscf->ctx->loc_conf[ngx_http_core_module.ctx_index];

    for (len = 0; len < uri->len && uri->data[len] != '?'; len++) {
        /* void */
    }

    path.data = uri->data;
    path.len = len;

    return ngx_http_im_locate_in(clcf, path.data, path.len, &path);
}


/*
 * One level: the static tree of clcf's locations (exact, then the longest
 * prefix, into its nested locations), then clcf's regular expressions
 * unless the prefix found says "^~" or an exact one matched.
 */

static ngx_http_core_loc_conf_t *
ngx_http_im_locate_in(ngx_http_core_loc_conf_t *clcf, u_char *uri,
    size_t len, ngx_str_t *whole)
{
    size_t                          n;
    ngx_int_t                       rc;
    ngx_http_core_loc_conf_t       *found, *nested;
    ngx_http_location_tree_node_t  *node;
#if (NGX_PCRE)
    ngx_http_core_loc_conf_t      **re;
#endif

    found = NULL;
    node = clcf->static_locations;

    while (node) {
        n = (len <= (size_t) node->len) ? len : node->len;

        rc = ngx_filename_cmp(uri, node->name, n);

        if (rc != 0) {
            node = (rc < 0) ? node->left : node->right;
            continue;
        }

        if (len > (size_t) node->len) {

            if (node->inclusive) {
                found = node->inclusive;
                uri += n;
                len -= n;
                node = node->tree;
                continue;
            }

            /* an exact location only */
            node = node->right;
            continue;
        }

        if (len == (size_t) node->len) {
            if (node->exact) {
                return node->exact;
            }

            found = node->inclusive;
            break;
        }

        /* len < node->len */
        node = node->left;
    }

    if (found && (found->static_locations || found->regex_locations)) {
        /* nested locations are matched against the whole URI */
        nested = ngx_http_im_locate_in(found, whole->data, whole->len,
                                       whole);
        if (nested) {
            return nested;
        }
    }

#if (NGX_PCRE)

    if ((found == NULL || !found->noregex) && clcf->regex_locations) {
        for (re = clcf->regex_locations; *re; re++) {
            if (ngx_regex_exec((*re)->regex->regex, whole, NULL, 0) >= 0) {
                return *re;
            }
        }
    }

#endif

    return found;
}
