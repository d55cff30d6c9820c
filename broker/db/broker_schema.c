/*
 * broker_schema: the schema of broker.db as a migration list.
 *
 * Append only: a released migration is never edited, a change is a new
 * entry. Uniqueness that protects allocations (VM id, IP, MAC, public port,
 * env name) lives here as constraints, so a bug elsewhere fails a commit
 * instead of handing out something twice.
 */
#include "broker_schema.h"

const char *const broker_migrations[] = {
    /* 1: the initial schema */
    "CREATE TABLE hosts ("
    "  id TEXT PRIMARY KEY,"
    "  cpu_total INTEGER NOT NULL,"
    "  mem_total INTEGER NOT NULL,"
    "  disk_total INTEGER NOT NULL,"
    "  engines TEXT NOT NULL DEFAULT '',"
    "  images TEXT NOT NULL DEFAULT '',"
    "  draining INTEGER NOT NULL DEFAULT 0,"
    "  last_seen INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE envs ("
    "  id INTEGER PRIMARY KEY,"
    "  tenant TEXT NOT NULL,"
    "  name TEXT NOT NULL,"
    "  state TEXT NOT NULL,"
    "  created_at INTEGER NOT NULL,"
    "  expires_at INTEGER NOT NULL,"
    "  lifetime INTEGER NOT NULL,"
    "  deny_outgoing INTEGER NOT NULL,"
    "  ports TEXT NOT NULL,"
    "  last_mgmt INTEGER NOT NULL DEFAULT 0,"
    "  UNIQUE (tenant, name));"
    "CREATE TABLE vms ("
    "  uid INTEGER PRIMARY KEY,"
    "  env_id INTEGER NOT NULL REFERENCES envs(id) ON DELETE CASCADE,"
    "  host TEXT NOT NULL REFERENCES hosts(id),"
    "  vm_id INTEGER NOT NULL CHECK (vm_id BETWEEN 2 AND 65534),"
    "  ip TEXT NOT NULL,"
    "  mac TEXT NOT NULL UNIQUE,"
    "  image TEXT NOT NULL,"
    "  engine TEXT NOT NULL,"
    "  cpu INTEGER NOT NULL,"
    "  mem INTEGER NOT NULL,"
    "  disk INTEGER NOT NULL,"
    "  state INTEGER NOT NULL,"
    "  phase TEXT NOT NULL CHECK (phase IN ('pending', 'active')),"
    "  UNIQUE (host, vm_id),"
    "  UNIQUE (host, ip));"
    "CREATE INDEX vms_env ON vms(env_id);"
    "CREATE TABLE ports ("
    "  host TEXT NOT NULL,"
    "  public_port INTEGER NOT NULL CHECK (public_port BETWEEN 40000 AND 59999),"
    "  vm_uid INTEGER NOT NULL REFERENCES vms(uid) ON DELETE CASCADE,"
    "  guest_port INTEGER NOT NULL CHECK (guest_port BETWEEN 1 AND 65535),"
    "  UNIQUE (host, public_port),"
    "  UNIQUE (vm_uid, guest_port));"
    "CREATE INDEX ports_vm ON ports(vm_uid);"
    "CREATE TABLE requests ("
    "  tenant TEXT NOT NULL,"
    "  request_id TEXT NOT NULL,"
    "  created_at INTEGER NOT NULL,"
    "  reply BLOB,"
    "  PRIMARY KEY (tenant, request_id));"
    "CREATE INDEX requests_age ON requests(created_at);"
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);",
    /* 2: admission (broker/admission/admq.c, quota.c, audit.c): the queue of creates
     * waiting for capacity with the round of each priority level, tenant
     * quotas (-1 = no limit), and the audit log */
    "CREATE TABLE admq ("
    "  seq INTEGER PRIMARY KEY,"
    "  tenant TEXT NOT NULL,"
    "  env TEXT NOT NULL,"
    "  request_id TEXT NOT NULL,"
    "  priority INTEGER NOT NULL CHECK (priority BETWEEN 0 AND 99),"
    "  round INTEGER NOT NULL CHECK (round >= 0),"
    "  enqueued_at INTEGER NOT NULL,"
    "  deadline INTEGER NOT NULL,"
    "  cpu INTEGER NOT NULL CHECK (cpu >= 0),"
    "  mem INTEGER NOT NULL CHECK (mem >= 0),"
    "  disk INTEGER NOT NULL CHECK (disk >= 0),"
    "  vms INTEGER NOT NULL CHECK (vms >= 0),"
    "  request BLOB NOT NULL,"
    "  UNIQUE (tenant, env));"
    "CREATE TABLE admq_rounds ("
    "  priority INTEGER PRIMARY KEY,"
    "  round INTEGER NOT NULL);"
    "CREATE TABLE quotas ("
    "  tenant TEXT PRIMARY KEY,"
    "  envs INTEGER NOT NULL DEFAULT -1 CHECK (envs >= -1),"
    "  vms INTEGER NOT NULL DEFAULT -1 CHECK (vms >= -1),"
    "  cpu INTEGER NOT NULL DEFAULT -1 CHECK (cpu >= -1),"
    "  mem INTEGER NOT NULL DEFAULT -1 CHECK (mem >= -1),"
    "  disk INTEGER NOT NULL DEFAULT -1 CHECK (disk >= -1),"
    "  max_lifetime INTEGER NOT NULL DEFAULT -1 CHECK (max_lifetime >= -1),"
    "  max_priority INTEGER NOT NULL DEFAULT -1 CHECK (max_priority BETWEEN -1 AND 99),"
    "  updated_at INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE audit ("
    "  id INTEGER PRIMARY KEY,"
    "  time INTEGER NOT NULL,"
    "  tenant TEXT NOT NULL,"
    "  role TEXT NOT NULL,"
    "  key_fp TEXT NOT NULL DEFAULT '',"
    "  op TEXT NOT NULL,"
    "  target TEXT NOT NULL DEFAULT '',"
    "  request_id TEXT NOT NULL DEFAULT '',"
    "  status INTEGER NOT NULL,"
    "  message TEXT NOT NULL DEFAULT '');"
    "CREATE INDEX audit_time ON audit(time);"
    "CREATE INDEX audit_tenant ON audit(tenant, time);",
    /* 3: client keys bound by the operator (broker/auth/keys.c) */
    "CREATE TABLE keys ("
    "  public TEXT PRIMARY KEY CHECK (length(public) = 40),"
    "  tenant TEXT NOT NULL,"
    "  role TEXT NOT NULL CHECK (role IN ('user', 'admin', 'gateway')),"
    "  added_at INTEGER NOT NULL,"
    "  added_by TEXT NOT NULL);",
    /* 4 (broker hardening): an admin's pin of a host's capacity (ttctl host
     * set); 0 = that part is not pinned. Its own table so the hosts row
     * (rewritten at every READY) keeps its shape. */
    "CREATE TABLE host_pins ("
    "  host TEXT PRIMARY KEY,"
    "  cpu INTEGER NOT NULL DEFAULT 0 CHECK (cpu >= 0),"
    "  mem INTEGER NOT NULL DEFAULT 0 CHECK (mem >= 0),"
    "  disk INTEGER NOT NULL DEFAULT 0 CHECK (disk >= 0));",
    /* 5: the image catalog (broker/ops/image_ops.c, issue 12): owner '' is a
     * pool image; blobs is "digest size file" per line */
    "CREATE TABLE images ("
    "  owner TEXT NOT NULL,"
    "  name TEXT NOT NULL,"
    "  tag TEXT NOT NULL,"
    "  digest TEXT NOT NULL CHECK (length(digest) = 71),"
    "  kind TEXT NOT NULL CHECK (kind IN ('qcow2', 'dir')),"
    "  size INTEGER NOT NULL CHECK (size >= 0),"
    "  blobs TEXT NOT NULL,"
    "  created_at INTEGER NOT NULL,"
    "  readiness TEXT NOT NULL DEFAULT '',"
    "  user TEXT NOT NULL DEFAULT '',"
    "  min_disk_mib INTEGER NOT NULL DEFAULT 0,"
    "  PRIMARY KEY (owner, name, tag));"
    "CREATE INDEX images_digest ON images(digest);",
    /* 6: guest bootstrap and readiness (issue 11): an env's SSH keys (one
     * a line), user-data, readiness spec and per image group specs
     * ("IMAGE\tSPEC" lines), fixed at create */
    "CREATE TABLE env_guest ("
    "  env_id INTEGER PRIMARY KEY REFERENCES envs(id) ON DELETE CASCADE,"
    "  ssh_keys TEXT NOT NULL DEFAULT '',"
    "  user_data BLOB,"
    "  ready TEXT NOT NULL DEFAULT '',"
    "  group_ready TEXT NOT NULL DEFAULT '');",
    /* 7: a VM of a catalog image (issue 12) keeps the image it was created
     * with: digest, kind and blobs ("digest size file" lines), so image rm
     * refuses by digest and a re-placed VM fetches the same bytes; all ''
     * for a host-local image */
    "ALTER TABLE vms ADD COLUMN image_digest TEXT NOT NULL DEFAULT '';"
    "ALTER TABLE vms ADD COLUMN image_kind TEXT NOT NULL DEFAULT '';"
    "ALTER TABLE vms ADD COLUMN image_blobs TEXT NOT NULL DEFAULT '';",
    /* 8: ports get a primary key (the rowid they had, now named), so the
     * SQLite session extension records their changes: broker HA replicates
     * each batch as a changeset, and a table without one is left out */
    "CREATE TABLE ports_pk ("
    "  id INTEGER PRIMARY KEY,"
    "  host TEXT NOT NULL,"
    "  public_port INTEGER NOT NULL CHECK (public_port BETWEEN 40000 AND 59999),"
    "  vm_uid INTEGER NOT NULL REFERENCES vms(uid) ON DELETE CASCADE,"
    "  guest_port INTEGER NOT NULL CHECK (guest_port BETWEEN 1 AND 65535),"
    "  UNIQUE (host, public_port),"
    "  UNIQUE (vm_uid, guest_port));"
    "INSERT INTO ports_pk (id, host, public_port, vm_uid, guest_port)"
    "  SELECT rowid, host, public_port, vm_uid, guest_port FROM ports;"
    "DROP TABLE ports;"
    "ALTER TABLE ports_pk RENAME TO ports;"
    "CREATE INDEX ports_vm ON ports(vm_uid);",
    /* 9: an env's labels ("KEY=VALUE", one a line), fixed at create */
    "ALTER TABLE envs ADD COLUMN labels TEXT NOT NULL DEFAULT '';",
    /* 10: a request record keeps the SHA-1 of the request it answers
     * (without its id and tenant), so after a restart or a failover the
     * same id with another request is still refused, not replayed */
    /* ... and an env its EnvCreate.boot (auto, snapshot, cold; '' = auto),
     * which every VmSpec of the env carries, also after a restart */
    ("ALTER TABLE requests ADD COLUMN fp BLOB;"
     "ALTER TABLE envs ADD COLUMN boot TEXT NOT NULL DEFAULT '';"),
    /* 11: broker HA: the endpoints of every member of the Raft cluster, as
     * cluster_add wrote them (replicated like every row), so members that
     * were not in a broker's --raft-* lists are named in NOT_LEADER and
     * cluster_status; the Raft configuration itself lives in the Raft log */
    "CREATE TABLE cluster_members ("
    "  id INTEGER PRIMARY KEY CHECK (id BETWEEN 1 AND 65535),"
    "  raft TEXT NOT NULL,"
    "  clients TEXT NOT NULL,"
    "  workers TEXT NOT NULL);",
    /* 12: the log of committed events (event_history, ttctl watch --since):
     * each row is written in the batch of the change that made it, so it
     * is replicated with it; body is the packed Event, whose id is the
     * row's. AUTOINCREMENT: an id is never reused, even once every row was
     * trimmed (persist.c keeps the newest BROKER_EVLOG, younger than
     * BROKER_EVLOG_AGE) */
    "CREATE TABLE events ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  time INTEGER NOT NULL,"
    "  tenant TEXT NOT NULL,"
    "  body BLOB NOT NULL);",
};
const int broker_migrations_n =
    (int)(sizeof broker_migrations / sizeof *broker_migrations);
