/*
 * Unit test of ttctl's console filter (print_console_text): a guest's
 * console bytes must never drive the user's terminal. Escape sequences
 * (CSI colour, cursor moves, OSC title / clipboard writes), bare CR, C1
 * controls and invalid UTF-8 come out as visible text; printable ASCII,
 * tabs, newlines and well-formed UTF-8 come out as they are.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ttctl_print.h"

static int s_failed;

static void s_check(const char *what, const char *in, size_t len, const char *want)
{
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    if (!f) {
        perror("open_memstream");
        exit(1);
    }
    print_console_text(f, (const unsigned char *)in, len);
    fclose(f);
    if (strcmp(buf, want)) {
        fprintf(stderr, "FAIL %s:\n  got  [%s]\n  want [%s]\n", what, buf, want);
        s_failed++;
    }
    /* whatever the input, no byte below 0x20 but \n and \t, no ESC, no DEL */
    for (size_t i = 0; i < n; i++)
        if (((unsigned char)buf[i] < 0x20 && buf[i] != '\n' && buf[i] != '\t') || buf[i] == 0x7F) {
            fprintf(stderr, "FAIL %s: control byte 0x%02x in the output\n", what,
                    (unsigned char)buf[i]);
            s_failed++;
        }
    free(buf);
}

#define CHECK(what, lit, want) s_check(what, lit, sizeof lit - 1, want)

int main(void)
{
    CHECK("plain", "login: ok\n\tindented\n", "login: ok\n\tindented\n");
    CHECK("crlf", "line one\r\nline two\r\n", "line one\nline two\n");
    CHECK("csi colour", "\x1b[31mred\x1b[0m", "^[[31mred^[[0m");
    CHECK("clear screen + home", "\x1b[2J\x1b[H", "^[[2J^[[H");
    CHECK("osc title", "\x1b]0;pwned\x07", "^[]0;pwned^G");
    CHECK("osc 52 clipboard", "\x1b]52;c;cm0gLXJmIH4=\x1b\\", "^[]52;c;cm0gLXJmIH4=^[\\");
    CHECK("bare cr overwrite", "rm -rf /\rls      ", "rm -rf /^Mls      ");
    CHECK("backspace, del, nul",
          "a\bb\x7f"
          "c\0d",
          "a^Hb^?c^@d");
    CHECK("c1 csi",
          "x\xc2\x9b"
          "31my",
          "x\\xC2\\x9B31my");
    CHECK("8-bit csi",
          "x\x9b"
          "31m",
          "x\\x9B31m");
    CHECK("utf-8 kept", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80",
          "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
    CHECK("overlong", "\xc0\xaf\xe0\x80\xaf", "\\xC0\\xAF\\xE0\\x80\\xAF");
    CHECK("truncated utf-8", "ok\xe2\x82", "ok\\xE2\\x82");
    CHECK("surrogate", "\xed\xa0\x80", "\\xED\\xA0\\x80");
    /* --json: a console that is not UTF-8 still gives a JSON answer */
    {
        Ttfleet__ConsoleText c = TTFLEET__CONSOLE_TEXT__INIT;
        c.host = "h1";
        c.vm_id = 7;
        c.text.data = (uint8_t *)"ok\xff\x1b[2J";
        c.text.len = 7;
        char *buf = NULL;
        size_t n = 0;
        FILE *f = open_memstream(&buf, &n);
        int rc = f ? print_console(f, &c, true) : -1;
        if (f)
            fclose(f);
        if (rc != 0 || !buf || !strstr(buf, "\"text\": \"ok\\\\xFF^[[2J\"")) {
            fprintf(stderr, "FAIL json of a non-UTF-8 console: rc %d, [%s]\n", rc, buf ? buf : "");
            s_failed++;
        }
        free(buf);
    }
    if (s_failed) {
        fprintf(stderr, "%d failures\n", s_failed);
        return 1;
    }
    printf("ttctl_print console filter: all cases pass\n");
    return 0;
}
