/*
 * guest.c: the commands that reach into a VM: env ssh (the system OpenSSH
 * client), env console, env exec and env cp (the worker's guest operations,
 * PROTOCOL.md "Guests": the agent on the qemu engine, the VM's namespaces on
 * the process engine).
 */
#include "ttctl.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
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
          "the VM's host: only for an older env whose VMs share an id"),
    S_OPT("--bytes", CTL_INT, console_args_t, bytes, 1, TT_CONSOLE_MAX, "N",
          "the last N bytes (default 16 KiB, at most 256 KiB)"),
    CTL_OPT_END,
};

typedef struct {
    const char *host, *stdin_path;
    uint64_t timeout;
    bool all;
} exec_args_t;

static const ctl_opt_t s_exec_opts[] = {
    S_OPT("--host", CTL_NAME, exec_args_t, host, 0, 0, "ID",
          "the VM's host: only for an older env whose VMs share an id"),
    S_OPT("--timeout", CTL_DURATION, exec_args_t, timeout, 1, TT_EXEC_TIMEOUT_MAX, "SECS",
          "kill the command after SECS (or 90s, 5m), at most 1 h (default 60 s);\n"
          "after the command words it is this, not ttctl's per-attempt --timeout MS"),
    S_OPT("--stdin", CTL_STRING, exec_args_t, stdin_path, 0, 0, "FILE",
          "feed FILE (at most 64 KiB; - for ttctl's stdin) to the command"),
    S_OPT("--all", CTL_FLAG, exec_args_t, all, 0, 0, NULL,
          "run on every VM of the env (NAME --all -- CMD): each VM's output under\n"
          "'==> vm N on HOST <==', its exit code on stderr; exit with the highest"),
    CTL_OPT_END,
};

typedef struct {
    const char *host;
    bool recursive;
} cp_args_t;

static const ctl_opt_t s_cp_opts[] = {
    S_OPT("--host", CTL_NAME, cp_args_t, host, 0, 0, "ID",
          "the VM's host: only for an older env whose VMs share an id"),
    S_OPT("--recursive", CTL_FLAG, cp_args_t, recursive, 0, 0, NULL,
          "(also -r) copy a directory: a tar of it in the same checked chunks, made\n"
          "and unpacked with tar(1) on each side (at most 64 MiB of tar)"),
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

/* Shows the outcome of one exec (JSON, or its output on ttctl's and a
 * note of how it ended on stderr) and returns its exit code: the command's
 * (128+N for signal N), 124 when it ran over its timeout, 1 otherwise. */
static int s_exec_show(ctl_t *ctl, uint32_t vm_id, ttclient_exec_t *res)
{
    int code;
    bool ran = res->status == TTFLEET__STATUS__OK || res->status == TTFLEET__STATUS__TIMEOUT;
    if (res->status == TTFLEET__STATUS__OK)
        code = res->signal ? 128 + res->signal : res->exit_code & 0xff;
    else if (res->status == TTFLEET__STATUS__TIMEOUT)
        code = 124; /* as timeout(1) */
    else
        code = EXIT_STATUS;
    if (ctl->json) {
        print_exec_json(stdout, vm_id, tt_status_name(res->status), res->message, res->host,
                        res->exit_code, res->signal, res->out, res->out_len, res->out_truncated,
                        res->err, res->err_len, res->err_truncated);
        return code;
    }
    if (res->out_len)
        fwrite(res->out, 1, res->out_len, stdout);
    if (res->err_len)
        fwrite(res->err, 1, res->err_len, stderr);
    fflush(stdout);
    if (res->out_truncated)
        fprintf(stderr,
                "ttctl: stdout truncated: the command wrote more than %d bytes; "
                "the first %zu are shown\n",
                TT_EXEC_OUTPUT_MAX, res->out_len);
    if (res->err_truncated)
        fprintf(stderr,
                "ttctl: stderr truncated: the command wrote more than %d bytes; "
                "the first %zu are shown\n",
                TT_EXEC_OUTPUT_MAX, res->err_len);
    if (!ran || res->status == TTFLEET__STATUS__TIMEOUT)
        fprintf(stderr, "ttctl: %s: %s\n", tt_status_name(res->status),
                res->message[0] ? res->message : "(no message)");
    else if (res->signal)
        fprintf(stderr, "ttctl: the command was killed by signal %d\n", res->signal);
    return code;
}

/* env exec NAME --all -- CMD: the command on every VM of the env, one after
 * the other; each VM's output under a "==> vm N on HOST <==" line and its
 * exit code on stderr (-o json: {"results": [...]} with vm_id per result).
 * The exit status is the highest of the VMs' codes. */
static int s_exec_all(ctl_t *ctl, ttclient_t *client, const char *name, const char *const *argv,
                      size_t argc, const uint8_t *in, size_t in_len, uint32_t timeout_s)
{
    Ttfleet__Reply *reply = NULL;
    int rc = ttclient_env_show(client, name, &reply);
    if (rc != 0 || reply->status != TTFLEET__STATUS__OK || !reply->env)
        return ctl_finish(ctl, &client, rc, &reply, "", false);
    int worst = 0;
    if (ctl->json)
        print_exec_list(true);
    for (size_t i = 0; i < reply->env->n_vms; i++) {
        const Ttfleet__VmInfo *vm = reply->env->vms[i];
        ttclient_exec_t res;
        if (!ctl->json) {
            printf("%s==> vm %u on %s <==\n", i ? "\n" : "", vm->vm_id, vm->host);
            fflush(stdout);
        }
        int code;
        if (ttclient_env_exec(client, name, vm->vm_id, vm->host, argv, argc, in, in_len, timeout_s,
                              &res) != 0) {
            fprintf(stderr, "ttctl: vm %u on %s: %s\n", vm->vm_id, vm->host,
                    ttclient_error(client));
            code = EXIT_TRANSPORT;
        } else {
            code = s_exec_show(ctl, vm->vm_id, &res);
            ttclient_exec_free(&res);
        }
        if (!ctl->json)
            fprintf(stderr, "ttctl: vm %u on %s: exit %d\n", vm->vm_id, vm->host, code);
        if (code > worst)
            worst = code;
    }
    if (ctl->json && print_exec_list_print(stdout) != 0)
        worst = worst ? worst : EXIT_STATUS;
    ttclient_reply_destroy(&reply);
    ttclient_destroy(&client);
    return fflush(stdout) == 0 ? worst : EXIT_STATUS;
}

static int s_env_exec(ctl_t *ctl, void *args)
{
    exec_args_t *a = args;
    const char *name = NULL, *host = a->host, *in_path = a->stdin_path;
    uint32_t vm_id = 0, timeout_s = (uint32_t)a->timeout;
    size_t argc = 0;
    const char **argv;
    if (a->all) {
        /* NAME --all -- CMD: no VM id */
        if (ctl->n_pos_opt > 1)
            ctl_usage_error(ctl, "unexpected argument '%s' (with --all: NAME --all -- CMD)",
                            ctl->pos[1]);
        if (ctl->n_pos < 1)
            ctl_usage_error(ctl, "env name is required");
        if (host)
            ctl_usage_error(ctl, "--all takes no --host: it runs on every VM");
        name = ctl_name(ctl, "env name", ctl->pos[0]);
        argv = ctl->pos + 1;
        argc = (size_t)ctl->n_pos - 1;
    } else
        argv = s_name_vm_cmd(ctl, &name, &vm_id, &argc, "the command goes after --");
    if (argc < 1 || argc > TT_EXEC_ARGS_MAX)
        ctl_usage_error(ctl, "give the command after --: 1..%d arguments", TT_EXEC_ARGS_MAX);
    size_t in_len = 0;
    uint8_t *in = in_path ? ctl_slurp(ctl, in_path, TT_EXEC_STDIN_MAX, &in_len, "--stdin") : NULL;
    ttclient_t *client = ctl_client(ctl);
    if (a->all) {
        int code = s_exec_all(ctl, client, name, argv, argc, in, in_len, timeout_s);
        free(in);
        return code;
    }
    ttclient_exec_t res;
    int rc = ttclient_env_exec(client, name, vm_id, host, argv, argc, in, in_len, timeout_s, &res);
    free(in);
    if (rc) {
        fprintf(stderr, "ttctl: %s\n", ttclient_error(client));
        ttclient_destroy(&client);
        return EXIT_TRANSPORT;
    }
    ttclient_destroy(&client);
    int code = s_exec_show(ctl, vm_id, &res);
    ttclient_exec_free(&res);
    if (fflush(stdout) != 0)
        return EXIT_STATUS;
    return code;
}

/* Whether path is a directory in the guest: `test -d` through the exec op
 * (false when it is not, or when the exec cannot tell). */
static bool s_guest_is_dir(ttclient_t *client, const char *name, uint32_t vm_id, const char *host,
                           const char *path)
{
    const char *argv[] = {"test", "-d", path};
    ttclient_exec_t res;
    if (ttclient_env_exec(client, name, vm_id, host, argv, 3, NULL, 0, 10, &res) != 0)
        return false;
    bool dir = res.status == TTFLEET__STATUS__OK && res.exit_code == 0 && !res.signal;
    ttclient_exec_free(&res);
    return dir;
}

/* Runs a command in the guest for env cp -r; 0 when it exited 0, else a
 * message on stderr and EXIT_STATUS (or EXIT_TRANSPORT). */
static int s_guest_run(ttclient_t *client, const char *name, uint32_t vm_id, const char *host,
                       const char *const *argv, size_t argc)
{
    ttclient_exec_t res;
    if (ttclient_env_exec(client, name, vm_id, host, argv, argc, NULL, 0, 600, &res) != 0) {
        fprintf(stderr, "ttctl: %s\n", ttclient_error(client));
        return EXIT_TRANSPORT;
    }
    int code = 0;
    if (res.status != TTFLEET__STATUS__OK || res.exit_code || res.signal) {
        fprintf(stderr, "ttctl: in the guest, %s failed: %s%.*s\n", argv[2],
                res.status != TTFLEET__STATUS__OK ? res.message : "",
                (int)(res.err_len > 512 ? 512 : res.err_len), res.err ? (const char *)res.err : "");
        code = EXIT_STATUS;
    }
    ttclient_exec_free(&res);
    return code;
}

/* Runs tar(1) here: argv with in (may be NULL) on its stdin, its stdout
 * (at most TT_COPY_FILE_MAX bytes) into *out when out is not NULL. 0 when
 * it exited 0. */
static int s_local_tar(const char *const *argv, const uint8_t *in, size_t in_len, uint8_t **out,
                       size_t *out_len)
{
    int io[2];
    if (pipe(io) != 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0) {
        close(io[0]);
        close(io[1]);
        return -1;
    }
    if (pid == 0) {
        dup2(out ? io[1] : io[0], out ? STDOUT_FILENO : STDIN_FILENO);
        close(io[0]);
        close(io[1]);
        execvp(argv[0], (char *const *)argv);
        fprintf(stderr, "ttctl: cannot run tar: %s\n", strerror(errno));
        _exit(127);
    }
    int rc = 0;
    if (out) {
        close(io[1]);
        size_t cap = 1 << 20, n = 0;
        uint8_t *buf = malloc(cap);
        for (;;) {
            if (buf && n == cap && cap <= TT_COPY_FILE_MAX) {
                uint8_t *more = realloc(buf, cap * 2);
                if (!more) {
                    free(buf);
                    buf = NULL;
                } else {
                    buf = more;
                    cap *= 2;
                }
            }
            if (!buf || n > TT_COPY_FILE_MAX) {
                rc = -1;
                break;
            }
            ssize_t r = read(io[0], buf + n, cap - n);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0)
                break;
            n += (size_t)r;
        }
        close(io[0]);
        if (rc || n > TT_COPY_FILE_MAX) {
            free(buf);
            buf = NULL;
            rc = -1;
            kill(pid, SIGTERM);
        }
        *out = buf;
        *out_len = n;
    } else {
        close(io[0]);
        signal(SIGPIPE, SIG_IGN);
        for (size_t off = 0; off < in_len;) {
            ssize_t w = write(io[1], in + off, in_len - off);
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0) {
                rc = -1;
                break;
            }
            off += (size_t)w;
        }
        close(io[1]);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    return rc == 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

/* env cp -r: a directory tree as one tar, in the same checked chunks as a
 * file. Into the guest: mkdir -p DST, the tar put beside its files as
 * DST/.ttctl-cp.tar, unpacked there by the guest's tar and removed. Out of
 * it: the guest's tar of SRC written to SRC.ttctl-cp.tar, fetched, removed,
 * and unpacked here into the local directory (made if needed). */
static int s_cp_tree(ctl_t *ctl, ttclient_t *client, const char *name, uint32_t vm_id,
                     const char *host, const char *gpath, const char *local, bool src_remote)
{
    char tarpath[TT_GUEST_PATH_MAX + 1], dir[TT_GUEST_PATH_MAX + 1], why[256];
    snprintf(dir, sizeof dir, "%s", gpath);
    for (size_t n = strlen(dir); n > 1 && dir[n - 1] == '/'; n--)
        dir[n - 1] = '\0';
    int w = snprintf(tarpath, sizeof tarpath, src_remote ? "%s.ttctl-cp.tar" : "%s/.ttctl-cp.tar",
                     strcmp(dir, "/") == 0 ? "" : dir);
    if (w < 0 || (size_t)w >= sizeof tarpath || tt_guest_path_valid(tarpath, why, sizeof why))
        ctl_usage_error(ctl, "'%s': too long a guest path for -r", gpath);
    uint8_t *data = NULL;
    size_t len = 0;
    int code = 0;
    if (!src_remote) {
        struct stat sb;
        if (stat(local, &sb) != 0 || !S_ISDIR(sb.st_mode))
            ctl_usage_error(ctl, "-r: %s is not a local directory", local);
        const char *tar[] = {"tar", "-C", local, "-cf", "-", ".", NULL};
        if (s_local_tar(tar, NULL, 0, &data, &len) != 0) {
            fprintf(stderr, "ttctl: tar of %s failed or is over %d bytes; nothing was sent\n",
                    local, TT_COPY_FILE_MAX);
            code = EXIT_STATUS;
        }
        const char *mk[] = {"mkdir", "-p", "--", dir};
        if (!code)
            code = s_guest_run(client, name, vm_id, host, mk, 4);
        if (!code) {
            int rc = ttclient_env_cp_put(client, name, vm_id, host, tarpath, data, len);
            if (rc) {
                fprintf(stderr, "ttctl: %s\n", ttclient_error(client));
                code = rc < 0 ? EXIT_TRANSPORT : EXIT_STATUS;
            }
        }
        const char *untar[] = {
            "sh", "-c", "tar -xf \"$2\" -C \"$1\"; rc=$?; rm -f \"$2\"; exit $rc",
            "sh", dir,  tarpath};
        if (!code)
            code = s_guest_run(client, name, vm_id, host, untar, 6);
    } else {
        const char *mk[] = {"tar", "-C", dir, "-cf", tarpath, "."};
        code = s_guest_run(client, name, vm_id, host, mk, 6);
        if (!code) {
            int rc = ttclient_env_cp_get(client, name, vm_id, host, tarpath, &data, &len);
            if (rc) {
                fprintf(stderr, "ttctl: %s\n", ttclient_error(client));
                code = rc < 0 ? EXIT_TRANSPORT : EXIT_STATUS;
            }
            const char *rm[] = {"rm", "-f", "--", tarpath};
            s_guest_run(client, name, vm_id, host, rm, 4);
        }
        if (!code && mkdir(local, 0755) != 0 && errno != EEXIST) {
            fprintf(stderr, "ttctl: mkdir %s: %s\n", local, strerror(errno));
            code = EXIT_STATUS;
        }
        const char *untar[] = {"tar", "-C", local, "-xf", "-", NULL};
        if (!code && s_local_tar(untar, data, len, NULL, NULL) != 0) {
            fprintf(stderr, "ttctl: unpacking into %s failed\n", local);
            code = EXIT_STATUS;
        }
    }
    ttclient_destroy(&client);
    if (code) {
        free(data);
        return code;
    }
    unsigned char sha[32];
    EVP_Digest(data ? data : (const uint8_t *)"", len, sha, NULL, EVP_sha256(), NULL);
    free(data);
    if (ctl->json)
        print_copy_json(stdout, src_remote ? "get" : "put", dir, local, len, sha);
    else {
        printf("copied directory %s %s %s:%u:%s as a %zu-byte tar, sha256 ", local,
               src_remote ? "from" : "to", name, vm_id, dir, len);
        for (int i = 0; i < 32; i++)
            printf("%02x", sha[i]);
        printf("\n");
    }
    return fflush(stdout) == 0 ? 0 : EXIT_STATUS;
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
    if (a->recursive)
        return s_cp_tree(ctl, client, name, vm_id, host, gpath, local, src_remote);
    uint8_t *data = NULL;
    size_t len = 0;
    int rc;
    char joined[TT_GUEST_PATH_MAX + 1];
    if (!src_remote) {
        /* into a guest directory (DST ends with '/', or is one: asked with
         * test -d through the exec op): keep the local file's name */
        size_t glen = strlen(gpath);
        if (gpath[glen - 1] == '/' || s_guest_is_dir(client, name, vm_id, host, gpath)) {
            const char *base = strrchr(local, '/');
            base = base ? base + 1 : local;
            if (!*base || strcmp(base, "-") == 0 || strcmp(base, "..") == 0 ||
                strcmp(base, ".") == 0)
                ctl_usage_error(ctl, "'%s' is a directory in the guest: give the file's name",
                                gpath);
            int w = snprintf(joined, sizeof joined, "%s%s%s", gpath,
                             gpath[glen - 1] == '/' ? "" : "/", base);
            char why[256];
            if (w < 0 || (size_t)w >= sizeof joined || tt_guest_path_valid(joined, why, sizeof why))
                ctl_usage_error(ctl, "'%s' + '%s': not a valid guest path", gpath, base);
            gpath = joined;
        }
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
    {"env", "exec", "env_exec", "NAME (VMID | --all) -- CMD [ARG]...",
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
     "as DST keeps the guest file's name, and so does a guest directory as DST: one\n"
     "ending in '/' or one that `test -d` finds). Files up to 64 MiB, sent in 128 KiB chunks;\n"
     "the sha256 is checked end to end (the worker writes nothing into the guest\n"
     "unless it matches). -o json prints {ok, direction, path, local, bytes, sha256}.\n",
     s_cp_opts, sizeof(cp_args_t), 2, 2, "give SRC and DST", s_env_cp, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL, NULL, 0, 0, 0, NULL, NULL, NULL, NULL},
};
