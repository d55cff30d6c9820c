/*
 * image_ops: the image catalog's requests: image push, commit,
 * list, show, rm and pull, and the broker's blob server (broker/images/blobsrv.c,
 * its own thread), which this module starts and whose events it reads.
 * See docs/IMAGES.md.
 */
#ifndef TT_BROKER_IMAGE_OPS_H
#define TT_BROKER_IMAGE_OPS_H

#include "handler.h"

/* Starts the blob server on cfg.blobs_ep (nothing when it is "").
 * 0 / -1 with a reason. */
int image_ops_start(broker_t *self, char *err, size_t errlen);
void image_ops_stop(broker_t *self);
/* The blob server's pipe for the loop's poller, NULL without one. */
void *image_ops_sock(broker_t *self);
/* Reads the blob server's events (completed uploads). */
void image_ops_on_blob(broker_t *self);

/* The catalog image a create names, as the tenant sees it (its own
 * first, then the pool's): 1 with vm's image, image_digest, image_kind
 * and image_blobs set; 0 if image is no catalog image (a host-local
 * image of the workers' --images); -1 with msg on a catalog error. */
int image_ops_resolve(broker_t *self, const char *tenant, const char *image, vm_t *vm, char *msg,
                      size_t msglen);

int image_push(handler_ctx_t *c);
int image_commit(handler_ctx_t *c);
int image_list(handler_ctx_t *c);
int image_show(handler_ctx_t *c);
int image_rm(handler_ctx_t *c);
int image_pull(handler_ctx_t *c);
int image_prepare(handler_ctx_t *c);

#endif
