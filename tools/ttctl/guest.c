/*
 * guest.c: the commands that reach into a VM: env ssh (the system OpenSSH
 * client), env console, env exec and env cp (the worker's guest operations,
 * PROTOCOL.md "Guests": the agent on the qemu engine, the VM's namespaces on
 * the process engine).
 */
#include "ttctl.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#define S_OPT(n, k, type, field, lo, hi, m, h)                                                     \
    {                                                                                              \
        n, k, offsetof(type, field), lo, hi, m, h, NULL, NULL, false                               \
    }

/* NAME VMID [-- CMD...]: the env name and VM id (before or after "--"),
 * the command words after them, which must come after "--". */
static const char **s_name_vm_cmd(ctl_t *ctl, const char **name, uint32_t *vm_id, size_t *n_cmd,
                                  const char *hint)
{
    if (ctl->n_pos_opt > 2)
        ctl_usage_error(ctl, "unexpected argument '%s' (%s)", ctl->pos[2], hint);
    if (ctl->n_pos < 2)
        ctl_usage_error(ctl, "env name and VM id are required");
    *name = ctl_name(ctl, "env name", ctl->pos[0]);
    *vm_id = (uint32_t)ctl_number(ctl, "VM id", ctl->pos[1], TT_VMID_MIN, TT_VMID_MAX);
    *n_cmd = (size_t)ctl->n_pos - 2;
    return ctl->pos + 2;
}

typedef struct {
    const char *identity, *user;
    bool print;
} ssh_args_t;

static const ctl_opt_t s_ssh_opts[] = {
    S_OPT("--identity", CTL_STRING, ssh_args_t, identity, 0, 0, "KEY",
          "ssh -i KEY (also -i KEY), with IdentitiesOnly"),
    S_OPT("--user", CTL_NAME, ssh_args_t, user, 0, 0, "USER",
          "log in as USER (default: the user its catalog image names, else root)"),
    S_OPT("--print", CTL_FLAG, ssh_args_t, print, 0, 0, NULL,
          "print the ssh command instead of running it"),
    CTL_OPT_END,
};

typedef struct {
    const char *host;
    uint64_t bytes;
} console_args_t;

static const ctl_opt_t s_console_opts[] = {
    S_OPT("--host", CTL_NAME, console_args_t, host, 0, 0, "ID",
          "the VM's host, on an env that spans hosts"),
    S_OPT("--bytes", CTL_INT, console_args_t, bytes, 1, TT_CONSOLE_MAX, "N",
          "the last N bytes (default 16 KiB, at most 256 KiB)"),
    CTL_OPT_END,
};

typedef struct {
    const char *host, *stdin_path;
    uint64_t timeout;
} exec_args_t;

static const ctl_opt_t s_exec_opts[] = {
    S_OPT("--host", CTL_NAME, exec_args_t, host, 0, 0, "ID",
          "the VM's host, on an env that spans hosts"),
    S_OPT("--timeout", CTL_DURATION, exec_args_t, timeout, 1, TT_EXEC_TIMEOUT_MAX, "SECS",
          "kill the command after SECS (or 90s, 5m), at most 1 h (default 60 s);\n"
          "after the command words it is this, not ttctl's per-attempt --timeout MS"),
    S_OPT("--stdin", CTL_STRING, exec_args_t, stdin_path, 0, 0, "FILE",
          "feed FILE (at most 64 KiB; - for ttctl's stdin) to the command"),
    CTL_OPT_END,
};

typedef struct {
    const char *host;
} cp_args_t;

static const ctl_opt_t s_cp_opts[] = {
    S_OPT("--host", CTL_NAME, cp_args_t, host, 0, 0, "ID",
          "the VM's host, on an env that spans hosts"),
    CTL_OPT_END,
};

/* env ssh NAME VMID [-i KEY] [--print] [-- CMD...]: exec the system OpenSSH
 * client to the VM's host's public address and the public port of guest
 * port 22 (from env show). --print prints the command instead. */
static int s_env_ssh(ctl_t *ctl, void *args)
{
    ssh_args_t *a = args;
    const char *name = NULL, *key = a->identity, *user = a->user;
    uint32_t vm_id = 0;
    bool print = a->print;
    size_t n_cmd = 0;
    const char **cmd = s_name_vm_cmd(ctl, &name, &vm_id, &n_cmd, "a command goes after --");
    ttclient_t *client = ctl_client(ctl);
    Ttfleet__Reply *reply = NULL;
    int rc = ttclient_env_show(client, name, &reply);
    if (rc != 0 || reply->status != TTFLEET__STATUS__OK) {
        return ctl_finish(ctl, &client, rc, &reply, "", false);
    }
    const Ttfleet__VmInfo *vm = NULL;
    for (size_t i = 0; i < reply->env->n_vms; i++)
        if (reply->env->vms[i]->vm_id == vm_id)
            vm = reply->env->vms[i];
    uint32_t port = 0;
    for (size_t i = 0; vm && i < vm->n_ports; i++)
        if (vm->ports[i]->guest == 22)
            port = vm->ports[i]->public_;
    char addr[64] = "", portbuf[16], target[128], image_user[TT_MAX_NAME + 1] = "";
    if (vm && vm->public_address)
        snprintf(addr, sizeof addr, "%s", vm->public_address);
    if (vm && !user && vm->image_digest && *vm->image_digest) {
        /* a catalog image may name the user its keys go to (image push --user) */
        char ref[2 * TT_MAX_NAME + 80];
        snprintf(ref, sizeof ref, "%s@%s", vm->image, vm->image_digest);
        Ttfleet__Reply *im = NULL;
        if (ttclient_image_show(client, ref, &im) == 0 && im->status == TTFLEET__STATUS__OK &&
            im->image && im->image->defaults && im->image->defaults->user &&
            tt_name_valid(im->image->defaults->user))
            snprintf(image_user, sizeof image_user, "%s", im->image->defaults->user);
        ttclient_reply_destroy(&im);
    }
    if (!user)
        user = image_user[0] ? image_user : "root";
    ttclient_reply_destroy(&reply);
    ttclient_destroy(&client);
    if (!vm) {
        fprintf(stderr, "ttctl: NOT_FOUND: env %s has no VM %u\n", name, vm_id);
        return EXIT_STATUS;
    }
    if (!port || !addr[0]) {
        fprintf(stderr, "ttctl: UNAVAILABLE: VM %u has %s\n", vm_id,
                !port ? "no public port for guest port 22"
                      : "no public address (start its worker with --public-address)");
        return EXIT_STATUS;
    }
    snprintf(portbuf, sizeof portbuf, "%u", port);
    snprintf(target, sizeof target, "%s@%s", user, addr);
    const char *argv[32 + 1024];
    size_t n = 0;
    argv[n++] = "ssh";
    argv[n++] = "-p";
    argv[n++] = portbuf;
    if (key) {
        argv[n++] = "-i";
        argv[n++] = key;
        argv[n++] = "-o";
        argv[n++] = "IdentitiesOnly=yes";
    }
    argv[n++] = "-o";
    argv[n++] = "StrictHostKeyChecking=no"; /* a fresh VM: its host key is new every time */
    argv[n++] = "-o";
    argv[n++] = "UserKnownHostsFile=/dev/null";
    argv[n++] = "-o";
    argv[n++] = "LogLevel=ERROR";
    argv[n++] = target;
    if (n_cmd) {
        argv[n++] = "--";
        for (size_t i = 0; i < n_cmd && n < sizeof argv / sizeof *argv - 1; i++)
            argv[n++] = cmd[i];
    }
    argv[n] = NULL;
    if (print) {
        for (size_t i = 0; i < n; i++)
            printf("%s%s", i ? " " : "", argv[i]);
        printf("\n");
        return 0;
    }
    fflush(NULL);
    execvp("ssh", (char *const *)argv);
    fprintf(stderr, "ttctl: cannot run ssh: %s (Debian package openssh-client)\n", strerror(errno));
    return EXIT_STATUS;
}

static int s_env_console(ctl_t *ctl, void *args)
{
    console_args_t *a = args;
    Ttfleet__EnvConsole q = TTFLEET__ENV_CONSOLE__INIT;
    const char *name = ctl_name(ctl, "env name", ctl->pos[0]);
    q.vm_id = (uint32_t)ctl_number(ctl, "VM id", ctl->pos[1], TT_VMID_MIN, TT_VMID_MAX);
    q.host = (char *)a->host;
    q.max_bytes = (uint32_t)a->bytes;
    q.name = (char *)name;
    ttclient_t *client = ctl_client(ctl);
    Ttfleet__Reply *reply = NULL;
    int rc = ttclient_env_console(client, &q, &reply);
    return ctl_finish(ctl, &client, rc, &reply, "(empty console)", false);
}

static int s_env_exec(ctl_t *ctl, void *args)
{
    exec_args_t *a = args;
    const char *name = NULL, *host = a->host, *in_path = a->stdin_path;
    uint32_t vm_id = 0, timeout_s = (uint32_t)a->timeout;
    size_t argc = 0;
    const char **argv = s_name_vm_cmd(ctl, &name, &vm_id, &argc, "the command goes after --");
    if (argc < 1 || argc > TT_EXEC_ARGS_MAX)
        ctl_usage_error(ctl, "give the command after --: 1..%d arguments", TT_EXEC_ARGS_MAX);
    size_t in_len = 0;
    uint8_t *in = in_path ? ctl_slurp(ctl, in_path, TT_EXEC_STDIN_MAX, &in_len, "--stdin") : NULL;
    ttclient_t *client = ctl_client(ctl);
    ttclient_exec_t res;
    int rc = ttclient_env_exec(client, name, vm_id, host, argv, argc, in, in_len, timeout_s, &res);
    free(in);
    if (rc) {
        fprintf(stderr, "ttctl: %s\n", ttclient_error(client));
        ttclient_destroy(&client);
        return EXIT_TRANSPORT;
    }
    ttclient_destroy(&client);
    int code;
    bool ran = res.status == TTFLEET__STATUS__OK || res.status == TTFLEET__STATUS__TIMEOUT;
    if (res.status == TTFLEET__STATUS__OK)
        code = res.signal ? 128 + res.signal : res.exit_code & 0xff;
    else if (res.status == TTFLEET__STATUS__TIMEOUT)
        code = 124; /* as timeout(1) */
    else
        code = EXIT_STATUS;
    if (ctl->json) {
        print_exec_json(stdout, tt_status_name(res.status), res.message, res.host, res.exit_code,
                        res.signal, res.out, res.out_len, res.out_truncated, res.err, res.err_len,
                        res.err_truncated);
    } else {
        if (res.out_len)
            fwrite(res.out, 1, res.out_len, stdout);
        if (res.err_len)
            fwrite(res.err, 1, res.err_len, stderr);
        fflush(stdout);
        if (res.out_truncated)
            fprintf(stderr,
                    "ttctl: stdout truncated: the command wrote more than %d bytes; "
                    "the first %zu are shown\n",
                    TT_EXEC_OUTPUT_MAX, res.out_len);
        if (res.err_truncated)
            fprintf(stderr,
                    "ttctl: stderr truncated: the command wrote more than %d bytes; "
                    "the first %zu are shown\n",
                    TT_EXEC_OUTPUT_MAX, res.err_len);
        if (!ran || res.status == TTFLEET__STATUS__TIMEOUT)
            fprintf(stderr, "ttctl: %s: %s\n", tt_status_name(res.status),
                    res.message[0] ? res.message : "(no message)");
        else if (res.signal)
            fprintf(stderr, "ttctl: the command was killed by signal %d\n", res.signal);
    }
    ttclient_exec_free(&res);
    if (fflush(stdout) != 0)
        return EXIT_STATUS;
    return code;
}

/* NAME:VMID:/abs/path -> its parts; false if spec is a local path. */
static bool s_remote(ctl_t *ctl, const char *spec, char *name, size_t nlen, uint32_t *vm_id,
                     const char **path)
{
    const char *c1 = strchr(spec, ':');
    if (!c1 || spec[0] == '/' || spec[0] == '.')
        return false;
    const char *c2 = strchr(c1 + 1, ':');
    if (!c2 || c2[1] != '/')
        ctl_usage_error(ctl, "'%s': a VM side is NAME:VMID:/absolute/path", spec);
    size_t n = (size_t)(c1 - spec);
    if (n >= nlen)
        ctl_usage_error(ctl, "'%s': env name too long", spec);
    memcpy(name, spec, n);
    name[n] = '\0';
    ctl_name(ctl, "env name", name);
    char id[16];
    size_t k = (size_t)(c2 - c1 - 1);
    if (k == 0 || k >= sizeof id)
        ctl_usage_error(ctl, "'%s': bad VM id", spec);
    memcpy(id, c1 + 1, k);
    id[k] = '\0';
    *vm_id = (uint32_t)ctl_number(ctl, "VM id", id, TT_VMID_MIN, TT_VMID_MAX);
    *path = c2 + 1;
    char why[256];
    if (tt_guest_path_valid(*path, why, sizeof why))
        ctl_usage_error(ctl, "'%s': %s", spec, why);
    return true;
}

static int s_env_cp(ctl_t *ctl, void *args)
{
    cp_args_t *a = args;
    const char *pos[2] = {ctl->pos[0], ctl->pos[1]}, *host = a->host;
    char name[TT_MAX_NAME + 2];
    uint32_t vm_id = 0;
    const char *gpath = NULL;
    bool src_remote = s_remote(ctl, pos[0], name, sizeof name, &vm_id, &gpath);
    if (src_remote) {
        char other[TT_MAX_NAME + 2];
        uint32_t v2;
        const char *p2;
        if (s_remote(ctl, pos[1], other, sizeof other, &v2, &p2))
            ctl_usage_error(ctl, "exactly one of SRC and DST is a VM (NAME:VMID:/path)");
    } else if (!s_remote(ctl, pos[1], name, sizeof name, &vm_id, &gpath))
        ctl_usage_error(ctl, "one of SRC and DST must be a VM: NAME:VMID:/absolute/path");
    const char *local = src_remote ? pos[1] : pos[0];
    ttclient_t *client = ctl_client(ctl);
    uint8_t *data = NULL;
    size_t len = 0;
    int rc;
    if (!src_remote) {
        data = ctl_slurp(ctl, local, TT_COPY_FILE_MAX, &len, "file");
        rc = ttclient_env_cp_put(client, name, vm_id, host, gpath, data, len);
    } else
        rc = ttclient_env_cp_get(client, name, vm_id, host, gpath, &data, &len);
    if (rc) {
        fprintf(stderr, "ttctl: %s\n", ttclient_error(client));
        ttclient_destroy(&client);
        free(data);
        return rc < 0 ? EXIT_TRANSPORT : EXIT_STATUS;
    }
    ttclient_destroy(&client);
    char target[4096 + 256];
    snprintf(target, sizeof target, "%s", local);
    if (src_remote) {
        struct stat sb;
        if (stat(local, &sb) == 0 && S_ISDIR(sb.st_mode)) {
            const char *base = strrchr(gpath, '/');
            snprintf(target, sizeof target, "%s/%s", local, base && base[1] ? base + 1 : "file");
        }
        char tmp[sizeof target + 16];
        snprintf(tmp, sizeof tmp, "%s.ttctl-tmp", target);
        FILE *f = fopen(tmp, "wb");
        bool ok = f && fwrite(data, 1, len, f) == len;
        if (f && fclose(f) != 0)
            ok = false;
        if (!ok || rename(tmp, target) != 0) {
            fprintf(stderr, "ttctl: write %s: %s\n", target, strerror(errno));
            unlink(tmp);
            free(data);
            return EXIT_STATUS;
        }
    }
    unsigned char sha[32];
    EVP_Digest(data ? data : (const uint8_t *)"", len, sha, NULL, EVP_sha256(), NULL);
    free(data);
    if (ctl->json)
        print_copy_json(stdout, src_remote ? "get" : "put", gpath, target, len, sha);
    else {
        printf("copied %zu bytes %s %s:%u:%s, sha256 ", len, src_remote ? "from" : "to", name,
               vm_id, gpath);
        for (int i = 0; i < 32; i++)
            printf("%02x", sha[i]);
        printf("\n");
    }
    return fflush(stdout) == 0 ? 0 : EXIT_STATUS;
}

const ctl_cmd_t ctl_guest_cmds[] = {
    {"env", "ssh", NULL, "NAME VMID [-- CMD...]",
     "Runs the system OpenSSH client (ssh) to VM VMID: its host's public address\n"
     "(ttworker --public-address) and the public port of guest port 22.\n",
     s_ssh_opts, sizeof(ssh_args_t), 0, -1, NULL, s_env_ssh, NULL, NULL},
    {"env", "console", "env_console", "NAME VMID", "Prints the tail of a VM's console log.\n",
     s_console_opts, sizeof(console_args_t), 2, 2, "env name and VM id are required", s_env_console,
     NULL, NULL},
    {"env", "exec", "env_exec", "NAME VMID -- CMD [ARG]...",
     "Runs CMD in VM VMID without SSH (the guest agent on the qemu engine, the VM's\n"
     "namespaces on the process engine) and prints its stdout and stderr to ttctl's;\n"
     "exits with the command's exit code (128+N if killed by signal N, 124 if it ran\n"
     "over its timeout and was killed, 1/3 for ttctl's own errors).\n"
     "At most 1 MiB of stdout and of stderr is kept; more is cut and ttctl says so.\n"
     "-o json prints {status, exit_code, signal, stdout, stderr, *_truncated, ...}.\n",
     s_exec_opts, sizeof(exec_args_t), 0, -1, NULL, s_env_exec, NULL, NULL},
    {"env", "cp", "env_copy", "SRC DST",
     "Copies a file to or from a VM without SSH: exactly one of SRC and DST is\n"
     "NAME:VMID:/absolute/path in the guest, the other a local file (a local directory\n"
     "as DST keeps the guest file's name). Files up to 64 MiB, sent in 128 KiB chunks;\n"
     "the sha256 is checked end to end (the worker writes nothing into the guest\n"
     "unless it matches). -o json prints {ok, direction, path, local, bytes, sha256}.\n",
     s_cp_opts, sizeof(cp_args_t), 2, 2, "give SRC and DST", s_env_cp, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL, NULL, 0, 0, 0, NULL, NULL, NULL, NULL},
};
