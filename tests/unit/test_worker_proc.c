/*
 * Unit test of the /proc readers (worker/os/proc.c).
 */
#include "test_util.h"

#include <signal.h>
#include <unistd.h>

#include "proc.h"

static void s_on_usr1(int sig)
{
}

int main(void)
{
    char state;
    uint64_t st;
    /* A comm with spaces and parentheses must not shift the fields. */
    const char *line = "1234 (a) b (c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 "
                       "987654 1000 10 18446744073709551615\n";
    CHECK(proc_stat_parse(line, strlen(line), &state, &st) == 0);
    CHECK(state == 'S' && st == 987654);
    const char *bad = "1234 (x) S 1 2 3";
    CHECK(proc_stat_parse(bad, strlen(bad), &state, &st) == -1);
    CHECK(proc_stat_parse("garbage", 7, &state, &st) == -1);

    /* Ourselves: alive with our start time, not with another. */
    CHECK(proc_stat_read(getpid(), &state, &st) == 0);
    CHECK(proc_alive(getpid(), st));
    CHECK(!proc_alive(getpid(), st + 1));
    CHECK(!proc_alive(0, 0));
    CHECK(proc_pidns(getpid()) != 0);
    signal(SIGUSR1, SIG_DFL);
    CHECK(!proc_catches(getpid(), SIGUSR1));
    signal(SIGUSR1, s_on_usr1);
    CHECK(proc_catches(getpid(), SIGUSR1));

    char buf[32];
    CHECK(proc_utoa(0, buf) == 1 && strcmp(buf, "0") == 0);
    CHECK(proc_utoa(18446744073709551615ULL, buf) == 20 &&
          strcmp(buf, "18446744073709551615") == 0);

    pid_t pid;
    CHECK(proc_pidfile_parse("42 77\n", 6, &pid, &st) == 0 && pid == 42 && st == 77);
    CHECK(proc_pidfile_parse("0 77", 4, &pid, &st) == -1);
    CHECK(proc_pidfile_parse("42", 2, &pid, &st) == -1);
    CHECK(proc_pidfile_parse("99999999 1", 10, &pid, &st) == -1);
    return s_report("unit.worker.proc");
}
