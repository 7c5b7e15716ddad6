
/*
 * ngx_im_payload.c: the sender check of a client's payload.
 *
 * Owns the reading of "from", "to" and "gid" in a payload (docs/PROTOCOL.md
 * 3.7).  The payload is parsed with cJSON; where cJSON and the recipients'
 * parsers could read one text two ways (a NUL inside a string, a member
 * given twice: cJSON takes the first, JavaScript the last), the payload is
 * refused rather than guessed at.  libc and cJSON only.
 */


#include <string.h>

#include <cjson/cJSON.h>

#include "ngx_im_proto.h"
#include "ngx_im_payload.h"


static int im_payload_nul(const uint8_t *p, size_t len);
static int im_payload_id(const cJSON *v, uint32_t *id);


im_payload_rc_t
im_payload_check(const uint8_t *p, size_t len, uint32_t sender, uint8_t cmd,
    uint32_t to)
{
    uint32_t          id;
    const char       *end, *last;
    const cJSON      *item, *from, *uto, *gid;
    cJSON            *root;
    im_payload_rc_t   rc;

    /* cJSON's strings end at a NUL: "1001\u0000x" would read as "1001" */

    if (im_payload_nul(p, len)) {
        return IM_PAYLOAD_NUL;
    }

    end = NULL;
    root = cJSON_ParseWithLengthOpts((const char *) p, len, &end, 0);

    if (root == NULL) {
        return IM_PAYLOAD_NOT_OBJECT;
    }

    /* one value, then only white space */

    last = (const char *) p + len;

    while (end < last
           && (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r'))
    {
        end++;
    }

    if (end != last || !cJSON_IsObject(root)) {
        rc = IM_PAYLOAD_NOT_OBJECT;
        goto done;
    }

    from = NULL;
    uto = NULL;
    gid = NULL;
    rc = IM_PAYLOAD_OK;

    cJSON_ArrayForEach(item, root) {

        /* member names compare exactly: recipients read "from", not
         * "From" (cJSON_GetObjectItem() would not tell them apart) */

        if (strcmp(item->string, "from") == 0) {
            rc = from ? IM_PAYLOAD_TWICE : rc;
            from = item;

        } else if (strcmp(item->string, "to") == 0) {
            rc = uto ? IM_PAYLOAD_TWICE : rc;
            uto = item;

        } else if (strcmp(item->string, "gid") == 0) {
            rc = gid ? IM_PAYLOAD_TWICE : rc;
            gid = item;
        }
    }

    if (rc != IM_PAYLOAD_OK) {
        goto done;
    }

    if (from == NULL) {
        rc = IM_PAYLOAD_NO_FROM;
        goto done;
    }

    if (!im_payload_id(from, &id) || id != sender) {
        rc = IM_PAYLOAD_FROM;
        goto done;
    }

    if (uto && (!im_payload_id(uto, &id) || id != to)) {
        rc = IM_PAYLOAD_TO;
        goto done;
    }

    /* a 1:1 message names no group */

    if (gid && (cmd == IM_CMD_PUBLISH || !im_payload_id(gid, &id)
                || id != to))
    {
        rc = IM_PAYLOAD_GID;
    }

done:

    cJSON_Delete(root);

    return rc;
}


const char *
im_payload_rc_str(im_payload_rc_t rc)
{
    switch (rc) {
    case IM_PAYLOAD_OK:
        return "ok";
    case IM_PAYLOAD_NOT_OBJECT:
        return "not a JSON object";
    case IM_PAYLOAD_NUL:
        return "a NUL character";
    case IM_PAYLOAD_TWICE:
        return "\"from\", \"to\" or \"gid\" given twice";
    case IM_PAYLOAD_NO_FROM:
        return "no \"from\"";
    case IM_PAYLOAD_FROM:
        return "\"from\" is not the sender";
    case IM_PAYLOAD_TO:
        return "\"to\" disagrees with the header";
    case IM_PAYLOAD_GID:
        return "\"gid\" disagrees with the header";
    }

    return "unknown";
}


/*
 * A raw NUL byte, or the escape \u0000 (its backslash not itself
 * escaped).  Outside strings a backslash is a JSON error anyway.
 */

static int
im_payload_nul(const uint8_t *p, size_t len)
{
    size_t  i;

    for (i = 0; i < len; i++) {

        if (p[i] == '\0') {
            return 1;
        }

        if (p[i] != '\\' || i + 1 == len) {
            continue;
        }

        if (p[i + 1] == 'u' && len - i >= 6
            && memcmp(p + i + 2, "0000", 4) == 0)
        {
            return 1;
        }

        /* the escaped character is not the start of an escape */
        i++;
    }

    return 0;
}


/*
 * A uid or gid: a JSON number of integer value from 0 to 2^32 - 1
 * (1001, 1001.0 and 1.001e3 are one number), or a string of decimal
 * digits in its shortest form: "1001", not "01001", "+1001", " 1001".
 */

static int
im_payload_id(const cJSON *v, uint32_t *id)
{
    double       d;
    uint64_t     n;
    const char  *s;

    if (cJSON_IsNumber(v)) {
        d = v->valuedouble;

        if (!(d >= 0 && d <= 4294967295.0) || d != (double) (uint32_t) d) {
            return 0;
        }

        *id = (uint32_t) d;
        return 1;
    }

    if (!cJSON_IsString(v)) {
        return 0;
    }

    s = v->valuestring;

    if (s[0] == '\0' || (s[0] == '0' && s[1] != '\0')) {
        return 0;
    }

    for (n = 0; *s; s++) {
        if (*s < '0' || *s > '9') {
            return 0;
        }

        n = n * 10 + (uint64_t) (*s - '0');

        if (n > 0xffffffff) {
            return 0;
        }
    }

    *id = (uint32_t) n;

    return 1;
}
