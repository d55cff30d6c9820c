/*
 * tokens: the operator's bearer tokens, each mapped to a tenant and a role.
 *
 * The file has one token per line, `TOKEN TENANT ROLE` (role `user` or
 * `admin`); `#` starts a comment, blank lines are skipped. A line that does
 * not parse (short token, bad tenant name, unknown role) is skipped with a
 * warning naming its line, so one typo does not lock everyone out. The file
 * is checked on every lookup (one stat) and read again when its size,
 * inode, mtime or ctime changed (ctime catches an in-place rewrite that
 * keeps size and mtime, as `cp -p` or `rsync -t` do). A token removed from
 * the file stops working at the next request. A file that is deleted or
 * cannot be read (permissions, I/O error, out of memory) fails closed: every
 * token is revoked, with one log line, until it can be read again; a token
 * file is the only grant, so a missing one grants nothing.
 *
 * Lookups compare the presented token against every entry in constant time
 * per entry and never stop early, so timing says nothing about how much of
 * a token matched or which line it is on.
 */
#ifndef TOKENS_H
#define TOKENS_H

#include <stdbool.h>
#include <stddef.h>

#define TOKENS_MIN_LEN 16
#define TOKENS_MAX_LEN 256

typedef struct _tokens_t tokens_t;

/* Loads path. admin_tenant is the tenant the broker treats as admin
 * (ttgw's --admin-tenant): a `user` line naming it, or naming `admin` (the
 * broker's default admin tenant), is skipped with a warning, since every
 * request in that tenant would carry the admin role. Returns NULL with a
 * reason in err if the file cannot be read at all (a file with no valid
 * line is accepted, with a warning). */
tokens_t *tokens_new(const char *path, const char *admin_tenant, char *err, size_t errlen);
void tokens_destroy(tokens_t **self_p);

/* Looks token up (thread-safe). On a match copies its tenant and role into
 * tenant/role (each at least 65 bytes) and returns 0; -1 otherwise. */
int tokens_lookup(tokens_t *self, const char *token, char *tenant, char *role);

/* Number of valid entries now in force. */
size_t tokens_count(tokens_t *self);

#endif
