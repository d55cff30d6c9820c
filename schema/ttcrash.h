/*
 * ttcrash: named crash points for the crash tests.
 *
 * Compiled in always and inert unless TTFLEET_CRASH_AT is set, as
 * `name` or `name:nth`: the nth time (default 1st) the process passes
 * tt_crash_point("name"), it kills itself with SIGKILL, as a power cut
 * would. The names are listed in docs/RELIABILITY.md.
 *
 * TTFLEET_CRASH_ARM=path (optional) arms the switch by a file: passes
 * count only while path exists, so a test can start a daemon with the
 * variable set, prepare its scenario unharmed, then create the file just
 * before the operation it wants to interrupt.
 */
#ifndef TTCRASH_H
#define TTCRASH_H

void tt_crash_point(const char *name);

#endif
