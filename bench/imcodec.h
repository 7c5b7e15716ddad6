/* imgen's only contact with the project's codec (src/ngx_im_proto.h,
 * src/ngx_im_wsframe.h): thin wrappers, so an API change is fixed here. */
#ifndef IMGEN_IMCODEC_H
#define IMGEN_IMCODEC_H
#include <stddef.h>
#include <stdint.h>
#include "ngx_im_proto.h"
#include "ngx_im_wsframe.h"

#define IMC_WS_AGAIN IM_WS_AGAIN
#define IMC_WS_MESSAGE IM_WS_MESSAGE
#define IMC_WS_PING IM_WS_PING
#define IMC_WS_PONG IM_WS_PONG
#define IMC_WS_CLOSE IM_WS_CLOSE

#define IMC_WS_MAX (1u << 20)

typedef im_ws_event_t imc_ws_event_t;

static inline size_t imc_connect(uint8_t *out, const char *u, size_t ul, const char *p, size_t pl)
{
    return im_build_connect(out, (const uint8_t *) u, ul, (const uint8_t *) p, pl, -1, -1);
}

static inline size_t imc_publish(uint8_t *out, uint32_t to, const uint8_t *id,
                                 const uint8_t *pl, size_t len)
{
    return im_build_publish(out, to, id, pl, len);
}

static inline size_t imc_group(uint8_t *out, uint32_t gid, const uint8_t *id,
                               const uint8_t *pl, size_t len)
{
    return im_build_group(out, gid, id, pl, len);
}

static inline size_t imc_ack(uint8_t *out, int cmd, const uint8_t *id)
{
    return im_build_ack(out, cmd, id);
}

static inline size_t imc_simple(uint8_t *out, int cmd) { return im_build_simple(out, cmd); }

static inline int imc_parse(const uint8_t *p, size_t n, im_msg_t *m)
{
    return im_parse_server(p, n, m) == IM_OK ? 0 : -1;
}

static inline void imc_ws_init(im_ws_parser_t *p) { im_ws_parser_init(p, 0, IMC_WS_MAX); }

static inline void imc_ws_free(im_ws_parser_t *p) { im_ws_parser_free(p); }

static inline int imc_ws_parse(im_ws_parser_t *p, uint8_t *in, size_t len, size_t *used,
                               imc_ws_event_t *ev)
{
    return im_ws_parse(p, in, len, used, ev);
}

static inline void b64(char *out, const uint8_t *in, size_t n)
{
    static const char t[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t i;
    for (i = 0; i + 2 < n; i += 3) {
        *out++ = t[in[i] >> 2];
        *out++ = t[((in[i] & 3) << 4) | (in[i + 1] >> 4)];
        *out++ = t[((in[i + 1] & 15) << 2) | (in[i + 2] >> 6)];
        *out++ = t[in[i + 2] & 63];
    }
    if (n - i == 1) {
        *out++ = t[in[i] >> 2];
        *out++ = t[(in[i] & 3) << 4];
        *out++ = '=';
        *out++ = '=';
    } else if (n - i == 2) {
        *out++ = t[in[i] >> 2];
        *out++ = t[((in[i] & 3) << 4) | (in[i + 1] >> 4)];
        *out++ = t[(in[i + 1] & 15) << 2];
        *out++ = '=';
    }
    *out = 0;
}
#endif
