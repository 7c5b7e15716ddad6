/*
 * ngx_im_dir.h: this node's directory of who holds which uid.
 *
 * With "im_zone name size;" the workers of one nginx share a directory
 * uid -> the pids of the workers holding a session of that uid, so that a
 * worker hands a message to a sibling directly (ngx_im_ipc.h) instead of
 * through Redis.
 */

#ifndef _NGX_IM_DIR_H_INCLUDED_
#define _NGX_IM_DIR_H_INCLUDED_


#include "ngx_im.h"


/* workers of this node holding one uid that the directory names (one entry
 * is then 32 bytes of the slab); more still get its messages, by Redis */
#define NGX_IM_DIR_PIDS  6


char *ngx_im_dir_zone_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);

ngx_int_t ngx_im_dir_init_process(ngx_cycle_t *cycle);
void ngx_im_dir_exit_process(void);

ngx_uint_t ngx_im_dir_enabled(void);
/* a random number of this zone's life: workers sharing it share it */
uint64_t ngx_im_dir_instance(void);

/* this worker holds uid / no longer holds it; NGX_DECLINED: zone full */
ngx_int_t ngx_im_dir_add(uint32_t uid);
void ngx_im_dir_del(uint32_t uid);
/* the other workers of this node holding uid */
ngx_uint_t ngx_im_dir_peers(uint32_t uid, ngx_pid_t *pids);
/* no other worker of this node holds any uid now: one check for a whole
 * group rather than a lookup per member */
ngx_uint_t ngx_im_dir_alone(void);
ngx_uint_t ngx_im_dir_users(void);
/* drop the entries of workers that no longer exist */
void ngx_im_dir_forget_dead(void);


#endif /* _NGX_IM_DIR_H_INCLUDED_ */
