/*
 * seed: the NoCloud seed that bootstraps a cloud-init guest.
 *
 * A seed is an ISO 9660 image with volume id `cidata` holding three files
 * cloud-init's NoCloud datasource reads at boot:
 *     meta-data       instance-id (unique per VM, stable across stop/start,
 *                     so first boot runs once) and local-hostname;
 *     user-data       the tenant's data with the tenant's SSH keys merged in,
 *                     so keys work with or without user-data;
 *     network-config  version 2, matching the VM's MAC: the broker's static
 *                     address (nft backend) or DHCP (user backend).
 * The ISO is made by genisoimage (or xorriso) run as a child with an argv
 * (never a shell) and a deadline; nothing here writes ISO 9660 by hand.
 *
 * The tenant's inputs (keys, user-data) arrive with the VM's spec and are
 * kept in the VM directory (seed_inputs_save / _load) so they survive
 * worker restarts and apply again on every start: the engine rebuilds the
 * seed before each start from the inputs and the VM's current identity.
 *
 * How the keys are merged: without user-data, user-data is a cloud-config
 * with ssh_authorized_keys. With user-data, it is a MIME multipart: the
 * tenant's part first (cloud-config or a script, base64-encoded so no byte
 * of it can end the part early), then a cloud-config part carrying the keys
 * whose merge_how appends lists, so a tenant's own ssh_authorized_keys or
 * users list is kept and ours added. This is cloud-init's documented way to
 * combine several parts.
 */
#ifndef TT_WORKER_SEED_H
#define TT_WORKER_SEED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ttguest.h"

#define SEED_USER_DATA_MAX TT_USER_DATA_MAX
#define SEED_KEY_MAX TT_SSH_KEY_MAX
#define SEED_KEYS_MAX TT_SSH_KEYS_MAX

typedef struct {
    const char *instance_id; /* [A-Za-z0-9._-], see seed_instance_id */
    const char *hostname;    /* see seed_hostname */
    const char *mac;         /* "52:54:00:..", matched by network-config */
    bool dhcp;               /* true: DHCP; false: static ip/prefix via gateway */
    const char *ip;
    int prefix;
    const char *gateway;
    const char *const *keys; /* validated SSH public keys */
    size_t n_keys;
    const char *user_data; /* NULL or validated user-data */
    size_t user_data_len;
} seed_spec_t;

/* schema's tt_ssh_key_valid / tt_user_data_valid (kept here so the seed's
 * own API reads whole). An SSH public key line: "TYPE BASE64 [COMMENT]", a known type whose
 * base64 blob decodes and names the same type, no options, no control
 * characters or newline, at most SEED_KEY_MAX bytes. 0 / -1 with a reason. */
int seed_key_valid(const char *key, char *err, size_t errlen);

/* User-data: at most SEED_USER_DATA_MAX bytes, no NUL, starting with
 * "#cloud-config" or "#!" (a script). 0 / -1 with a reason. */
int seed_user_data_valid(const char *data, size_t len, char *err, size_t errlen);

/* "NAME-ID" from env "tenant/name" and a VM id: lower case, [a-z0-9-],
 * at most 63 chars (a DNS label). */
void seed_hostname(const char *env, uint32_t vm_id, char *buf, size_t len);

/* The VM's instance id, kept in vm_dir/instance-id: made once ("tt-ID-"
 * + 16 random hex digits, so a reused VM id is another instance) and read
 * back on every later call. 0 / -1 with a reason. */
int seed_instance_id(const char *vm_dir, uint32_t vm_id, char *buf, size_t len, char *err,
                     size_t errlen);

/* The three files' text, each malloc'd (caller frees). 0 / -1. */
int seed_render(const seed_spec_t *spec, char **meta_data, char **user_data, char **network_config,
                char *err, size_t errlen);

/* Render the files into work_dir and make the ISO at iso_path (written
 * under a temporary name, then renamed). 0 / -1 with a reason. */
int seed_build(const seed_spec_t *spec, const char *work_dir, const char *iso_path, char *err,
               size_t errlen);

/* Keep the tenant's inputs in vm_dir (files ssh_keys and user-data,
 * replaced atomically; n_keys 0 and user_data NULL remove them). The
 * inputs are validated first; nothing is written on a bad one. */
int seed_inputs_save(const char *vm_dir, const char *const *keys, size_t n_keys,
                     const char *user_data, size_t user_data_len, char *err, size_t errlen);

/* The inputs back (keys: one malloc'd array of malloc'd strings; user_data
 * malloc'd or NULL). Missing files are empty inputs. seed_inputs_free
 * frees what this returned. */
int seed_inputs_load(const char *vm_dir, char ***keys, size_t *n_keys, char **user_data,
                     size_t *user_data_len, char *err, size_t errlen);
void seed_inputs_free(char **keys, size_t n_keys, char *user_data);

#endif
