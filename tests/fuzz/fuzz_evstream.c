/*
 * libFuzzer target: hostile messages on the private events socket.
 *
 * The input is cut into frames (fuzz_frames.h) and handed to
 * evstream_handle as if the ROUTER had read it: routing id first, then
 * TTE01 frames. A real ROUTER (bound to nothing, so replies to unknown
 * routing ids fail fast under ROUTER_MANDATORY) backs the stream; after each
 * input one event is published and flushed and the stream ticked, so the
 * subscriber table built from hostile SUBSCRIBEs is exercised too.
 */
#define _GNU_SOURCE /* nftw() in fuzz_frames.h */
#include <czmq.h>

#include "evstream.h"
#include "fuzz_frames.h"
#include "ttproto.h"

static zsock_t *s_router;
static evstream_t *s_es;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!s_es) {
        zsys_init();
        zsys_set_logstream(NULL);
        s_router = zsock_new(ZMQ_ROUTER);
        evstream_config_t cfg;
        evstream_config_defaults(&cfg);
        cfg.max_subscribers = 64;
        s_es = evstream_new(s_router, &cfg);
    }
    zmsg_t *msg = fuzz_frames(data, size);
    evstream_handle(s_es, &msg, 1000);
    Ttfleet__Event ev = TTFLEET__EVENT__INIT;
    ev.kind = "env.created";
    ev.tenant = "a";
    uint8_t buf[64];
    size_t len = ttfleet__event__pack(&ev, buf);
    evstream_publish(s_es, "a", "web", "env.created", buf, len);
    evstream_flush(s_es, 1000);
    evstream_tick(s_es, 1000 + (size & 1 ? 20000 : 0));
    return 0;
}
