/* Unit tests of ttctl's output for the admission replies: tables name what
 * they show ("-" for no limit, used/limit, the blocked head marked), and the
 * JSON parses back with the same values. */
#include "test_util.h" /* first: it sets _GNU_SOURCE */

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ttctl_print.h"
#include "ttproto.h"

/* Run print into a memory buffer; returns it (caller frees). */
#define CAPTURE(buf, call)                                                                         \
    do {                                                                                           \
        size_t len_ = 0;                                                                           \
        FILE *out = open_memstream(&(buf), &len_);                                                 \
        call;                                                                                      \
        fclose(out);                                                                               \
    } while (0)

int main(void)
{
    char *text = NULL;
    /* quotas */
    Ttfleet__QuotaUsage used = TTFLEET__QUOTA_USAGE__INIT;
    used.envs = 1;
    used.cpu = 6;
    Ttfleet__QuotaInfo q = TTFLEET__QUOTA_INFO__INIT;
    q.tenant = "ci";
    q.envs = 2;
    q.vms = -1;
    q.cpu = 8;
    q.mem_mib = -1;
    q.disk_mib = -1;
    q.max_lifetime = 7200;
    q.max_priority = -1;
    q.used = &used;
    Ttfleet__QuotaInfo *qs[] = {&q};
    Ttfleet__QuotaInfoList ql = TTFLEET__QUOTA_INFO_LIST__INIT;
    ql.quotas = qs;
    ql.n_quotas = 1;
    CAPTURE(text, print_quota_list(out, &ql, false));
    CHECK(strstr(text, "TENANT") && strstr(text, "ci") && strstr(text, "1/2") &&
          strstr(text, "6/8") && strstr(text, "0/-") && strstr(text, "7200"));
    free(text);
    CAPTURE(text, print_quota_list(out, &ql, true));
    json_error_t jerr;
    json_t *j = json_loads(text, 0, &jerr);
    CHECK(j != NULL);
    json_t *first = json_array_get(json_object_get(j, "quotas"), 0);
    CHECK(json_integer_value(json_object_get(first, "cpu")) == 8);
    CHECK(json_integer_value(json_object_get(first, "vms")) == -1);
    CHECK(json_integer_value(json_object_get(json_object_get(first, "used"), "cpu")) == 6);
    json_decref(j);
    free(text);

    /* queue */
    Ttfleet__QueueEntry e1 = TTFLEET__QUEUE_ENTRY__INIT, e2 = TTFLEET__QUEUE_ENTRY__INIT;
    e1.position = 1;
    e1.tenant = "a";
    e1.env = "big";
    e1.request_id = "r1";
    e1.cpu = 16;
    e1.vms = 8;
    e1.blocked_head = true;
    e2.position = 2;
    e2.tenant = "b";
    e2.env = "small";
    e2.request_id = "r2";
    e2.priority = 3;
    Ttfleet__QueueEntry *es[] = {&e1, &e2};
    Ttfleet__QueueEntryList el = TTFLEET__QUEUE_ENTRY_LIST__INIT;
    el.entries = es;
    el.n_entries = 2;
    el.total = 7;
    CAPTURE(text, print_queue(out, &el, false));
    CHECK(strstr(text, "1*") && strstr(text, "big") && strstr(text, "small") &&
          strstr(text, "7 queued in all"));
    free(text);
    CAPTURE(text, print_queue(out, &el, true));
    j = json_loads(text, 0, &jerr);
    CHECK(j && json_integer_value(json_object_get(j, "total")) == 7);
    CHECK(json_is_true(
        json_object_get(json_array_get(json_object_get(j, "entries"), 0), "blocked_head")));
    json_decref(j);
    free(text);
    el.n_entries = 0;
    CAPTURE(text, print_queue(out, &el, false));
    CHECK(strstr(text, "queue empty"));
    free(text);

    /* audit */
    Ttfleet__AuditRecord r = TTFLEET__AUDIT_RECORD__INIT;
    r.id = 5;
    r.time = 1700000000;
    r.tenant = "ci";
    r.role = "user";
    r.key = "";
    r.op = "env.create";
    r.target = "web";
    r.request_id = "r9";
    r.status = TTFLEET__STATUS__QUOTA_EXCEEDED;
    r.message = "quota exceeded for tenant ci: cpu used 6 + wanted 4 > limit 8";
    Ttfleet__AuditRecord *rs[] = {&r};
    Ttfleet__AuditRecordList rl = TTFLEET__AUDIT_RECORD_LIST__INIT;
    rl.records = rs;
    rl.n_records = 1;
    CAPTURE(text, print_audit(out, &rl, false));
    CHECK(strstr(text, "2023-11-14T22:13:20Z") && strstr(text, "QUOTA_EXCEEDED") &&
          strstr(text, "env.create") && strstr(text, "limit 8"));
    free(text);
    CAPTURE(text, print_audit(out, &rl, true));
    j = json_loads(text, 0, &jerr);
    first = json_array_get(json_object_get(j, "audit"), 0);
    CHECK(j && strcmp(json_string_value(json_object_get(first, "status")), "QUOTA_EXCEEDED") == 0);
    json_decref(j);
    free(text);

    /* env show of a queued env names its position */
    Ttfleet__EnvInfo env = TTFLEET__ENV_INFO__INIT;
    env.name = "ci1";
    env.tenant = "ci";
    env.state = "queued";
    env.queue_position = 3;
    env.priority = 2;
    env.queue_deadline = 1700000600;
    CAPTURE(text, print_env(out, &env, false));
    CHECK(strstr(text, "queued    position 3, priority 2"));
    free(text);
    CAPTURE(text, print_env(out, &env, true));
    j = json_loads(text, 0, &jerr);
    CHECK(j && json_integer_value(json_object_get(j, "queue_position")) == 3);
    json_decref(j);
    free(text);

    /* exec: text output as strings, bytes that are not UTF-8 as base64 */
    const uint8_t bin[] = {0xff, 0x00, 0xfe};
    CAPTURE(text, print_exec_json(out, 2, "OK", "", "h1", 7, 0, (const uint8_t *)"hi\n", 3, true,
                                  bin, sizeof bin, false));
    j = json_loads(text, 0, &jerr);
    CHECK(j && json_integer_value(json_object_get(j, "exit_code")) == 7);
    CHECK(j && json_integer_value(json_object_get(j, "vm_id")) == 2);
    CHECK(j && strcmp(json_string_value(json_object_get(j, "stdout")), "hi\n") == 0);
    CHECK(j && json_is_true(json_object_get(j, "stdout_truncated")));
    CHECK(j && !json_object_get(j, "stderr") &&
          strcmp(json_string_value(json_object_get(j, "stderr_base64")), "/wD+") == 0);
    json_decref(j);
    free(text);
    /* exec --all: the outcomes of every VM in one {"results": [...]} */
    print_exec_list(true);
    CAPTURE(text, print_exec_json(out, 1, "OK", "", "h1", 0, 0, NULL, 0, false, NULL, 0, false);
            print_exec_json(out, 2, "GUEST_FAILED", "no agent", "h2", 0, 0, NULL, 0, false, NULL,
                            0, false);
            print_exec_list_print(out));
    j = json_loads(text, 0, &jerr);
    CHECK(j && json_array_size(json_object_get(j, "results")) == 2);
    CHECK(j && json_integer_value(json_object_get(
                   json_array_get(json_object_get(j, "results"), 1), "vm_id")) == 2);
    json_decref(j);
    free(text);
    /* -o yaml: the same tree through libyaml; texts a reader would take for
     * a number, a time or a boolean are quoted */
    print_set_format(true, false);
    CAPTURE(text, print_exec_json(out, 3, "OK", "2026-12-07T14:21:41Z", "true", 0, 0,
                                  (const uint8_t *)"007", 3, false, NULL, 0, false));
    print_set_format(false, false);
    CHECK(strncmp(text, "---", 3) == 0);
    CHECK(strstr(text, "\nvm_id: 3\n") && strstr(text, "\nstatus: OK\n"));
    CHECK(strstr(text, "\nmessage: '2026-12-07T14:21:41Z'\n"));
    CHECK(strstr(text, "\nhost: 'true'\n") && strstr(text, "\nstdout: '007'\n"));
    CHECK(strstr(text, "\nstdout_truncated: false\n"));
    free(text);
    /* a guest's output "=" or "<<" (YAML 1.1's value and merge), which a
     * reader such as PyYAML refuses written plain */
    print_set_format(true, false);
    CAPTURE(text, print_exec_json(out, 3, "OK", "<<", "h1", 0, 0, (const uint8_t *)"=", 1,
                                  false, NULL, 0, false));
    print_set_format(false, false);
    CHECK(strstr(text, "\nmessage: '<<'\n") && strstr(text, "\nstdout: '='\n"));
    free(text);
    uint8_t sha[32] = {0xab};
    CAPTURE(text, print_copy_json(out, "put", "/tmp/x", "x", 5, sha));
    j = json_loads(text, 0, &jerr);
    CHECK(j && json_integer_value(json_object_get(j, "bytes")) == 5);
    CHECK(j && strncmp(json_string_value(json_object_get(j, "sha256")), "ab00", 4) == 0);
    json_decref(j);
    free(text);

    return s_report("ttctl_print");
}
