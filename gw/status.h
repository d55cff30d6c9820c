/*
 * status: the HTTP answer for each broker Status (schema/ttfleet.proto).
 *
 * Every value of the enum has an explicit entry; unit.gw.status walks the
 * protobuf-c enum descriptor and fails for a value without one, so a status
 * added to the schema later must be given its HTTP status here.
 */
#ifndef GW_STATUS_H
#define GW_STATUS_H

/* HTTP status for a broker Status, or 0 for a value this table does not
 * know (the caller answers 500 then). */
int gw_status_http(int status);

/* The Status's name as the schema spells it ("QUOTA_EXCEEDED"), or
 * "UNKNOWN" for a value the schema does not have. */
const char *gw_status_name(int status);

/* Seconds for a Retry-After header on an answer with this Status (0: no
 * header). message is the broker's text: for RATE_LIMITED it says "retry
 * in N ms", which is used when present. */
int gw_status_retry_after(int status, const char *message);

#endif
