
/*
 * fuzz_payload.c: libFuzzer target of the sender check
 * (src/ngx_im_payload.c).
 *
 * The input is <<Cmd:8, Sender:32, To:32, Payload>>; the payload is
 * checked from an exact-size copy (so ASan sees any read past the end,
 * and cJSON is held to the length it is given).  Properties:
 *   - the result is a known im_payload_rc_t and has a reason string;
 *   - the check is a function of its input: twice the same result;
 *   - a payload that passes for one sender is refused, as "from" not the
 *     sender, for any other sender.
 */


#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ngx_im_proto.h"
#include "ngx_im_payload.h"

#define FUZZ_TARGET  "fuzz_payload"
#include "fuzz_util.h"


static const uint8_t  cmds[4] = {
    IM_CMD_PUBLISH, IM_CMD_GROUP_PUBLISH, IM_CMD_GROUP_PART_PUBLISH,
    IM_CMD_PUBLISH
};


static void
check(const uint8_t *in, size_t len)
{
    uint8_t           cmd;
    uint32_t          sender, to;
    const uint8_t    *p;
    im_payload_rc_t   rc;

    if (len < 9) {
        return;
    }

    cmd = cmds[in[0] & 3];
    sender = im_get_u32(in + 1);
    to = im_get_u32(in + 5);
    p = in + 9;
    len -= 9;

    rc = im_payload_check(p, len, sender, cmd, to);

    CHECK(rc >= IM_PAYLOAD_OK && rc <= IM_PAYLOAD_GID);
    CHECK(im_payload_rc_str(rc) != NULL);
    CHECK(im_payload_check(p, len, sender, cmd, to) == rc);

    if (rc == IM_PAYLOAD_OK) {
        CHECK(len >= 2);
        CHECK(im_payload_check(p, len, sender + 1, cmd, to)
              == IM_PAYLOAD_FROM);
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_exact(data, size, check);
}
