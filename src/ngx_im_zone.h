/*
 * ngx_im_zone.h: this node's directory and its workers' mail.
 *
 * With "im_zone name size;" the workers of one nginx share a directory
 * uid -> the pids of the workers holding a session of that uid, and each
 * worker has a datagram socket in the abstract namespace, named after the
 * zone's instance and its pid.  A worker hands a message to another worker
 * of its node directly, without going through Redis.
 */

#ifndef _NGX_IM_ZONE_H_INCLUDED_
#define _NGX_IM_ZONE_H_INCLUDED_


#include "ngx_im.h"


/* workers of this node holding one uid that the directory names (one entry
 * is then 64 bytes of the slab); more still get its messages, by Redis */
#define NGX_IM_DIR_PIDS  6


char *ngx_im_zone_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);

/* the worker's socket; handler gets each datagram */
ngx_int_t ngx_im_zone_init_process(ngx_cycle_t *cycle,
    void (*handler)(u_char *data, size_t len));
void ngx_im_zone_exit_process(void);

ngx_uint_t ngx_im_zone_enabled(void);
/* a random number of this zone's life: workers sharing it share it */
uint64_t ngx_im_zone_instance(void);

/* this worker holds uid / no longer holds it; NGX_DECLINED: zone full */
ngx_int_t ngx_im_dir_add(uint32_t uid);
void ngx_im_dir_del(uint32_t uid);
/* the other workers of this node holding uid */
ngx_uint_t ngx_im_dir_peers(uint32_t uid, ngx_pid_t *pids);
/* no other worker of this node holds any uid now: one check for a whole
 * group rather than a lookup per member */
ngx_uint_t ngx_im_dir_alone(void);
ngx_uint_t ngx_im_dir_users(void);

/* NGX_OK; NGX_AGAIN: the peer is busy; NGX_DECLINED: the peer is gone
 * (its directory entries for uid are dropped) */
ngx_int_t ngx_im_ipc_send(ngx_pid_t pid, uint32_t uid, u_char *data,
    size_t len);


#endif /* _NGX_IM_ZONE_H_INCLUDED_ */
