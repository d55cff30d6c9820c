/*
 * adm_ops: the handlers of the admission requests: quota set (admin) and
 * show (a tenant its own; admin any or all), queue list (own; admin all),
 * audit query (a user's tenant filter is forced to its own; admin all).
 * See handler.h for the contract. Depends on the model, reply, persist,
 * usage and the admission modules.
 */
#ifndef TT_BROKER_ADM_OPS_H
#define TT_BROKER_ADM_OPS_H

#include "handler.h"

handler_fn adm_quota_set, adm_quota_show, adm_queue_list, adm_audit_query;
/* event_history: the events of the broker's log (outq.c) the caller may
 * see, since EventQuery.since, oldest first, at most S_EVENTS_MAX. */
handler_fn event_history;

#endif
