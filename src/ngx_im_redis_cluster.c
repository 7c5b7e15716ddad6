/*
 * ngx_im_redis_cluster.c: the nodes of a Redis Cluster and its slot map.
 *
 * Owns, with "im_redis_cluster on", the worker's table of nodes (node 0
 * is the seed given by im_redis; the others come from the map and from
 * redirects), their connections (each node an inbox, a subscriber and,
 * with events, an events connection, made and watched by
 * ngx_im_redis_conn.c and driven by ngx_im_redis_worker.c's handlers), the
 * slot map read from CLUSTER SLOTS, and which slot a command is for.
 * Nothing here formats or pairs commands: ngx_im_redis.c asks for the
 * connection of a slot and sends (docs/decisions/043-redis-cluster.md).
 */

#include "ngx_im_redis_cluster.h"


static ngx_im_cluster_node_t *ngx_im_redis_cluster_add(u_char *host,
    size_t hlen, ngx_uint_t port, redisReply *announced);
static ngx_uint_t ngx_im_redis_cluster_is_ip(u_char *host, size_t len);
static void ngx_im_redis_cluster_alias(ngx_im_cluster_node_t *node,
    redisReply *announced, ngx_uint_t port);
static redisReply *ngx_im_redis_cluster_meta_ip(redisReply *master);


static ngx_im_cluster_node_t        *ngx_im_cluster_nodes[NGX_IM_CLUSTER_NODES];
static ngx_uint_t                    ngx_im_cluster_nnodes;
static u_char                        ngx_im_cluster_slots[NGX_IM_SLOTS];
static ngx_uint_t                    ngx_im_cluster_has_map;
/* the last read of the map failed: logged once, until one succeeds */
static ngx_uint_t                    ngx_im_cluster_map_failed;
/* a node known by a host name only: logged once a minute */
static time_t                        ngx_im_cluster_host_logged;
static ngx_im_redis_server_t        *ngx_im_cluster_seed;
static ngx_im_redis_conn_handlers_t *ngx_im_cluster_handlers;

static const char  *ngx_im_cluster_roles[NGX_IM_REDIS_N] = {
    "inbox", "group", "sub", "events"
};


static void
ngx_im_redis_cluster_connect(ngx_im_cluster_node_t *node)
{
    ngx_uint_t            i;
    ngx_im_conf_t        *imcf;
    ngx_im_redis_conn_t  *rc;

    imcf = ngx_im_get_conf();

    for (i = 0; i < NGX_IM_REDIS_N; i++) {
        rc = &node->conns[i];

        /* a cluster has database 0 only: no SELECT */
        ngx_im_redis_conn_init(rc, &node->server, -1,
                               ngx_im_cluster_roles[i],
                               ngx_im_cluster_handlers, NULL);
        rc->index = i;

        if (i == NGX_IM_REDIS_GROUP
            || (i == NGX_IM_REDIS_EVENTS && !imcf->redis_events))
        {
            /* the group sets are read on the inbox connection */
            continue;
        }

        ngx_im_redis_conn_connect(rc);
    }
}


ngx_int_t
ngx_im_redis_cluster_init(ngx_cycle_t *cycle, ngx_im_redis_server_t *seed,
    ngx_im_redis_conn_handlers_t *handlers)
{
    size_t                  len;
    ngx_im_cluster_node_t  *node;

    ngx_im_cluster_seed = seed;
    ngx_im_cluster_handlers = handlers;
    ngx_im_cluster_nnodes = 0;
    ngx_im_cluster_has_map = 0;
    ngx_memset(ngx_im_cluster_slots, NGX_IM_CLUSTER_NONE, NGX_IM_SLOTS);

    /* node 0: the seed, with every address im_redis resolved to */

    node = ngx_pcalloc(cycle->pool, sizeof(ngx_im_cluster_node_t));
    if (node == NULL) {
        return NGX_ERROR;
    }

    node->server = *seed;
    node->index = 0;

    len = ngx_sock_ntop(seed->addrs[0].sockaddr, seed->addrs[0].socklen,
                        node->name, NGX_SOCKADDR_STRLEN, 1);
    node->name_len = len;

    ngx_im_cluster_nodes[ngx_im_cluster_nnodes++] = node;

    ngx_im_redis_cluster_connect(node);

    return NGX_OK;
}


void
ngx_im_redis_cluster_exit(void)
{
    ngx_uint_t  i, j;

    for (i = 0; i < ngx_im_cluster_nnodes; i++) {
        for (j = 0; j < NGX_IM_REDIS_N; j++) {
            ngx_im_redis_conn_exit(&ngx_im_cluster_nodes[i]->conns[j]);
        }
    }
}


ngx_uint_t
ngx_im_redis_cluster_nodes(void)
{
    return ngx_im_cluster_nnodes;
}


ngx_im_cluster_node_t *
ngx_im_redis_cluster_node(ngx_uint_t i)
{
    return ngx_im_cluster_nodes[i];
}


ngx_uint_t
ngx_im_redis_cluster_mapped(void)
{
    return ngx_im_cluster_has_map;
}


/*
 * The key of each command the module sends: the second word, but for
 * EVAL and EVALSHA the first of the script's keys (the fourth word, when
 * numkeys is not 0); SPUBLISH's channel is its key too.  PING has none.
 */

ngx_int_t
ngx_im_redis_cluster_slot(int argc, const char **argv,
    const size_t *argvlen)
{
    if (argc < 2) {
        return NGX_DECLINED;
    }

    if ((argv[0][0] == 'E' || argv[0][0] == 'e')
        && argvlen[0] >= 4
        && ngx_strncasecmp((u_char *) argv[0], (u_char *) "EVAL", 4) == 0)
    {
        if (argc < 4 || (argvlen[2] == 1 && argv[2][0] == '0')) {
            return NGX_DECLINED;
        }

        return ngx_im_slot((u_char *) argv[3], argvlen[3]);
    }

    return ngx_im_slot((u_char *) argv[1], argvlen[1]);
}


ngx_im_redis_conn_t *
ngx_im_redis_cluster_conn(ngx_uint_t role, ngx_uint_t slot)
{
    ngx_uint_t  i;

    i = ngx_im_cluster_slots[slot & (NGX_IM_SLOTS - 1)];

    if (i == NGX_IM_CLUSTER_NONE) {
        return NULL;
    }

    if (role == NGX_IM_REDIS_GROUP) {
        role = NGX_IM_REDIS_INBOX;
    }

    return &ngx_im_cluster_nodes[i]->conns[role];
}


static ngx_im_cluster_node_t *
ngx_im_redis_cluster_find(u_char *name, size_t len)
{
    ngx_uint_t  i;

    for (i = 0; i < ngx_im_cluster_nnodes; i++) {
        if (ngx_im_cluster_nodes[i]->name_len == len
            && ngx_memcmp(ngx_im_cluster_nodes[i]->name, name, len) == 0)
        {
            return ngx_im_cluster_nodes[i];
        }
    }

    return NULL;
}


/* a node by the host name it announced ("host:port") */

static ngx_im_cluster_node_t *
ngx_im_redis_cluster_find_alias(u_char *host, size_t hlen, ngx_uint_t port)
{
    u_char                  buf[NGX_MAXHOSTNAMELEN + NGX_INT_T_LEN + 2];
    size_t                  len;
    ngx_uint_t              i;
    ngx_im_cluster_node_t  *node;

    if (hlen > NGX_MAXHOSTNAMELEN) {
        return NULL;
    }

    len = ngx_sprintf(buf, "%*s:%ui", hlen, host, port) - buf;

    for (i = 0; i < ngx_im_cluster_nnodes; i++) {
        node = ngx_im_cluster_nodes[i];

        if (node->alias_len == len
            && ngx_strncasecmp(node->alias, buf, len) == 0)
        {
            return node;
        }
    }

    return NULL;
}


/*
 * A node by the address the cluster gives, added and connecting when new.
 * A worker must not block on a resolver, so a node is reached at an IP
 * address only: the endpoint the cluster gives when it is one, or else
 * (cluster-preferred-endpoint-type hostname or unknown-endpoint, Redis 7)
 * the "ip" the same CLUSTER SLOTS reply adds (announced, the endpoint as
 * given there; a redirect names it so).  A host name with no such IP is
 * refused, and the log says what to set (decision 047).
 */

static ngx_im_cluster_node_t *
ngx_im_redis_cluster_add(u_char *host, size_t hlen, ngx_uint_t port,
    redisReply *announced)
{
    u_char                 name[NGX_SOCKADDR_STRLEN];
    size_t                 len;
    ngx_addr_t             addr;
    ngx_im_cluster_node_t  *node, *found;

    if (port == 0 || port > 65535
        || !ngx_im_redis_cluster_is_ip(host, hlen)
        || ngx_parse_addr(ngx_cycle->pool, &addr, host, hlen) != NGX_OK)
    {
        found = ngx_im_redis_cluster_find_alias(host, hlen, port);
        if (found) {
            return found;
        }

        if (ngx_time() - ngx_im_cluster_host_logged >= 60) {
            ngx_im_cluster_host_logged = ngx_time();
            ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                          "im redis cluster: node \"%*s:%ui\" is not an "
                          "IP address and port, and the cluster gave no IP "
                          "for it: host names are not resolved; set "
                          "\"cluster-preferred-endpoint-type ip\" on the "
                          "cluster's nodes (this line once a minute)",
                          hlen, host, port);
        }

        return NULL;
    }

    ngx_inet_set_port(addr.sockaddr, (in_port_t) port);

    len = ngx_sock_ntop(addr.sockaddr, addr.socklen, name,
                        NGX_SOCKADDR_STRLEN, 1);

    found = ngx_im_redis_cluster_find(name, len);
    if (found) {
        if (announced && found->alias == NULL) {
            ngx_im_redis_cluster_alias(found, announced, port);
        }

        return found;
    }

    if (ngx_im_cluster_nnodes == NGX_IM_CLUSTER_NODES) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "im redis cluster: more than %d nodes, \"%*s\" "
                      "ignored", NGX_IM_CLUSTER_NODES, len, name);
        return NULL;
    }

    /* never freed: a worker knows a few nodes, and their connections'
     * events point into the record */

    node = ngx_pcalloc(ngx_cycle->pool, sizeof(ngx_im_cluster_node_t));
    if (node == NULL) {
        return NULL;
    }

    ngx_memcpy(node->sockaddr, addr.sockaddr, addr.socklen);
    ngx_memcpy(node->name, name, len);
    node->name_len = len;

    node->addr.sockaddr = (struct sockaddr *) node->sockaddr;
    node->addr.socklen = addr.socklen;
    node->addr.name.data = node->name;
    node->addr.name.len = len;

    node->server = *ngx_im_cluster_seed;
    node->server.addrs = &node->addr;
    node->server.naddrs = 1;

    node->index = ngx_im_cluster_nnodes;
    ngx_im_cluster_nodes[ngx_im_cluster_nnodes++] = node;

    if (announced) {
        ngx_im_redis_cluster_alias(node, announced, port);
    }

    ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                  "im redis cluster: node %*s added%s%*s", len, name,
                  node->alias ? ", announced as " : "",
                  node->alias_len, node->alias);

    ngx_im_redis_cluster_connect(node);

    return node;
}


/* the name a node announced: a redirect says "MOVED slot host:port" */

static void
ngx_im_redis_cluster_alias(ngx_im_cluster_node_t *node,
    redisReply *announced, ngx_uint_t port)
{
    u_char  *p;

    if (announced->len > NGX_MAXHOSTNAMELEN) {
        return;
    }

    p = ngx_pnalloc(ngx_cycle->pool, announced->len + NGX_INT_T_LEN + 2);
    if (p == NULL) {
        return;
    }

    node->alias = p;
    node->alias_len = ngx_sprintf(p, "%*s:%ui", announced->len,
                                  announced->str, port)
                      - p;
}


static ngx_uint_t
ngx_im_redis_cluster_is_ip(u_char *host, size_t len)
{
#if (NGX_HAVE_INET6)
    u_char  buf[16];
#endif

    if (ngx_inet_addr(host, len) != INADDR_NONE) {
        return 1;
    }

#if (NGX_HAVE_INET6)
    if (ngx_inet6_addr(host, len, buf) == NGX_OK) {
        return 1;
    }
#endif

    return 0;
}


/* Redis 7's networking metadata after [host, port, id]: a map, in RESP2
 * an array of names and values, with "ip" when the endpoint is not one */

static redisReply *
ngx_im_redis_cluster_meta_ip(redisReply *master)
{
    size_t       i;
    redisReply  *meta, *k, *v;

    if (master->elements < 4) {
        return NULL;
    }

    meta = master->element[3];

    if (meta->type != REDIS_REPLY_ARRAY) {
        return NULL;
    }

    for (i = 0; i + 1 < meta->elements; i += 2) {
        k = meta->element[i];
        v = meta->element[i + 1];

        if (k->type == REDIS_REPLY_STRING && k->len == 2
            && ngx_strncmp(k->str, "ip", 2) == 0
            && v->type == REDIS_REPLY_STRING)
        {
            return v;
        }
    }

    return NULL;
}


/*
 * CLUSTER SLOTS: an array of [start, end, [host, port, id, ...],
 * replicas...].  The map is replaced only by a whole good answer.
 */

ngx_int_t
ngx_im_redis_cluster_map(redisReply *reply)
{
    u_char                  map[NGX_IM_SLOTS];
    size_t                  i;
    ngx_uint_t              s, n;
    long long               from, to;
    redisReply             *range, *master, *host, *ip;
    ngx_im_cluster_node_t  *node;

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY
        || reply->elements == 0)
    {
        if (!ngx_im_cluster_map_failed) {
            ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                          "im redis cluster: CLUSTER SLOTS: %s; "
                          "asked again every second",
                          reply == NULL ? "no answer"
                          : reply->type == REDIS_REPLY_ERROR ? reply->str
                          : "no slots (cluster down?)");
        }

        ngx_im_cluster_map_failed = 1;
        return NGX_ERROR;
    }

    ngx_memset(map, NGX_IM_CLUSTER_NONE, NGX_IM_SLOTS);

    for (n = 0; n < ngx_im_cluster_nnodes; n++) {
        ngx_im_cluster_nodes[n]->slots = 0;
    }

    for (i = 0; i < reply->elements; i++) {
        range = reply->element[i];

        if (range->type != REDIS_REPLY_ARRAY || range->elements < 3
            || range->element[0]->type != REDIS_REPLY_INTEGER
            || range->element[1]->type != REDIS_REPLY_INTEGER
            || range->element[2]->type != REDIS_REPLY_ARRAY
            || range->element[2]->elements < 2
            || (range->element[2]->element[0]->type != REDIS_REPLY_STRING
                && range->element[2]->element[0]->type != REDIS_REPLY_NIL)
            || range->element[2]->element[1]->type != REDIS_REPLY_INTEGER)
        {
            ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                          "im redis cluster: CLUSTER SLOTS: a range "
                          "not understood");
            return NGX_ERROR;
        }

        from = range->element[0]->integer;
        to = range->element[1]->integer;
        master = range->element[2];

        if (from < 0 || to >= NGX_IM_SLOTS || from > to) {
            return NGX_ERROR;
        }

        host = master->element[0];
        ip = NULL;

        if (host->type != REDIS_REPLY_STRING
            || !ngx_im_redis_cluster_is_ip((u_char *) host->str, host->len))
        {
            /* a host name ("?" or nil when the node has none) */
            ip = ngx_im_redis_cluster_meta_ip(master);
        }

        if (ip) {
            /* "?": hostname preferred, and the node has none; no name a
             * redirect could be followed by */
            node = ngx_im_redis_cluster_add((u_char *) ip->str, ip->len,
                                            (ngx_uint_t)
                                            master->element[1]->integer,
                                            (host->type == REDIS_REPLY_STRING
                                             && host->len
                                             && !(host->len == 1
                                                  && host->str[0] == '?'))
                                            ? host : NULL);

        } else {
            node = ngx_im_redis_cluster_add((u_char *) host->str,
                                            host->type == REDIS_REPLY_STRING
                                            ? host->len : 0,
                                            (ngx_uint_t)
                                            master->element[1]->integer,
                                            NULL);
        }

        if (node == NULL) {
            return NGX_ERROR;
        }

        for (s = (ngx_uint_t) from; s <= (ngx_uint_t) to; s++) {
            map[s] = (u_char) node->index;
        }

        node->slots += to - from + 1;
    }

    ngx_memcpy(ngx_im_cluster_slots, map, NGX_IM_SLOTS);

    if (!ngx_im_cluster_has_map || ngx_im_cluster_map_failed) {
        ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                      "im redis cluster: slot map read, %ui ranges, "
                      "%ui nodes known",
                      (ngx_uint_t) reply->elements, ngx_im_cluster_nnodes);
    }

    ngx_im_cluster_has_map = 1;
    ngx_im_cluster_map_failed = 0;

    return NGX_OK;
}


ngx_im_cluster_node_t *
ngx_im_redis_cluster_redirect(ngx_im_redirect_t *r, ngx_im_redis_conn_t *rc)
{
    u_char                  host[NGX_SOCKADDR_STRLEN];
    size_t                  i, hlen;
    ngx_uint_t              port, n;
    ngx_im_cluster_node_t  *node;

    /* "host:port": the port after the last colon (an IPv6 host has
     * colons of its own) */

    for (i = r->addr_len; i > 0; i--) {
        if (r->addr[i - 1] == ':') {
            break;
        }
    }

    if (i == 0 || i == r->addr_len) {
        return NULL;
    }

    port = (ngx_uint_t) ngx_atoi((u_char *) r->addr + i,
                                 r->addr_len - i);

    if (port == (ngx_uint_t) NGX_ERROR) {
        return NULL;
    }

    if (i == 1) {
        /* no host (cluster-preferred-endpoint-type unknown-endpoint):
         * the host of the node that answered, with the port named */

        for (n = 0; n < ngx_im_cluster_nnodes; n++) {
            if (rc >= ngx_im_cluster_nodes[n]->conns
                && rc < ngx_im_cluster_nodes[n]->conns + NGX_IM_REDIS_N)
            {
                break;
            }
        }

        if (n == ngx_im_cluster_nnodes) {
            return NULL;
        }

        node = ngx_im_cluster_nodes[n];
        hlen = ngx_sock_ntop(node->server.addrs[rc->addr].sockaddr,
                             node->server.addrs[rc->addr].socklen,
                             host, NGX_SOCKADDR_STRLEN, 0);

        node = ngx_im_redis_cluster_add(host, hlen, port, NULL);

    } else {
        node = ngx_im_redis_cluster_add((u_char *) r->addr, i - 1, port,
                                        NULL);
    }

    if (node == NULL) {
        return NULL;
    }

    if (r->kind == NGX_IM_REDIRECT_MOVED && r->slot < NGX_IM_SLOTS) {
        if (ngx_im_cluster_slots[r->slot] != node->index) {
            ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                          "im redis cluster: slot %ui moved to %*s",
                          r->slot, node->name_len, node->name);
        }

        ngx_im_cluster_slots[r->slot] = (u_char) node->index;
    }

    return node;
}


ngx_uint_t
ngx_im_redis_cluster_ready(ngx_uint_t role)
{
    ngx_uint_t  i;

    if (!ngx_im_cluster_has_map) {
        return 0;
    }

    if (role == NGX_IM_REDIS_GROUP) {
        role = NGX_IM_REDIS_INBOX;
    }

    for (i = 0; i < ngx_im_cluster_nnodes; i++) {
        if (ngx_im_cluster_nodes[i]->slots
            && ngx_im_cluster_nodes[i]->conns[role].state
               != NGX_IM_REDIS_READY)
        {
            return 0;
        }
    }

    return 1;
}


ngx_uint_t
ngx_im_redis_cluster_away(ngx_uint_t role)
{
    ngx_uint_t            i;
    ngx_im_redis_conn_t  *rc;

    if (role == NGX_IM_REDIS_GROUP) {
        role = NGX_IM_REDIS_INBOX;
    }

    if (!ngx_im_cluster_has_map) {
        /* the map comes from the seed: it cannot be reached, or it
         * answers no map (not a cluster, or the cluster is down) */
        rc = &ngx_im_cluster_nodes[0]->conns[NGX_IM_REDIS_INBOX];
        return ngx_im_cluster_map_failed
               || (rc->state != NGX_IM_REDIS_READY && rc->failed);
    }

    for (i = 0; i < ngx_im_cluster_nnodes; i++) {
        rc = &ngx_im_cluster_nodes[i]->conns[role];

        if (ngx_im_cluster_nodes[i]->slots
            && rc->state != NGX_IM_REDIS_READY && rc->failed)
        {
            return 1;
        }
    }

    return 0;
}
