/*
 * proc: /proc readers for VM processes. See proc.h.
 *
 * Everything reads with open()/read() into stack buffers: the spawn path
 * calls proc_stat_read() in a forked child of a multi-threaded process,
 * where malloc and stdio are off limits.
 */
#define _GNU_SOURCE
#include "proc.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int proc_stat_parse(const char *buf, size_t len, char *state, uint64_t *start_time)
{
    const char *close = NULL;
    for (size_t i = 0; i < len; i++)
        if (buf[i] == ')')
            close = buf + i;
    if (!close)
        return -1;
    /* After ") " comes field 3 (state); start time is field 22. */
    const char *p = close + 1;
    const char *end = buf + len;
    int field = 2;
    char st = 0;
    while (p < end) {
        while (p < end && *p == ' ')
            p++;
        if (p >= end)
            break;
        field++;
        if (field == 3)
            st = *p;
        if (field == 22) {
            uint64_t v = 0;
            int digits = 0;
            while (p < end && *p >= '0' && *p <= '9') {
                v = v * 10 + (uint64_t)(*p - '0');
                p++;
                digits++;
            }
            if (!digits || !st)
                return -1;
            *state = st;
            *start_time = v;
            return 0;
        }
        while (p < end && *p != ' ')
            p++;
    }
    return -1;
}

static void s_proc_path(pid_t pid, const char *leaf, char *buf)
{
    /* "/proc/" + pid + "/" + leaf, without stdio. */
    size_t n = 0;
    memcpy(buf, "/proc/", 6);
    n = 6;
    n += proc_utoa((uint64_t)pid, buf + n);
    buf[n++] = '/';
    size_t l = strlen(leaf);
    memcpy(buf + n, leaf, l + 1);
}

/* Read up to len-1 bytes of a small file and NUL-terminate them. Returns
 * the length, or -1 if it is missing or empty. One read() is enough for
 * /proc files of this size and for our pidfiles. */
static ssize_t s_read_small(const char *path, char *buf, size_t len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, len - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = 0;
    return n;
}

int proc_stat_read(pid_t pid, char *state, uint64_t *start_time)
{
    if (pid <= 0)
        return -1;
    char path[64], buf[1024];
    s_proc_path(pid, "stat", path);
    ssize_t n = s_read_small(path, buf, sizeof buf);
    return n < 0 ? -1 : proc_stat_parse(buf, (size_t)n, state, start_time);
}

bool proc_alive(pid_t pid, uint64_t start_time)
{
    char state;
    uint64_t st;
    if (proc_stat_read(pid, &state, &st))
        return false;
    return st == start_time && state != 'Z' && state != 'X' && state != 'x';
}

bool proc_catches(pid_t pid, int sig)
{
    char path[64], buf[4096];
    s_proc_path(pid, "status", path);
    if (pid <= 0 || s_read_small(path, buf, sizeof buf) < 0)
        return false;
    const char *p = strstr(buf, "\nSigCgt:");
    if (!p)
        return false;
    unsigned long long mask = strtoull(p + 8, NULL, 16);
    return sig >= 1 && sig <= 64 && (mask >> (sig - 1)) & 1;
}

uint64_t proc_pidns(pid_t pid)
{
    char path[64];
    s_proc_path(pid, "ns/pid", path);
    struct stat sb;
    if (stat(path, &sb))
        return 0;
    return (uint64_t)sb.st_ino;
}

int proc_signal_ns(uint64_t ns, int sig)
{
    if (!ns)
        return 0;
    DIR *dir = opendir("/proc");
    if (!dir)
        return 0;
    int count = 0;
    struct dirent *de;
    while ((de = readdir(dir))) {
        char *end;
        long pid = strtol(de->d_name, &end, 10);
        if (*end || pid <= 0)
            continue;
        if (proc_pidns((pid_t)pid) == ns && kill((pid_t)pid, sig) == 0)
            count++;
    }
    closedir(dir);
    return count;
}

size_t proc_utoa(uint64_t v, char *buf)
{
    char tmp[21];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        buf[i] = tmp[n - 1 - i];
    buf[n] = 0;
    return n;
}

int proc_pidfile_parse(const char *buf, size_t len, pid_t *pid, uint64_t *start_time)
{
    uint64_t v[2] = {0, 0};
    size_t i = 0;
    for (int k = 0; k < 2; k++) {
        while (i < len && buf[i] == ' ')
            i++;
        int digits = 0;
        while (i < len && buf[i] >= '0' && buf[i] <= '9' && digits < 20) {
            v[k] = v[k] * 10 + (uint64_t)(buf[i] - '0');
            i++;
            digits++;
        }
        if (!digits)
            return -1;
    }
    if (v[0] == 0 || v[0] > 4194304)
        return -1;
    *pid = (pid_t)v[0];
    *start_time = v[1];
    return 0;
}

int proc_pidfile_read(const char *path, pid_t *pid, uint64_t *start_time)
{
    char buf[64];
    ssize_t n = s_read_small(path, buf, sizeof buf);
    return n < 0 ? -1 : proc_pidfile_parse(buf, (size_t)n, pid, start_time);
}
