
/*
 * ngx_im_payload.h: the sender check of a client's payload
 * (docs/PROTOCOL.md 3.7, im_check_sender).
 *
 * Owns the one rule the server applies to the apps' payload convention
 * (docs/PROTOCOL.md 1): the payload of a client's PUBLISH, GROUP_PUBLISH
 * or GROUP_PART_PUBLISH is one JSON object whose "from" is the sender's
 * uid and whose "to" and "gid", where present, name what the header
 * names.  libc and cJSON, nothing of nginx, so that the unit tests and
 * the fuzz target run exactly the code the module runs.
 */


#ifndef _NGX_IM_PAYLOAD_H_INCLUDED_
#define _NGX_IM_PAYLOAD_H_INCLUDED_


#include <stdint.h>
#include <stddef.h>


typedef enum {
    IM_PAYLOAD_OK = 0,
    IM_PAYLOAD_NOT_OBJECT,   /* not one JSON object, or bytes after it */
    IM_PAYLOAD_NUL,          /* a NUL character, raw or \u0000 */
    IM_PAYLOAD_TWICE,        /* "from", "to" or "gid" given twice */
    IM_PAYLOAD_NO_FROM,      /* no "from" */
    IM_PAYLOAD_FROM,         /* "from" is not the sender's uid */
    IM_PAYLOAD_TO,           /* "to" is not the header's ToUid or Gid */
    IM_PAYLOAD_GID           /* "gid" is not the header's Gid, or the
                                header names no group */
} im_payload_rc_t;


/*
 * Check the payload p (len bytes) of a client's message cmd (3, 5 or 11)
 * whose header names to (ToUid or Gid), sent by uid sender.  A uid or
 * gid in the payload is a JSON number of integer value or a string of
 * decimal digits in its shortest form.
 */
im_payload_rc_t im_payload_check(const uint8_t *p, size_t len,
    uint32_t sender, uint8_t cmd, uint32_t to);

/* "not a JSON object", ...: static strings for logs */
const char *im_payload_rc_str(im_payload_rc_t rc);


#endif /* _NGX_IM_PAYLOAD_H_INCLUDED_ */
