/*
 * replace: re-placement of VMs on other hosts. See replace.h.
 */
#include "replace.h"
#include "outq.h"
#include "persist.h"
#include "scheduler.h"
#include "wcmd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What a VM of env needs of its new host's engine besides its image: the
 * bootstrap when the env hands its guests SSH keys or user-data. */
static uint32_t s_needs(const env_t *env)
{
    return env && (env->n_ssh_keys || env->user_data_len) ? TT_CAP_BOOTSTRAP : 0;
}

/* A create some of whose VMs a worker refused or lost: place those VMs on
 * other hosts and try again, a few rounds at most. The refused copies are
 * destroyed (fire and forget; READY reconciliation catches a lost one).
 * Returns true when a new round was dispatched. */
bool replace_create_round(broker_t *self, op_t *op)
{
    env_t *env = op->env;
    if (op->kind != OP_CREATE || op->rounds >= 3 || op->status == TTFLEET__STATUS__INTERNAL)
        return false;
    /* A worker that could not bind a public port (another program holds
     * it) can run the VM on other ports: its host stays eligible, and the
     * move below hands out new ports (the port cursor has moved on). */
    bool port_in_use = strstr(op->message, "is in use on this host") != NULL;
    int n_bad = 0;
    for (int i = 0; i < env->n_vms; i++) {
        vm_t *vm = env->vms[i];
        if (vm->state == TTFLEET__VM_STATE__VM_RUNNING)
            continue;
        n_bad++;
        if (port_in_use)
            continue;
        bool known = false;
        for (int k = 0; k < op->n_refused; k++)
            known |= op->refused[k] == vm->host;
        if (!known && op->n_refused < 8)
            op->refused[op->n_refused++] = vm->host;
    }
    if (n_bad == 0)
        return false;
    /* first check every failed VM can go somewhere, so a round that cannot
     * succeed changes nothing */
    int moved = 0;
    char why[256] = "";
    for (int i = 0; i < env->n_vms; i++) {
        vm_t *vm = env->vms[i];
        if (vm->state == TTFLEET__VM_STATE__VM_RUNNING)
            continue;
        sched_want_t want = {
            vm->engine,      vm->image,     vm->cpu,
            vm->mem,         vm->disk,      self->cfg.spread,
            op->refused,     op->n_refused, vm->image_digest[0] ? vm->image_blobs : NULL,
            s_needs(vm->env), vm->env->boot};
        int status;
        host_t *to = sched_place(self, &want, &status, why, sizeof why);
        uint32_t vm_id;
        uint64_t mac;
        if (!to || alloc_vm_id_in_env(to, env, vm, &vm_id) || alloc_mac(self, &mac))
            break;
        vm_t *copy = vm;
        int desired = TTFLEET__VM_STATE__VM_ABSENT;
        if (vm->host->routing && vm->host->state != HOST_DOWN)
            wcmd_send(self, vm->host, &copy, &desired, 1);
        if (model_vm_move(self, vm, to, vm_id, mac, env->gports, env->n_gports))
            break;
        model_vm_set_state(vm, TTFLEET__VM_STATE__VM_PENDING);
        persist_vm_update(self, vm);
        persist_vm_ports(self, vm);
        op->vms[moved++] = vm;
    }
    if (moved != n_bad)
        return false; /* the caller fails the create; everything is undone */
    zsys_info("env %s/%s: %d VM(s) re-placed after: %s", env->tenant, env->name, moved,
              op->message);
    op->rounds++;
    op->n_vms = moved;
    op->n_hosts = 0;
    op->status = TTFLEET__STATUS__OK;
    op->message[0] = 0;
    op->deadline_ms = tt_mono_ms() + self->cfg.worker_timeout_ms;
    return true;
}

/* Re-create every VM of `from` on other hosts with the same spec. The old
 * VM is destroyed (or, if its host is gone, destroyed when it comes back);
 * the new one gets a new VM id, IP, MAC and public ports, announced as an
 * event. Envs with an op in flight are left alone and reported. */
void replace_evacuate(broker_t *self, host_t *from, char *msg, size_t len)
{
    int moved = 0, failed = 0, busy = 0;
    char why[256] = "";
    zlistx_t *envs = model_host_envs(from);
    for (env_t *e = zlistx_first(envs); e; e = zlistx_next(envs)) {
        if (e->busy || e->target == TARGET_CREATING) {
            busy++;
            continue;
        }
        for (int i = 0; i < e->n_vms; i++) {
            vm_t *old = e->vms[i];
            if (old->host != from || old->doomed)
                continue;
            sched_want_t want = {old->engine,
                                 old->image,
                                 old->cpu,
                                 old->mem,
                                 old->disk,
                                 self->cfg.spread,
                                 NULL,
                                 0,
                                 old->image_digest[0] ? old->image_blobs : NULL,
                                 s_needs(old->env),
                                 old->env->boot};
            int status;
            host_t *to = sched_place(self, &want, &status, why, sizeof why);
            uint32_t vm_id;
            uint64_t mac;
            if (!to || alloc_vm_id_in_env(to, e, NULL, &vm_id) || alloc_mac(self, &mac)) {
                failed++;
                continue;
            }
            vm_t *nvm = model_vm_add(self, e, to, vm_id, mac);
            if (!nvm) {
                failed++;
                continue;
            }
            nvm->uid = self->next_vm_uid++;
            snprintf(nvm->image, sizeof nvm->image, "%s", old->image);
            model_vm_set_image(nvm, old);
            snprintf(nvm->engine, sizeof nvm->engine, "%s", old->engine);
            model_vm_set_hw(nvm, old->cpu, old->mem, old->disk);
            model_vm_set_state(nvm, e->target == TARGET_STOPPED ? TTFLEET__VM_STATE__VM_STOPPED
                                                                : TTFLEET__VM_STATE__VM_PENDING);
            if (alloc_vm_ports(nvm, e->gports, e->n_gports)) {
                model_vm_remove(self, nvm);
                snprintf(why, sizeof why, "no free public port on host %s", to->id);
                failed++;
                continue;
            }
            nvm->active = true;
            persist_vm_insert(self, nvm);
            old->doomed = true;
            wcmd_send_specs(self, &old, 1);
            persist_vm_delete(self, old);
            model_vm_remove(self, old);
            i--; /* the array shifted */
            wcmd_send_specs(self, &nvm, 1);
            char note[160];
            snprintf(note, sizeof note, "moved from host %s: ip %s, mac %s", from->id, nvm->ip,
                     nvm->mac);
            outq_event(self, "vm.moved", e, nvm, to, tt_vm_state_name(nvm->state), note);
            moved++;
        }
        outq_event(self, "env.state", e, NULL, NULL, model_env_state(e), "evacuated");
    }
    zlistx_destroy(&envs);
    snprintf(msg, len,
             "host %s is draining; %d VM(s) moved, %d could not be placed%s%s%s, %d "
             "env(s) busy (try again)",
             from->id, moved, failed, failed ? " (" : "", failed ? why : "", failed ? ")" : "",
             busy);
}
