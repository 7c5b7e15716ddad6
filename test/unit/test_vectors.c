
/*
 * test_vectors.c: the protocol codec (src/ngx_im_proto.c) against the
 * byte-exact examples of docs/vectors.json (schema: docs/PROTOCOL.md 9).
 *
 * Every vector is parsed in each direction it names, from a buffer of
 * its exact size: a valid one must give every field the vector lists and
 * be built again to the same bytes; an invalid one must give its error,
 * its command and, where the vector says, the MsgId that could still be
 * read; a client message the strict parse refuses is read again with
 * its lengths in UTF-16 units, which gives the vector's "utf16" fields
 * or fails.  The Perl harness (t/012-vectors.t) and the JS tests
 * (js/test/vectors.test.js) check their codecs against the same file.
 * The file is read from ../../docs/vectors.json (make -C test/unit), or
 * from $IM_VECTORS.
 */


#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "ngx_im_proto.h"
#include "tap.h"


#define VECTORS_FILE  "../../docs/vectors.json"

/* the longest message of the file, and its TCP framing */
#define VEC_MAX       1024


typedef struct {
    const char  *name;
    im_rc_t      rc;
} vec_error_t;


static const vec_error_t  vec_errors[] = {
    { "empty", IM_ERR_EMPTY },
    { "unknown_cmd", IM_ERR_UNKNOWN_CMD },
    { "truncated", IM_ERR_TRUNCATED },
    { "length", IM_ERR_LENGTH },
    { "trailing", IM_ERR_TRAILING },
    { NULL, IM_OK }
};


/* the names a vector's "fields" may use */
static const char  *vec_field_names[] = {
    "cmd", "user", "pass", "role", "client_id", "code", "to", "gid",
    "msgid", "uids", "payload", "extra", "bad_cmd", "uid", NULL
};


static char *
vec_read_file(const char *path)
{
    long   size;
    char  *buf;
    FILE  *f;

    f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }

    buf = NULL;

    if (fseek(f, 0, SEEK_END) == 0 && (size = ftell(f)) >= 0
        && fseek(f, 0, SEEK_SET) == 0)
    {
        buf = malloc((size_t) size + 1);

        if (buf && fread(buf, 1, (size_t) size, f) == (size_t) size) {
            buf[size] = '\0';

        } else {
            free(buf);
            buf = NULL;
        }
    }

    fclose(f);

    return buf;
}


static int
vec_hex_digit(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }

    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }

    return -1;
}


/* "01 0004 7465..." to bytes: lowercase pairs, spaces between fields */

static int
vec_hex(const char *hex, uint8_t *out, size_t max, size_t *len)
{
    int     hi, lo;
    size_t  n;

    n = 0;

    while (*hex) {
        if (*hex == ' ') {
            hex++;
            continue;
        }

        hi = vec_hex_digit(hex[0]);
        lo = (hi < 0) ? -1 : vec_hex_digit(hex[1]);

        if (lo < 0 || n == max) {
            return 0;
        }

        out[n++] = (uint8_t) (hi << 4 | lo);
        hex += 2;
    }

    *len = n;

    return 1;
}


static int
vec_has(const cJSON *fields, const char *key)
{
    return cJSON_GetObjectItemCaseSensitive(fields, key) != NULL;
}


static int
vec_int(const cJSON *fields, const char *key)
{
    const cJSON  *v;

    v = cJSON_GetObjectItemCaseSensitive(fields, key);

    return cJSON_IsNumber(v) ? (int) v->valuedouble : -1;
}


static uint32_t
vec_u32(const cJSON *fields, const char *key)
{
    const cJSON  *v;

    v = cJSON_GetObjectItemCaseSensitive(fields, key);

    return cJSON_IsNumber(v) ? (uint32_t) v->valuedouble : 0;
}


/* a byte field: the UTF-8 bytes of its text; NULL for null or absent */

static const char *
vec_str(const cJSON *fields, const char *key)
{
    const cJSON  *v;

    v = cJSON_GetObjectItemCaseSensitive(fields, key);

    return cJSON_IsString(v) ? v->valuestring : NULL;
}


/* got == the field's bytes; a missing field passes */

static int
vec_same(const cJSON *fields, const char *key, const uint8_t *got,
    size_t len)
{
    const char  *want;

    if (!vec_has(fields, key)) {
        return 1;
    }

    want = vec_str(fields, key);

    if (want == NULL) {
        tap_diag("field %s is not a string", key);
        return 0;
    }

    if (strlen(want) != len || (len && memcmp(got, want, len) != 0)) {
        tap_diag("%s differs", key);
        tap_hex("got ", got, len);
        tap_hex("want", (const uint8_t *) want, strlen(want));
        return 0;
    }

    return 1;
}


/* an optional byte of CONNECT: null means absent, which reads as 0 */

static int
vec_optional(const cJSON *fields, const char *key, unsigned has,
    uint8_t value)
{
    const cJSON  *v;

    v = cJSON_GetObjectItemCaseSensitive(fields, key);

    if (v == NULL) {
        return 1;
    }

    if (cJSON_IsNull(v) ? (has || value != 0)
                        : (!has || value != (int) v->valuedouble))
    {
        tap_diag("%s: has %u, value %u", key, has, value);
        return 0;
    }

    return 1;
}


static int
vec_msgid(const cJSON *fields, const im_msg_t *m)
{
    const char  *want;

    if (!vec_has(fields, "msgid")) {
        return 1;
    }

    want = vec_str(fields, "msgid");

    if (want == NULL) {
        if (m->msgid != NULL) {
            tap_diag("a MsgId reported where none was read");
            return 0;
        }

        return 1;
    }

    if (m->msgid == NULL) {
        tap_diag("no MsgId reported");
        return 0;
    }

    return vec_same(fields, "msgid", m->msgid, IM_MSGID_LEN);
}


static int
vec_fields(const cJSON *fields, const im_msg_t *m)
{
    int           i, n, good;
    const cJSON  *uids, *u;

    good = 1;

    if (vec_int(fields, "cmd") != m->cmd) {
        tap_diag("cmd %u", m->cmd);
        good = 0;
    }

    good &= vec_same(fields, "user", m->user, m->user_len);
    good &= vec_same(fields, "pass", m->pass, m->pass_len);
    good &= vec_optional(fields, "role", m->has_role, m->role);
    good &= vec_optional(fields, "client_id", m->has_client_id,
                         m->client_id);

    if ((vec_has(fields, "code") && vec_int(fields, "code") != m->code)
        || (vec_has(fields, "bad_cmd")
            && vec_int(fields, "bad_cmd") != m->code))
    {
        tap_diag("code %u", m->code);
        good = 0;
    }

    if ((vec_has(fields, "to") && vec_u32(fields, "to") != m->to)
        || (vec_has(fields, "gid") && vec_u32(fields, "gid") != m->to)
        || (vec_has(fields, "uid") && vec_u32(fields, "uid") != m->to))
    {
        tap_diag("to / gid %u", m->to);
        good = 0;
    }

    good &= vec_msgid(fields, m);
    good &= vec_same(fields, "payload", m->payload, m->payload_len);

    if (vec_has(fields, "extra")) {
        good &= (m->msgid != NULL)
                && vec_same(fields, "extra", m->msgid + IM_MSGID_LEN,
                            m->ack_extra);
    }

    uids = cJSON_GetObjectItemCaseSensitive(fields, "uids");

    if (uids) {
        n = cJSON_GetArraySize(uids);

        if (n != m->n_uids) {
            tap_diag("%u uids, want %d", m->n_uids, n);
            good = 0;

        } else {
            for (i = 0; i < n; i++) {
                u = cJSON_GetArrayItem(uids, i);

                if (im_get_u32(m->uids + 4 * i) != (uint32_t) u->valuedouble)
                {
                    tap_diag("uid %d is %u", i, im_get_u32(m->uids + 4 * i));
                    good = 0;
                }
            }
        }
    }

    return good;
}


/* the message built from the vector's fields; 0 when no builder fits */

static size_t
vec_build(const cJSON *fields, int server, uint8_t *out)
{
    int            i, n, cmd;
    size_t         len;
    uint8_t        uids[4 * 16];
    const char    *user, *pass, *msgid, *payload, *extra;
    const cJSON   *list;

    user = vec_str(fields, "user");
    pass = vec_str(fields, "pass");
    msgid = vec_str(fields, "msgid");
    payload = vec_str(fields, "payload");
    len = payload ? strlen(payload) : 0;

    cmd = vec_int(fields, "cmd");

    /* every message with a MsgId but INVALID_PACKET needs one */

    if (msgid == NULL
        && (cmd == IM_CMD_PUBLISH || cmd == IM_CMD_GROUP_PUBLISH
            || cmd == IM_CMD_GROUP_PART_PUBLISH || cmd == IM_CMD_PUB_ACK
            || cmd == IM_CMD_GROUP_PUB_ACK
            || cmd == IM_CMD_GROUP_PART_PUB_ACK))
    {
        return 0;
    }

    switch (cmd) {

    case IM_CMD_CONNECT:
        if (user == NULL || pass == NULL) {
            return 0;
        }

        return im_build_connect(out, U8(user), (uint16_t) strlen(user),
                                U8(pass), (uint16_t) strlen(pass),
                                vec_int(fields, "role"),
                                vec_int(fields, "client_id"));

    case IM_CMD_CONNECT_ACK:
        return im_build_connect_ack(out, (uint8_t) vec_int(fields, "code"));

    case IM_CMD_PUBLISH:
        if (server) {
            return im_build_push(out, U8(msgid), U8(payload),
                                 (uint16_t) len);
        }

        return im_build_publish(out, vec_u32(fields, "to"), U8(msgid),
                                U8(payload), (uint16_t) len);

    case IM_CMD_GROUP_PUBLISH:
        return im_build_group(out, vec_u32(fields, "gid"), U8(msgid),
                              U8(payload), (uint16_t) len);

    case IM_CMD_GROUP_PART_PUBLISH:
        list = cJSON_GetObjectItemCaseSensitive(fields, "uids");
        n = cJSON_GetArraySize(list);

        if (n > 16) {
            return 0;
        }

        for (i = 0; i < n; i++) {
            im_put_u32(uids + 4 * i,
                       (uint32_t) cJSON_GetArrayItem(list, i)->valuedouble);
        }

        return im_build_part(out, vec_u32(fields, "gid"), U8(msgid),
                             (uint16_t) n, uids, U8(payload),
                             (uint16_t) len);

    case IM_CMD_RECEIPT:
        return im_build_receipt(out, U8(msgid), vec_u32(fields, "uid"));

    case IM_CMD_PUB_ACK:
    case IM_CMD_GROUP_PUB_ACK:
    case IM_CMD_GROUP_PART_PUB_ACK:
        len = im_build_ack(out, (uint8_t) cmd, U8(msgid));

        /* the codec builds the server's acks; a client's long ack is
         * MsgId ++ its extra bytes */
        extra = vec_str(fields, "extra");

        if (extra && *extra) {
            memcpy(out + len, extra, strlen(extra));
            len += strlen(extra);
        }

        return len;

    case IM_CMD_PING:
    case IM_CMD_PING_RESP:
    case IM_CMD_DISCONNECT:
    case IM_CMD_LOGOUT:
        return im_build_simple(out, (uint8_t) cmd);

    case IM_CMD_INVALID:
        return im_build_invalid(out, (uint8_t) vec_int(fields, "bad_cmd"),
                                U8(msgid));
    }

    return 0;
}


static im_rc_t
vec_rc(const char *error)
{
    const vec_error_t  *e;

    for (e = vec_errors; e->name; e++) {
        if (error && strcmp(error, e->name) == 0) {
            return e->rc;
        }
    }

    return (im_rc_t) -1;
}


static int
vec_known_fields(const cJSON *fields)
{
    int           i, known;
    const cJSON  *f;

    cJSON_ArrayForEach(f, fields) {
        known = 0;

        for (i = 0; vec_field_names[i]; i++) {
            if (strcmp(f->string, vec_field_names[i]) == 0) {
                known = 1;
            }
        }

        if (!known) {
            tap_diag("unknown field \"%s\"", f->string);
            return 0;
        }
    }

    return 1;
}


/*
 * The field client's reading (docs/PROTOCOL.md 8), tried by the server
 * only on a client message the strict parse refused: a vector with a
 * "utf16" member reads that way to those fields; no other refused vector
 * may read that way.
 */

static void
vec_check_utf16(const cJSON *v, const uint8_t *msg, size_t len)
{
    int           good;
    im_rc_t       rc;
    uint8_t      *copy;
    im_msg_t      m;
    const char   *name;
    const cJSON  *u;

    name = cJSON_GetObjectItemCaseSensitive(v, "name")->valuestring;
    u = cJSON_GetObjectItemCaseSensitive(v, "utf16");

    if (u == NULL && cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(v,
                                                                   "valid")))
    {
        return;
    }

    copy = tap_dup(msg, len);
    rc = im_parse_client_utf16(copy, len, &m);

    if (u) {
        good = (rc == IM_OK && m.utf16);

        if (!good) {
            tap_diag("%s", im_rc_str(rc));
        }

        good = good && cJSON_IsObject(u) && vec_known_fields(u)
               && vec_fields(u, &m);

        tap_ok(good, "c2s %s: read with lengths in UTF-16 units", name);

    } else {
        tap_ok(rc != IM_OK, "c2s %s: no reading in UTF-16 units either",
               name);
    }

    free(copy);
}


static void
vec_check(const cJSON *v, int server, const uint8_t *msg, size_t len)
{
    int           valid, good;
    size_t        n;
    im_rc_t       rc, want;
    uint8_t      *copy, out[VEC_MAX];
    im_msg_t      m;
    const char   *name, *dir;
    const cJSON  *fields;

    name = cJSON_GetObjectItemCaseSensitive(v, "name")->valuestring;
    fields = cJSON_GetObjectItemCaseSensitive(v, "fields");
    valid = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(v, "valid"));
    dir = server ? "s2c" : "c2s";

    /* an exact-size copy: the ASan build sees a read past the end */
    copy = tap_dup(msg, len);

    rc = server ? im_parse_server(copy, len, &m)
                : im_parse_client(copy, len, &m);

    if (valid) {
        good = (rc == IM_OK);

        if (!good) {
            tap_diag("%s", im_rc_str(rc));
        }

        good = good && vec_fields(fields, &m);

        tap_ok(good, "%s %s: parsed, fields", dir, name);

        n = vec_build(fields, server, out);
        tap_bytes(out, n, msg, len, "%s %s: built", dir, name);

    } else {
        want = vec_rc(vec_str(v, "error"));
        good = (rc == want);

        if (!good) {
            tap_diag("got %s", im_rc_str(rc));
        }

        if (vec_has(fields, "cmd") && vec_int(fields, "cmd") != m.cmd) {
            tap_diag("cmd %u", m.cmd);
            good = 0;
        }

        good &= vec_msgid(fields, &m);

        tap_ok(good, "%s %s: %s", dir, name, im_rc_str(want));
    }

    free(copy);
}


void
test_vectors(void)
{
    int            count, seen[2][256];
    char          *text;
    size_t         len, tlen;
    uint8_t        msg[VEC_MAX], framed[VEC_MAX + 4];
    const char    *path, *dir, *name, *hex;
    const cJSON   *v, *fields, *tcp;
    cJSON         *json;

    path = getenv("IM_VECTORS");
    if (path == NULL) {
        path = VECTORS_FILE;
    }

    text = vec_read_file(path);
    json = text ? cJSON_Parse(text) : NULL;
    free(text);

    if (!tap_ok(json != NULL, "%s read and parsed", path)) {
        cJSON_Delete(json);
        return;
    }

    memset(seen, 0, sizeof(seen));
    count = 0;

    cJSON_ArrayForEach(v, cJSON_GetObjectItemCaseSensitive(json, "vectors")) {
        count++;

        name = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(v,
                                                                     "name"));
        dir = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(v,
                                                                "direction"));
        hex = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(v, "hex"));
        fields = cJSON_GetObjectItemCaseSensitive(v, "fields");

        if (!tap_ok(name && dir && hex && cJSON_IsObject(fields)
                    && vec_known_fields(fields)
                    && vec_hex(hex, msg, VEC_MAX, &len),
                    "vector %d (%s): well formed", count,
                    name ? name : "no name"))
        {
            continue;
        }

        if (strcmp(dir, "c2s") == 0 || strcmp(dir, "both") == 0) {
            vec_check(v, 0, msg, len);
            vec_check_utf16(v, msg, len);

            if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(v, "valid"))) {
                seen[0][len ? msg[0] : 0] = 1;
            }
        }

        if (strcmp(dir, "s2c") == 0 || strcmp(dir, "both") == 0) {
            vec_check(v, 1, msg, len);

            if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(v, "valid"))) {
                seen[1][len ? msg[0] : 0] = 1;
            }
        }

        tcp = cJSON_GetObjectItemCaseSensitive(v, "tcp_hex");

        if (tcp) {
            tap_ok(cJSON_IsString(tcp)
                   && vec_hex(tcp->valuestring, framed, sizeof(framed), &tlen)
                   && tlen == len + 4 && im_get_u32(framed) == len
                   && memcmp(framed + 4, msg, len) == 0,
                   "%s: TCP framing [Len:32][message]", name);
        }
    }

    tap_ok(count >= 80, "%d vectors", count);

    tap_ok(seen[0][1] && seen[0][3] && seen[0][4] && seen[0][5] && seen[0][6]
           && seen[0][7] && seen[0][8] && seen[0][9] && seen[0][11]
           && seen[0][12],
           "a valid C->S vector for each client command");
    tap_ok(seen[1][2] && seen[1][3] && seen[1][4] && seen[1][5] && seen[1][6]
           && seen[1][7] && seen[1][8] && seen[1][9] && seen[1][10]
           && seen[1][11] && seen[1][12] && seen[1][13] && seen[1][20],
           "a valid S->C vector for each server command");

    cJSON_Delete(json);
}
