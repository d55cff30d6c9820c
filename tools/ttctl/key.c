/*
 * key.c: the operator binds client keys (admin only): key add, list, rm.
 */
#include "ttctl.h"

#include <string.h>
#include <sys/stat.h>

#define S_OPT(n, k, type, field, lo, hi, m, h)                                                     \
    {                                                                                              \
        n, k, offsetof(type, field), lo, hi, m, h, NULL, NULL, false                               \
    }

/* A public key given as 40 characters of Z85 or as a certificate file
 * (`ttctl keygen`'s PATH, or PATH_secret: only the public key is sent). */
static void s_key_arg(ctl_t *ctl, const char *arg, char *pub)
{
    if (tt_key_valid(arg)) {
        snprintf(pub, TT_KEY_LEN + 1, "%s", arg);
        return;
    }
    struct stat st;
    if (stat(arg, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > 64 * 1024)
        ctl_usage_error(ctl,
                        "'%s' is neither a public key (40 characters of Z85) nor a "
                        "certificate file",
                        arg);
    zcert_t *cert = zcert_load(arg);
    if (!cert)
        ctl_usage_error(ctl, "%s is not a CURVE certificate (ttctl keygen makes them)", arg);
    snprintf(pub, TT_KEY_LEN + 1, "%s", zcert_public_txt(cert));
    const char *role = zcert_meta(cert, "role"), *tenant = zcert_meta(cert, "tenant");
    if (role || tenant)
        fprintf(stderr,
                "ttctl: note: the tenant/role written in %s (%s/%s) are ignored; "
                "the broker uses what you bind\n",
                arg, tenant ? tenant : "-", role ? role : "-");
    zcert_destroy(&cert);
}

typedef struct {
    const char *tenant, *role;
} key_args_t;

static const ctl_opt_t s_add_opts[] = {
    S_OPT("--tenant", CTL_NAME, key_args_t, tenant, 0, 0, "T", "the key's tenant (required)"),
    {"--role", CTL_CHOICE, offsetof(key_args_t, role), 0, 0, "ROLE",
     "user, admin or gateway (required)", NULL, "user|admin|gateway", false},
    CTL_OPT_END,
};

static int s_key_add(ctl_t *ctl, void *args)
{
    key_args_t *a = args;
    if (ctl->n_pos != 1 || !a->tenant || !a->role)
        ctl_usage_error(ctl, "key add needs PUBLIC_KEY_OR_CERT_FILE, --tenant T and --role R");
    char pub[TT_KEY_LEN + 1];
    s_key_arg(ctl, ctl->pos[0], pub);
    /* --tenant here names the key's tenant; the caller's own tenant comes
     * from its key, so ctl->tenant is not used for this request */
    Ttfleet__KeyAdd add = TTFLEET__KEY_ADD__INIT;
    add.public_key = pub;
    add.tenant = (char *)a->tenant;
    add.role = (char *)a->role;
    Ttfleet__Request req = TTFLEET__REQUEST__INIT;
    req.op_case = TTFLEET__REQUEST__OP_KEY_ADD;
    req.key_add = &add;
    ttclient_t *client = ctl_client(ctl);
    Ttfleet__Reply *reply = NULL;
    int rc = ttclient_call(client, ctl_service(ctl), &req, &reply);
    return ctl_finish(ctl, &client, rc, &reply, "key bound", false);
}

static int s_key_list(ctl_t *ctl, void *args)
{
    (void)args;
    Ttfleet__Empty empty = TTFLEET__EMPTY__INIT;
    Ttfleet__Request req = TTFLEET__REQUEST__INIT;
    req.op_case = TTFLEET__REQUEST__OP_KEY_LIST;
    req.key_list = &empty;
    ttclient_t *client = ctl_client(ctl);
    Ttfleet__Reply *reply = NULL;
    int rc = ttclient_call(client, ctl_service(ctl), &req, &reply);
    return ctl_finish(ctl, &client, rc, &reply, "no keys", false);
}

static int s_key_rm(ctl_t *ctl, void *args)
{
    (void)args;
    char pub[TT_KEY_LEN + 1];
    s_key_arg(ctl, ctl->pos[0], pub);
    Ttfleet__KeyRef ref = TTFLEET__KEY_REF__INIT;
    ref.public_key = pub;
    Ttfleet__Request req = TTFLEET__REQUEST__INIT;
    req.op_case = TTFLEET__REQUEST__OP_KEY_RM;
    req.key_rm = &ref;
    ttclient_t *client = ctl_client(ctl);
    Ttfleet__Reply *reply = NULL;
    int rc = ttclient_call(client, ctl_service(ctl), &req, &reply);
    return ctl_finish(ctl, &client, rc, &reply, "key removed", false);
}

const ctl_cmd_t ctl_key_cmds[] = {
    {"key", "add", "key_add", "PUBLIC_KEY_OR_CERT_FILE",
     "Binds a client key to tenant T and a role (admin only). The key's owner makes it\n"
     "(ttctl keygen) and sends the public file; what that file says about its tenant\n"
     "or role is ignored. Refused if the key is already bound (key rm it first).\n"
     "A key given as text may start with '-' (Z85 has it); the options first and the\n"
     "key after `--` is read as a key whatever it looks like.\n",
     s_add_opts, sizeof(key_args_t), 0, 1, NULL, s_key_add, NULL, NULL},
    {"key", "list", "key_list", NULL, "Lists the bound client keys (admin only).\n", NULL, 0, 0, 0,
     NULL, s_key_list, NULL, NULL},
    {"key", "rm", "key_rm", "PUBLIC_KEY_OR_CERT_FILE",
     "Removes a key's binding (admin only): its next request is refused\n"
     "(UNAUTHENTICATED), new handshakes with it fail, and its events stop.\n",
     NULL, 0, 1, 1, "key rm needs PUBLIC_KEY_OR_CERT_FILE", s_key_rm, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL, NULL, 0, 0, 0, NULL, NULL, NULL, NULL},
};
