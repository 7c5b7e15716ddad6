/* Minimal MQTT 3.1.1 client codec for imgen: CONNECT, SUBSCRIBE, PUBLISH
 * (QoS 0/1), PUBACK, PINGREQ, DISCONNECT; parser for what a broker sends. */
#ifndef IMGEN_MQTT_H
#define IMGEN_MQTT_H
#include <stdint.h>
#include <string.h>

enum { MQTT_CONNECT = 1, MQTT_CONNACK = 2, MQTT_PUBLISH = 3, MQTT_PUBACK = 4,
       MQTT_SUBSCRIBE = 8, MQTT_SUBACK = 9, MQTT_PINGREQ = 12, MQTT_PINGRESP = 13,
       MQTT_DISCONNECT = 14 };

typedef struct {
    int            type, flags, qos, rc;
    unsigned       pid;
    const uint8_t *topic, *payload;
    size_t         topic_len, payload_len;
} mqtt_pkt_t;

static inline uint8_t *mqtt_varlen(uint8_t *p, size_t n)
{
    do {
        uint8_t b = n & 127;
        n >>= 7;
        *p++ = b | (n ? 128 : 0);
    } while (n);
    return p;
}

static inline uint8_t *mqtt_str(uint8_t *p, const void *s, size_t n)
{
    *p++ = n >> 8;
    *p++ = n;
    memcpy(p, s, n);
    return p + n;
}

static inline size_t mqtt_connect(uint8_t *out, const char *cid, const char *user,
                                  const char *pass, unsigned keepalive)
{
    size_t cl = strlen(cid), ul = strlen(user), pl = strlen(pass);
    size_t rem = 10 + 2 + cl + 2 + ul + 2 + pl;
    uint8_t *p = out;
    *p++ = 0x10;
    p = mqtt_varlen(p, rem);
    p = mqtt_str(p, "MQTT", 4);
    *p++ = 4;                                   /* protocol level 3.1.1 */
    *p++ = 0x80 | 0x40 | 0x02;                  /* user, password, clean session */
    *p++ = keepalive >> 8;
    *p++ = keepalive;
    p = mqtt_str(p, cid, cl);
    p = mqtt_str(p, user, ul);
    p = mqtt_str(p, pass, pl);
    return p - out;
}

static inline size_t mqtt_subscribe(uint8_t *out, unsigned pid, const uint8_t *topic,
                                    size_t tl, int qos)
{
    uint8_t *p = out;
    *p++ = 0x82;
    p = mqtt_varlen(p, 2 + 2 + tl + 1);
    *p++ = pid >> 8;
    *p++ = pid;
    p = mqtt_str(p, topic, tl);
    *p++ = qos;
    return p - out;
}

/* QoS 1 publish */
static inline size_t mqtt_publish(uint8_t *out, const uint8_t *topic, size_t tl, unsigned pid,
                                  const uint8_t *pl, size_t len)
{
    uint8_t *p = out;
    *p++ = 0x32;
    p = mqtt_varlen(p, 2 + tl + 2 + len);
    p = mqtt_str(p, topic, tl);
    *p++ = pid >> 8;
    *p++ = pid;
    memcpy(p, pl, len);
    return p + len - out;
}

static inline size_t mqtt_puback(uint8_t *out, unsigned pid)
{
    out[0] = 0x40; out[1] = 2; out[2] = pid >> 8; out[3] = pid;
    return 4;
}

static inline size_t mqtt_pingreq(uint8_t *out) { out[0] = 0xc0; out[1] = 0; return 2; }
static inline size_t mqtt_disconnect(uint8_t *out) { out[0] = 0xe0; out[1] = 0; return 2; }

/* returns bytes used, 0 when incomplete, -1 on a malformed packet */
static inline int mqtt_parse(const uint8_t *b, size_t len, mqtt_pkt_t *k)
{
    size_t rem = 0, i = 1;
    int shift = 0;

    if (len < 2) return 0;
    for (;;) {
        if (i >= len) return 0;
        if (i > 4) return -1;
        rem |= (size_t) (b[i] & 127) << shift;
        shift += 7;
        if (!(b[i++] & 128)) break;
    }
    if (len - i < rem) return 0;
    if (rem > (1u << 24)) return -1;

    const uint8_t *p = b + i, *e = p + rem;
    memset(k, 0, sizeof(*k));
    k->type = b[0] >> 4;
    k->flags = b[0] & 15;

    switch (k->type) {
    case MQTT_CONNACK:
        if (rem != 2) return -1;
        k->rc = p[1];
        break;
    case MQTT_PUBLISH:
        k->qos = (k->flags >> 1) & 3;
        if (e - p < 2) return -1;
        k->topic_len = (p[0] << 8) | p[1];
        p += 2;
        if ((size_t) (e - p) < k->topic_len) return -1;
        k->topic = p;
        p += k->topic_len;
        if (k->qos) {
            if (e - p < 2) return -1;
            k->pid = (p[0] << 8) | p[1];
            p += 2;
        }
        k->payload = p;
        k->payload_len = e - p;
        break;
    case MQTT_PUBACK:
        if (rem < 2) return -1;
        k->pid = (p[0] << 8) | p[1];
        break;
    case MQTT_SUBACK:
        if (rem < 3) return -1;
        k->pid = (p[0] << 8) | p[1];
        k->rc = p[2];
        break;
    case MQTT_PINGRESP:
        break;
    default:
        return -1;
    }
    return (int) (i + rem);
}
#endif
