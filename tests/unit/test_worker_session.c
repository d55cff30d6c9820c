/*
 * The ttworker binary on the wire: a fake broker (ROUTER) checks READY,
 * survives garbage frames sent to the worker, gets a REPLY to a real
 * COMMAND (hollow engine), sees heartbeats, makes it reconnect with
 * DISCONNECT, and finally stops it with SIGTERM and gets its DISCONNECT.
 * argv[1] is the path of ttworker.
 */
#include "test_util.h"

#include <czmq.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ttproto.h"

static pid_t s_worker;

static void s_kill_worker(void)
{
    if (s_worker > 0) {
        kill(s_worker, SIGKILL);
        waitpid(s_worker, NULL, 0);
    }
}

/* Receive from the worker, skipping heartbeats unless asked for; returns
 * the command byte and the message (routing id first), or -1 on timeout. */
static int s_recv(zsock_t *router, zmsg_t **msg_p, bool want_hb, int timeout_ms)
{
    int64_t deadline = zclock_mono() + timeout_ms;
    zpoller_t *p = zpoller_new(router, NULL);
    int cmd = -1;
    while (zclock_mono() < deadline) {
        if (!zpoller_wait(p, (int)(deadline - zclock_mono())))
            break;
        zmsg_t *m = zmsg_recv(router);
        if (!m || zmsg_size(m) < 4) {
            zmsg_destroy(&m);
            continue;
        }
        zframe_t *f = zmsg_first(m);
        f = zmsg_next(m);
        f = zmsg_next(m);
        CHECK(zframe_streq(f, TT_WORKER_PROTO));
        f = zmsg_next(m);
        int c = zframe_size(f) == 1 ? zframe_data(f)[0] : -1;
        if (c == TT_W_HEARTBEAT && !want_hb) {
            zmsg_destroy(&m);
            continue;
        }
        cmd = c;
        *msg_p = m;
        break;
    }
    zpoller_destroy(&p);
    return cmd;
}

/* Send [id][empty][TTW01][cmd][body] with raw bytes. */
static void s_send(zsock_t *router, zframe_t *id, const char *proto, const void *cmd, size_t cmdlen,
                   const void *body, size_t bodylen)
{
    zmsg_t *m = zmsg_new();
    zmsg_append(m, &(zframe_t *){zframe_dup(id)});
    zmsg_addmem(m, NULL, 0);
    zmsg_addstr(m, proto);
    zmsg_addmem(m, cmd, cmdlen);
    if (body)
        zmsg_addmem(m, body, bodylen);
    zmsg_send(&m, router);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: test_worker_session PATH-TO-TTWORKER\n");
        return 1;
    }
    const char *dir = s_tmpdir_make("session");
    atexit(s_kill_worker);
    char state[512], images[512];
    snprintf(state, sizeof state, "%s/state", dir);
    snprintf(images, sizeof images, "%s/images", dir);
    mkdir(images, 0755);
    char img[600];
    snprintf(img, sizeof img, "%s/hollow-img", images);
    FILE *f = fopen(img, "w");
    if (f)
        fclose(f);

    zsock_t *router = zsock_new(ZMQ_ROUTER);
    int port = zsock_bind(router, "tcp://127.0.0.1:*");
    CHECK(port > 0);
    char ep[64];
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", port);
    s_worker = fork();
    if (s_worker == 0) {
        execl(argv[1], argv[1], "--state", state, "--broker", ep, "--host-id", "sess-h1",
              "--images", images, "--engines", "hollow", "--heartbeat-ms", "100", "--cpu", "4",
              "--mem", "4096", "--disk", "10000", (char *)NULL);
        _exit(127);
    }

    zmsg_t *m = NULL;
    CHECK(s_recv(router, &m, false, 5000) == TT_W_READY);
    zframe_t *id = m ? zframe_dup(zmsg_first(m)) : zframe_new("x", 1);
    if (m) {
        zframe_t *body = zmsg_last(m);
        Ttfleet__WorkerHello *h =
            ttfleet__worker_hello__unpack(NULL, zframe_size(body), zframe_data(body));
        CHECK(h && strcmp(h->host_id, "sess-h1") == 0 && h->cpu_total == 4 && h->n_images == 1 &&
              strcmp(h->images[0], "hollow-img") == 0);
        ttfleet__worker_hello__free_unpacked(h, NULL);
        zmsg_destroy(&m);
    }

    /* Garbage: wrong header, unknown command, two-byte command, a COMMAND
     * that does not decode, a HEARTBEAT with a body. None may kill it. */
    byte c_cmd = TT_W_COMMAND, c_hb = TT_W_HEARTBEAT, c_bad = 0x99;
    s_send(router, id, "MDPW01", &c_hb, 1, NULL, 0);
    s_send(router, id, TT_WORKER_PROTO, &c_bad, 1, NULL, 0);
    s_send(router, id, TT_WORKER_PROTO, "\x02\x02", 2, "x", 1);
    s_send(router, id, TT_WORKER_PROTO, &c_cmd, 1, "\xff\xff\xff\xff", 4);
    s_send(router, id, TT_WORKER_PROTO, &c_hb, 1, "body", 4);

    /* A real command. */
    Ttfleet__VmSpec spec = TTFLEET__VM_SPEC__INIT;
    spec.vm_id = 9;
    spec.env = "t/e";
    spec.image = "hollow-img";
    spec.engine = "hollow";
    spec.cpu = 1;
    spec.mem_mib = 512;
    spec.disk_mib = 100;
    spec.ip = "10.10.0.9";
    spec.mac = "52:54:00:00:00:09";
    spec.expires_at = tt_now() + 600;
    spec.desired = TTFLEET__VM_STATE__VM_RUNNING;
    Ttfleet__VmSpec *specs[1] = {&spec};
    Ttfleet__WorkerCommand wc = TTFLEET__WORKER_COMMAND__INIT;
    wc.op_id = 4242;
    wc.n_vms = 1;
    wc.vms = specs;
    uint8_t buf[512];
    size_t len = ttfleet__worker_command__pack(&wc, buf);
    s_send(router, id, TT_WORKER_PROTO, &c_cmd, 1, buf, len);
    CHECK(s_recv(router, &m, false, 5000) == TT_W_REPLY);
    if (m) {
        zframe_t *body = zmsg_last(m);
        Ttfleet__WorkerReply *r =
            ttfleet__worker_reply__unpack(NULL, zframe_size(body), zframe_data(body));
        CHECK(r && r->op_id == 4242 && r->status == TTFLEET__STATUS__OK && r->n_vms == 1 &&
              r->vms[0]->state == TTFLEET__VM_STATE__VM_RUNNING);
        ttfleet__worker_reply__free_unpacked(r, NULL);
        zmsg_destroy(&m);
    }

    /* Heartbeats flow. */
    CHECK(s_recv(router, &m, true, 2000) == TT_W_HEARTBEAT);
    zmsg_destroy(&m);

    /* DISCONNECT: it reconnects and says READY again, with the VM. */
    s_send(router, id, TT_WORKER_PROTO, &(byte){TT_W_DISCONNECT}, 1, NULL, 0);
    CHECK(s_recv(router, &m, false, 5000) == TT_W_READY);
    if (m) {
        zframe_t *body = zmsg_last(m);
        Ttfleet__WorkerHello *h =
            ttfleet__worker_hello__unpack(NULL, zframe_size(body), zframe_data(body));
        CHECK(h && h->n_inventory == 1 && h->inventory[0]->vm_id == 9);
        ttfleet__worker_hello__free_unpacked(h, NULL);
        zframe_destroy(&id);
        id = zframe_dup(zmsg_first(m));
        zmsg_destroy(&m);
    }

    /* Silence from the broker: it gives up on the connection after
     * liveness x heartbeat (5 x 100 ms) and says READY again. */
    int64_t t0 = zclock_mono();
    CHECK(s_recv(router, &m, false, 3000) == TT_W_READY);
    CHECK(zclock_mono() - t0 >= 300);
    zmsg_destroy(&m);

    /* SIGTERM: DISCONNECT, clean exit. */
    kill(s_worker, SIGTERM);
    CHECK(s_recv(router, &m, false, 3000) == TT_W_DISCONNECT);
    zmsg_destroy(&m);
    int status = -1;
    for (int i = 0; i < 300 && waitpid(s_worker, &status, WNOHANG) == 0; i++)
        usleep(10000);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    s_worker = 0;
    zframe_destroy(&id);
    zsock_destroy(&router);
    return s_report("unit.worker.session");
}
