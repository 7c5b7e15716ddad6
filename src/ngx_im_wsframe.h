
/*
 * ngx_im_wsframe.h: incremental RFC 6455 frame layer, server and client
 * side, and a strict UTF-8 validator.
 *
 * Owns WebSocket framing only: frame headers, masking, fragmentation
 * and reassembly, control frames and the checks RFC 6455 puts on them.
 * The opening handshake and what a message means belong to the module.
 * Pure C on libc only, no nginx headers.
 */


#ifndef _NGX_IM_WSFRAME_H_INCLUDED_
#define _NGX_IM_WSFRAME_H_INCLUDED_


#include <stdint.h>
#include <stddef.h>


enum {
    IM_WS_OP_CONT = 0,
    IM_WS_OP_TEXT = 1,
    IM_WS_OP_BINARY = 2,
    IM_WS_OP_CLOSE = 8,
    IM_WS_OP_PING = 9,
    IM_WS_OP_PONG = 10
};


/* close status codes (RFC 6455 7.4.1) the parser and its callers use */
#define IM_WS_CLOSE_NORMAL         1000
#define IM_WS_CLOSE_GOING_AWAY     1001
#define IM_WS_CLOSE_PROTOCOL       1002
#define IM_WS_CLOSE_UNSUPPORTED    1003
#define IM_WS_CLOSE_NO_STATUS      1005
#define IM_WS_CLOSE_BAD_DATA       1007
#define IM_WS_CLOSE_POLICY         1008
#define IM_WS_CLOSE_TOO_BIG        1009
#define IM_WS_CLOSE_INTERNAL       1011

/* the largest control frame payload (RFC 6455 5.5) */
#define IM_WS_MAX_CONTROL          125

/* the largest frame header: 2 + 8 (length) + 4 (mask) */
#define IM_WS_MAX_HEADER           14


typedef enum {
    IM_WS_AGAIN = 0,   /* all input consumed, need more */
    IM_WS_MESSAGE,     /* complete data message: ev->opcode TEXT/BINARY,
                          ev->data, ev->len */
    IM_WS_PING,        /* ev->data/len = control payload */
    IM_WS_PONG,        /* ev->data/len = control payload */
    IM_WS_CLOSE,       /* ev->code (1005 if no code), ev->data/len =
                          reason */
    IM_WS_ERROR        /* protocol error: ev->code is the close code to
                          send (1002 protocol, 1009 too big, 1007 bad
                          UTF-8 in close reason, 1011 out of memory) */
} im_ws_rc_t;


typedef struct {
    int        opcode;
    uint8_t   *data;
    size_t     len;
    uint16_t   code;
} im_ws_event_t;


typedef struct {
    uint32_t   max_message;  /* cap on a reassembled data message (and
                                a single data frame); a cap past 4 GB is
                                taken as 4 GB - 1 */
    unsigned   server:1;     /* 1: client frames must be masked (else
                                1002); 0: must not be */

    /* private state: use the functions below only; packed, lengths in
     * 32 bits: a parser is kept per connection that has a frame part
     * read, and every length is bounded by max_message or by 125 before
     * it is stored */

    unsigned   fin:1;
    unsigned   masked:1;
    unsigned   release:1;    /* buf was handed out: empty it next call */
    unsigned   ctl_release:1; /* ctl was handed out: free it next call */
    uint8_t    state;        /* header, payload, failed */
    uint8_t    hdr_have;     /* header bytes collected so far */
    uint8_t    hdr_need;     /* header length, known after 2 bytes */
    uint8_t    mask_pos;     /* offset into the mask of the next byte */
    uint8_t    opcode;       /* opcode of the current frame */
    uint8_t    msg_opcode;   /* TEXT/BINARY of a fragmented message in
                                progress, 0 if none */
    uint8_t    ctl_len;      /* control frame payload collected */
    uint8_t    hdr[IM_WS_MAX_HEADER];
    uint8_t    mask[4];
    uint16_t   error_code;   /* close code once failed */

    uint32_t   buf_len;      /* data message reassembly: bytes in buf */
    uint32_t   buf_size;
    uint32_t   frame_len;    /* payload length of the current frame */
    uint32_t   remaining;    /* payload bytes of the frame still due */

    uint8_t   *buf;

    uint8_t   *ctl;          /* IM_WS_MAX_CONTROL bytes, only while a
                                control frame arrives in pieces */
} im_ws_parser_t;


void im_ws_parser_init(im_ws_parser_t *p, int server, size_t max_message);

/* frees the reassembly buffer; the parser may be init'ed again */
void im_ws_parser_free(im_ws_parser_t *p);

/*
 * 1 when the parser holds nothing between frames: no frame or fragmented
 * message begun, not failed, and what it handed out last no longer
 * needed.  Such a parser, once freed, is as good as a new one from
 * im_ws_parser_init(), so a caller need not keep it.
 */
int im_ws_parser_idle(const im_ws_parser_t *p);

/*
 * Consume up to len bytes of in (MUTABLE: payloads are unmasked in
 * place) and stop at the first event.  *consumed tells how much was
 * eaten.  Call again with the rest.  When a whole unfragmented frame
 * lies in `in`, ev->data points into `in` (zero copy); otherwise into
 * the parser's buffer.  ev->data is valid until the next call, and is
 * never NULL for an event that carries data, even when len is 0.
 * Input may arrive one byte at a time.
 *
 * After IM_WS_ERROR the parser stays failed: every later call returns
 * IM_WS_ERROR with the same code and consumes nothing.
 */
im_ws_rc_t im_ws_parse(im_ws_parser_t *p, uint8_t *in, size_t len,
    size_t *consumed, im_ws_event_t *ev);

/*
 * Frame header for an unmasked server frame; out must hold 10 bytes;
 * returns its length.
 */
size_t im_ws_header(uint8_t *out, int opcode, int fin, uint64_t payload_len);

/*
 * Whole masked client frame (tests, load generator); out must hold
 * len + 14 bytes.
 */
size_t im_ws_build_masked(uint8_t *out, int opcode, int fin,
    const uint8_t *payload, size_t len, const uint8_t mask[4]);

/*
 * Close frame payload: <<Code:16, Reason>>; out must hold 2 + rlen bytes
 * (rlen <= 123 for a valid close frame); returns its length.
 */
size_t im_ws_close_payload(uint8_t *out, uint16_t code,
    const uint8_t *reason, size_t rlen);

/* 1 if the code may appear in a close frame (RFC 6455 7.4) */
int im_ws_close_code_valid(unsigned code);

/* strict: no overlongs, surrogates, > U+10FFFF */
int im_utf8_valid(const uint8_t *p, size_t len);


#endif /* _NGX_IM_WSFRAME_H_INCLUDED_ */
