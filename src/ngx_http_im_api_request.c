/*
 * ngx_http_im_api_request.c: an admin API request's arguments and its
 * answer.
 *
 * Owns reading what a request gives (the body whole, a JSON object of the
 * fields an endpoint allows, query arguments, uid lists, uids and gids,
 * MsgIds as text or hex) and the answers (a JSON body, an error with its
 * status, the answer of a request that waited for Redis), for every
 * endpoint of ngx_http_im_api_module.c, ngx_http_im_api_presence.c,
 * ngx_http_im_api_inbox.c and ngx_http_im_api_publish.c.
 */

#include "ngx_http_im_api.h"
#include "ngx_im_uids.h"


/* the request's body, whole, or an empty string */

ngx_int_t
ngx_http_im_api_read_body(ngx_http_request_t *r, ngx_str_t *body)
{
    u_char                    *p;
    size_t                     len;
    ssize_t                    n;
    ngx_buf_t                 *b;
    ngx_chain_t               *cl;
    ngx_http_request_body_t   *rb;

    ngx_str_null(body);

    rb = r->request_body;

    if (rb == NULL) {
        return NGX_OK;
    }

    if (rb->temp_file) {
        len = (size_t) rb->temp_file->file.offset;

        body->data = ngx_pnalloc(r->pool, len);
        if (body->data == NULL) {
            return NGX_ERROR;
        }

        n = ngx_read_file(&rb->temp_file->file, body->data, len, 0);
        if (n != (ssize_t) len) {
            return NGX_ERROR;
        }

        body->len = len;
        return NGX_OK;
    }

    len = 0;

    for (cl = rb->bufs; cl; cl = cl->next) {
        len += ngx_buf_size(cl->buf);
    }

    if (len == 0) {
        return NGX_OK;
    }

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    body->data = p;
    body->len = len;

    for (cl = rb->bufs; cl; cl = cl->next) {
        b = cl->buf;
        p = ngx_cpymem(p, b->pos, b->last - b->pos);
    }

    return NGX_OK;
}


/* the body as a JSON object of the fields allowed (NULL-terminated);
 * NULL with *err set: the reason to answer 400 with */

cJSON *
ngx_http_im_api_json(ngx_http_request_t *r, ngx_str_t *body,
    const char **allowed, u_char *err, size_t size)
{
    cJSON        *json, *f;
    const char  **a, *where;

    if (body->len == 0) {
        ngx_snprintf(err, size, "a JSON object is expected in the body%Z");
        return NULL;
    }

    json = cJSON_ParseWithLengthOpts((const char *) body->data, body->len,
                                     &where, 0);
    if (json == NULL) {
        where = cJSON_GetErrorPtr();
        ngx_snprintf(err, size, "malformed JSON at byte %uz%Z",
                     where ? (size_t) (where - (const char *) body->data)
                           : (size_t) 0);
        return NULL;
    }

    if (!cJSON_IsObject(json)) {
        cJSON_Delete(json);
        ngx_snprintf(err, size, "a JSON object is expected in the body%Z");
        return NULL;
    }

    for (f = json->child; f; f = f->next) {
        for (a = allowed; *a; a++) {
            if (ngx_strcmp(f->string, *a) == 0) {
                break;
            }
        }

        if (*a == NULL) {
            ngx_snprintf(err, size, "unknown field \"%s\"%Z", f->string);
            cJSON_Delete(json);
            return NULL;
        }
    }

    return json;
}


/* a uid or gid: a whole number from 1 to 4294967295 */

ngx_int_t
ngx_http_im_api_json_u32(cJSON *json, const char *name, ngx_uint_t zero,
    uint32_t *v, u_char *err, size_t size)
{
    double  d;
    cJSON  *f;

    f = cJSON_GetObjectItemCaseSensitive(json, name);

    if (f == NULL) {
        return NGX_DECLINED;
    }

    if (!cJSON_IsNumber(f)) {
        ngx_snprintf(err, size, "\"%s\" must be a number%Z", name);
        return NGX_ERROR;
    }

    d = f->valuedouble;

    if (d != (double) (uint32_t) d || (d == 0 && !zero)) {
        ngx_snprintf(err, size, "\"%s\" must be a whole number from %d "
                     "to 4294967295%Z", name, zero ? 0 : 1);
        return NGX_ERROR;
    }

    *v = (uint32_t) d;

    return NGX_OK;
}


/* "1001,1002": sorted, each once; 0 is no uid */

ngx_int_t
ngx_http_im_api_uid_list(ngx_http_im_api_ctx_t *ctx, ngx_str_t *v,
    u_char *err, size_t size)
{
    u_char     *p, *last, *comma;
    ngx_int_t   n;

    ctx->uids = ngx_palloc(ctx->request->pool,
                           NGX_HTTP_IM_API_MAX_UIDS * sizeof(uint32_t));
    if (ctx->uids == NULL) {
        return NGX_ERROR;
    }

    p = v->data;
    last = p + v->len;

    while (p < last) {
        comma = ngx_strlchr(p, last, ',');
        if (comma == NULL) {
            comma = last;
        }

        n = ngx_atoi(p, comma - p);

        if (n <= 0 || n > (ngx_int_t) 0xffffffff) {
            ngx_snprintf(err, size, "\"%*s\" is not a uid (1 to "
                         "4294967295)%Z", (size_t) (comma - p), p);
            return NGX_DECLINED;
        }

        if (ctx->nuids == NGX_HTTP_IM_API_MAX_UIDS) {
            ngx_snprintf(err, size, "more than %d uids%Z",
                         NGX_HTTP_IM_API_MAX_UIDS);
            return NGX_DECLINED;
        }

        ctx->uids[ctx->nuids++] = (uint32_t) n;
        p = comma + 1;
    }

    if (ctx->nuids == 0) {
        ngx_snprintf(err, size, "no uid given%Z");
        return NGX_DECLINED;
    }

    ctx->nuids = ngx_im_uids_unique(ctx->uids, ctx->nuids);

    return NGX_OK;
}


/*
 * The query argument "uid": a list (one: a single uid) into ctx->uids;
 * "missing" says what to send when it is absent.  NGX_ERROR: the
 * request's answer is in *answer (a 400 saying why).
 */

ngx_int_t
ngx_http_im_api_uid_arg(ngx_http_im_api_ctx_t *ctx, ngx_uint_t one,
    const char *missing, ngx_int_t *answer)
{
    u_char               err[256];
    ngx_int_t            rc;
    ngx_str_t            v;
    ngx_http_request_t  *r;

    r = ctx->request;

    rc = ngx_http_im_api_arg(r, "uid", &v);

    if (rc == NGX_ERROR) {
        *answer = NGX_HTTP_INTERNAL_SERVER_ERROR;
        return NGX_ERROR;
    }

    if (rc == NGX_DECLINED) {
        ngx_snprintf(err, sizeof(err), "%s%Z", missing);
        goto bad;
    }

    rc = ngx_http_im_api_uid_list(ctx, &v, err, sizeof(err));

    if (rc == NGX_ERROR) {
        *answer = NGX_HTTP_INTERNAL_SERVER_ERROR;
        return NGX_ERROR;
    }

    if (rc == NGX_DECLINED) {
        goto bad;
    }

    if (one && ctx->nuids != 1) {
        ngx_snprintf(err, sizeof(err), "one uid at a time%Z");
        goto bad;
    }

    return NGX_OK;

bad:

    *answer = ngx_http_im_api_error(r, NGX_HTTP_BAD_REQUEST, "%s", err);
    return NGX_ERROR;
}


/* a query argument, unescaped; NGX_DECLINED: absent */

ngx_int_t
ngx_http_im_api_arg(ngx_http_request_t *r, char *name, ngx_str_t *v)
{
    u_char     *dst, *src;
    ngx_str_t   raw;

    if (ngx_http_arg(r, (u_char *) name, ngx_strlen(name), &raw) != NGX_OK) {
        return NGX_DECLINED;
    }

    v->data = ngx_pnalloc(r->pool, raw.len);
    if (v->data == NULL) {
        return NGX_ERROR;
    }

    src = raw.data;
    dst = v->data;
    ngx_unescape_uri(&dst, &src, raw.len, 0);
    v->len = dst - v->data;

    return NGX_OK;
}


/* a MsgId: 32 bytes of text, or 64 hex digits for any 32 bytes */

ngx_int_t
ngx_http_im_api_msgid(ngx_str_t *v, u_char *msgid)
{
    ngx_int_t   hi, lo;
    ngx_uint_t  i;

    if (v->len == IM_MSGID_LEN) {
        ngx_memcpy(msgid, v->data, IM_MSGID_LEN);
        return NGX_OK;
    }

    if (v->len != 2 * IM_MSGID_LEN) {
        return NGX_ERROR;
    }

    for (i = 0; i < IM_MSGID_LEN; i++) {
        hi = ngx_hextoi(&v->data[2 * i], 1);
        lo = ngx_hextoi(&v->data[2 * i + 1], 1);

        if (hi == NGX_ERROR || lo == NGX_ERROR) {
            return NGX_ERROR;
        }

        msgid[i] = (u_char) (hi * 16 + lo);
    }

    return NGX_OK;
}


/* a MsgId in an answer: as text when it is printable, else in hex */

void
ngx_http_im_api_add_msgid(cJSON *obj, const u_char *msgid)
{
    char        text[2 * IM_MSGID_LEN + 1];
    ngx_uint_t  i, printable;

    printable = 1;

    for (i = 0; i < IM_MSGID_LEN; i++) {
        if (msgid[i] < 0x20 || msgid[i] > 0x7e || msgid[i] == '"'
            || msgid[i] == '\\')
        {
            printable = 0;
            break;
        }
    }

    if (printable) {
        ngx_memcpy(text, msgid, IM_MSGID_LEN);
        text[IM_MSGID_LEN] = '\0';
        cJSON_AddStringToObject(obj, "msgid", text);
        return;
    }

    *ngx_hex_dump((u_char *) text, (u_char *) msgid, IM_MSGID_LEN) = '\0';
    cJSON_AddStringToObject(obj, "msgid_hex", text);
}


/* the answer to a request that waited: once, from the last callback */

void
ngx_http_im_api_finish(ngx_http_im_api_ctx_t *ctx, ngx_uint_t status)
{
    ngx_int_t            rc;
    ngx_http_request_t  *r;

    r = ctx->request;

    if (status >= NGX_HTTP_BAD_REQUEST) {
        rc = ngx_http_im_api_error(r, status,
                                   status == NGX_HTTP_SERVICE_UNAVAILABLE
                                   ? "Redis did not answer" : "failed");

    } else {
        rc = ngx_http_im_api_send(r, status, ctx->out);
    }

    ngx_http_finalize_request(r, rc);
}


/* answers */

ngx_int_t
ngx_http_im_api_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *fmt, ...)
{
    u_char      reason[512], *p;
    cJSON      *json;
    va_list     args;
    ngx_int_t   rc;
    const char *name;

    /* every answer with an error status is counted, here and only here */
    ngx_im_stats->api_errors++;

    va_start(args, fmt);
    p = ngx_vslprintf(reason, reason + sizeof(reason) - 1, fmt, args);
    va_end(args);
    *p = '\0';

    switch (status) {
    case NGX_HTTP_BAD_REQUEST:
        name = "bad_request";
        break;
    case NGX_HTTP_NOT_FOUND:
        name = "not_found";
        break;
    case NGX_HTTP_NOT_ALLOWED:
        name = "method_not_allowed";
        break;
    case NGX_HTTP_CONFLICT:
        name = "refused";
        break;
    case NGX_HTTP_NOT_IMPLEMENTED:
        name = "not_implemented";
        break;
    case NGX_HTTP_SERVICE_UNAVAILABLE:
        name = "unavailable";
        break;
    default:
        name = "internal_error";
        break;
    }

    if (ngx_http_discard_request_body(r) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    json = cJSON_CreateObject();
    if (json == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cJSON_AddStringToObject(json, "error", name);
    cJSON_AddStringToObject(json, "reason", (char *) reason);

    rc = ngx_http_im_api_send(r, status, json);

    cJSON_Delete(json);

    return rc;
}


ngx_int_t
ngx_http_im_api_send(ngx_http_request_t *r, ngx_uint_t status, cJSON *json)
{
    char         *text;
    size_t        len;
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    text = json ? cJSON_PrintUnformatted(json) : NULL;
    if (text == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    len = ngx_strlen(text);

    b = ngx_create_temp_buf(r->pool, len + 1);
    if (b == NULL) {
        cJSON_free(text);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->last = ngx_cpymem(b->last, text, len);
    *b->last++ = '\n';
    cJSON_free(text);

    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    r->headers_out.status = status;
    r->headers_out.content_length_n = b->last - b->pos;
    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}
