/*
 * status: see status.h.
 */
#include "status.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ttfleet.pb-c.h"

int gw_status_http(int status)
{
    switch (status) {
    case TTFLEET__STATUS__OK:
        return 200;
    case TTFLEET__STATUS__BAD_REQUEST:
        return 422;
    case TTFLEET__STATUS__NOT_FOUND:
        return 404;
    case TTFLEET__STATUS__ALREADY_EXISTS:
        return 409;
    case TTFLEET__STATUS__NO_CAPACITY:
        return 503;
    case TTFLEET__STATUS__TOO_SOON:
        return 429;
    case TTFLEET__STATUS__INVALID_STATE:
        return 409;
    case TTFLEET__STATUS__FORBIDDEN:
        return 403;
    case TTFLEET__STATUS__IN_PROGRESS:
        return 409;
    case TTFLEET__STATUS__WORKER_FAILED:
        return 502;
    case TTFLEET__STATUS__TIMEOUT:
        return 504;
    case TTFLEET__STATUS__INTERNAL:
        return 500;
    /* the gateway names only tt.env and tt.admin: the broker not knowing
     * one is the gateway's fault */
    case TTFLEET__STATUS__UNKNOWN_SERVICE:
        return 500;
    case TTFLEET__STATUS__UNAVAILABLE:
        return 503;
    /* a broker cluster's follower: ttgw talks to one broker; until it
     * follows the leader itself, the caller retries later */
    case TTFLEET__STATUS__NOT_LEADER:
        return 503;
    case TTFLEET__STATUS__TOO_LARGE:
        return 413;
    /* admission: a quota does not free itself by waiting, so 403 (not 429);
     * a queued create is accepted, to be admitted later */
    case TTFLEET__STATUS__QUOTA_EXCEEDED:
        return 403;
    case TTFLEET__STATUS__QUEUED:
        return 202;
    case TTFLEET__STATUS__QUEUE_FULL:
        return 503;
    case TTFLEET__STATUS__QUEUE_EXPIRED:
        return 503;
    case TTFLEET__STATUS__QUEUE_CANCELLED:
        return 409;
    /* guest: the agent not answering is an upstream that is down (retry);
     * an operation the guest ran and failed is a bad upstream answer */
    case TTFLEET__STATUS__GUEST_UNREACHABLE:
        return 503;
    case TTFLEET__STATUS__GUEST_FAILED:
        return 502;
    case TTFLEET__STATUS__CHECKSUM_MISMATCH:
        return 422;
    /* images */
    case TTFLEET__STATUS__IMAGE_IN_USE:
        return 409;
    case TTFLEET__STATUS__DIGEST_MISMATCH:
        return 422;
    case TTFLEET__STATUS__INCOMPLETE:
        return 409;
    /* the broker did not accept the gateway's CURVE key */
    case TTFLEET__STATUS__UNAUTHENTICATED:
        return 401;
    case TTFLEET__STATUS__RATE_LIMITED:
        return 429;
    }
    return 0;
}

const char *gw_status_name(int status)
{
    const ProtobufCEnumValue *v =
        protobuf_c_enum_descriptor_get_value(&ttfleet__status__descriptor, status);
    return v ? v->name : "UNKNOWN";
}

int gw_status_retry_after(int status, const char *message)
{
    switch (status) {
    case TTFLEET__STATUS__RATE_LIMITED: {
        const char *p = message ? strstr(message, "retry in ") : NULL;
        char *end = NULL;
        long long ms = p ? strtoll(p + 9, &end, 10) : -1;
        if (!p || end == p + 9 || ms < 0 || ms > 24LL * 3600 * 1000 || strncmp(end, " ms", 3) != 0)
            return 1;
        return ms <= 1000 ? 1 : (int)((ms + 999) / 1000);
    }
    case TTFLEET__STATUS__TOO_SOON:
    case TTFLEET__STATUS__NO_CAPACITY:
    case TTFLEET__STATUS__UNAVAILABLE:
    case TTFLEET__STATUS__NOT_LEADER:
    case TTFLEET__STATUS__QUEUE_FULL:
    case TTFLEET__STATUS__GUEST_UNREACHABLE:
    case TTFLEET__STATUS__IN_PROGRESS:
        return 1;
    default:
        return 0;
    }
}
