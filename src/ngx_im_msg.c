/*
 * ngx_im_msg.c: the message object and its stored form.
 *
 * A message is built once, reference counted, and held as the exact
 * bytes Redis keeps (ngx_im_store.h gives the versions of the form): the
 * entry's header, then the push every recipient gets.  Made here from a
 * client's message or read back from an inbox entry; what Redis does
 * with it is ngx_im_store.c's.
 */

#include "ngx_im_store.h"


ngx_im_msg_t *
ngx_im_msg_alloc(size_t hdr, size_t push_len)
{
    ngx_im_msg_t  *msg;

    msg = ngx_alloc(sizeof(ngx_im_msg_t) + hdr + push_len, ngx_cycle->log);
    if (msg == NULL) {
        return NULL;
    }

    msg->refs = 1;
    msg->push = msg->entry + hdr;
    msg->push_len = push_len;
    msg->entry_len = hdr + push_len;
    msg->msgid = NULL;
    msg->expire = 0;
    msg->from = 0;
    msg->accepted = 0;
    msg->watch = NULL;
    msg->seq = 0;
    msg->origin = 0;
    msg->owe = NULL;

    return msg;
}


void
ngx_im_msg_watch(ngx_im_msg_t *msg, ngx_str_t *watch, uint64_t token)
{
    msg->watch = msg->entry + NGX_IM_ENTRY_HDR_V2 + 1;
    msg->watch_len = watch->len;
    msg->watch_token = token;
    ngx_memcpy(msg->watch, watch->data, watch->len);
}


/* the header of a new message's entry: version 2 only for receipts and
 * events, which need the sender and the time of acceptance */

size_t
ngx_im_msg_hdr(void)
{
    ngx_im_conf_t  *imcf;

    imcf = ngx_im_get_conf();

    return (imcf->receipts || imcf->events) ? NGX_IM_ENTRY_HDR_V2
                                            : NGX_IM_ENTRY_HDR;
}


/* after the push is written (and from and accepted set, for version 2):
 * the header of the entry and the MsgId */

void
ngx_im_msg_finish(ngx_im_msg_t *msg, time_t expire)
{
    u_char  *p;

    msg->expire = expire;

    if (msg->push - msg->entry >= NGX_IM_ENTRY_HDR_V2) {
        msg->entry[0] = msg->watch ? 3 : 2;
        p = im_put_u32(msg->entry + 1, (uint32_t) expire);
        p = im_put_u32(p, msg->from);
        p = im_put_u32(p, (uint32_t) (msg->accepted >> 32));
        p = im_put_u32(p, (uint32_t) msg->accepted);

        if (msg->watch) {
            /* the watch's bytes are in place already */
            *p = (u_char) msg->watch_len;
            p = im_put_u32(msg->watch + msg->watch_len,
                           (uint32_t) (msg->watch_token >> 32));
            (void) im_put_u32(p, (uint32_t) msg->watch_token);
        }

    } else {
        msg->entry[0] = 1;
        (void) im_put_u32(msg->entry + 1, (uint32_t) expire);
    }

    switch (msg->push[0]) {

    case IM_CMD_PUBLISH:
        msg->msgid = msg->push + 1;
        break;

    default:  /* 5 and 11: <<Cmd, Gid:32, MsgId, ...>> */
        msg->msgid = msg->push + 5;
        break;
    }
}


ngx_im_msg_t *
ngx_im_msg_from_entry(u_char *entry, size_t len)
{
    size_t         hdr;
    im_msg_t       m;
    ngx_im_msg_t  *msg;

    if (len == 0) {
        return NULL;
    }

    switch (entry[0]) {
    case 1:
        hdr = NGX_IM_ENTRY_HDR;
        break;
    case 2:
        hdr = NGX_IM_ENTRY_HDR_V2;
        break;
    case 3:
        if (len < NGX_IM_ENTRY_HDR_V2 + 1) {
            return NULL;
        }

        hdr = NGX_IM_ENTRY_HDR_V3(entry[NGX_IM_ENTRY_HDR_V2]);
        break;
    default:
        return NULL;
    }

    if (len < hdr + 1) {
        return NULL;
    }

    /* a push that does not parse is never sent to a client */

    if (im_parse_server(entry + hdr, len - hdr, &m) != IM_OK) {
        return NULL;
    }

    if (m.cmd != IM_CMD_PUBLISH && m.cmd != IM_CMD_GROUP_PUBLISH
        && m.cmd != IM_CMD_GROUP_PART_PUBLISH)
    {
        return NULL;
    }

    msg = ngx_im_msg_alloc(hdr, len - hdr);
    if (msg == NULL) {
        return NULL;
    }

    ngx_memcpy(msg->entry, entry, len);

    if (hdr >= NGX_IM_ENTRY_HDR_V2) {
        msg->from = im_get_u32(entry + 5);
        msg->accepted = ((uint64_t) im_get_u32(entry + 9) << 32)
                        | im_get_u32(entry + 13);
    }

    if (entry[0] == 3) {
        msg->watch = msg->entry + NGX_IM_ENTRY_HDR_V2 + 1;
        msg->watch_len = entry[NGX_IM_ENTRY_HDR_V2];
        msg->watch_token = ((uint64_t) im_get_u32(msg->watch
                                                  + msg->watch_len) << 32)
                           | im_get_u32(msg->watch + msg->watch_len + 4);
    }

    ngx_im_msg_finish(msg, (time_t) im_get_u32(entry + 1));

    return msg;
}
