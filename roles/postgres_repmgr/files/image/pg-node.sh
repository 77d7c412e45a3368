#!/bin/bash
# One PostgreSQL node of the repmgr cluster, run as postgres. At every start it decides from
# its data and its peers whether it bootstraps the cluster, clones, rejoins the current primary
# (rewinding or re-cloning diverged data) or carries on as primary; then it supervises
# PostgreSQL and repmgrd, and leaves (so that Swarm restarts it through the same decision)
# when it finds itself a stale primary or a standby that does not stream from the primary.
#
# Rules it keeps:
#   - never a second primary: a former primary waits out repmgrd's failover window before it
#     decides, and stops taking writes at once when it sees a primary on a newer timeline;
#   - with no primary anywhere, only the most advanced member (timeline, then WAL position)
#     among a majority of members becomes primary; the others wait for it as hot standbys
#     that follow nobody, so that every member's position can be read;
#   - never a crash loop on its own data: a standby that cannot stream is rewound, and
#     re-cloned when rewinding fails (the old data is kept aside, one copy);
#   - never discard the only copy: data is re-cloned only from a primary that answers and
#     runs the same database system; a rewind or clone cut short is not trusted again.
#
# Environment (set by the postgres_repmgr role):
#   PG_NODE_NAME        this node's service name, e.g. pg-1 (also its DNS name)
#   PG_NODE_ID          repmgr node id (1..n)
#   PG_NODES            space-separated service names of all nodes
#   PG_INITIAL_PRIMARY  the node that bootstraps an empty cluster
#   PG_APP_DATABASE / PG_APP_USER   pretix's database and its owner
#   PG_SYNC_STANDBYS    commits wait for this many standbys (ANY n quorum); 0 = asynchronous
#   PG_SYNC_FALLBACK_SECS  0 = commits wait while no standby streams (durability); n > 0 =
#                       after n seconds without a streaming standby the primary commits alone
#   PG_KEEP_DIVERGED    1 = keep the last discarded data directory aside, 0 = delete it
#   PG_RECLONE_REQUEST  operator's token: a new value re-clones this member once
#   PGBACKREST_STANZA   pgBackRest stanza; set = WAL archiving into the repository mounted at
#                       /var/lib/pgbackrest (from whichever member is primary), empty = none
#   PG_ARCHIVE_TIMEOUT  seconds after which a primary archives a partly filled WAL segment
#                       (bounds what a loss of every member loses)
#
# A data directory restored by pgBackRest (restore.yml) carries recovery.signal: the member
# replays the archive up to the restore target, promotes itself onto a new timeline and is the
# primary the other members (emptied by restore.yml) are cloned from.
set -euo pipefail

: "${PG_NODE_ID:?}" "${PG_INITIAL_PRIMARY:?}"
: "${PG_APP_DATABASE:=pretix}" "${PG_APP_USER:=pretix}"
: "${PG_SYNC_STANDBYS:=1}" "${PG_SYNC_FALLBACK_SECS:=0}" "${PG_KEEP_DIVERGED:=1}"
: "${PGBACKREST_STANZA:=}" "${PG_ARCHIVE_TIMEOUT:=60}"
# shellcheck source=pg-common.sh
. /usr/local/bin/pg-common.sh
SECRETS_DIR=${PG_SECRETS_DIR:-/run/secrets}
CONF=/etc/boxoffice/repmgr.conf
RUNTIME_CONF=/etc/boxoffice/runtime.conf
LOG_FIFO=/run/postgresql/log.fifo
DIVERGED=$(dirname "$PGDATA")/pgdata.diverged
# The last operator re-clone request (PG_RECLONE_REQUEST, a token) this member carried out.
RECLONE_DONE=$(dirname "$PGDATA")/reclone.done
# Present while pg_rewind or a clone rewrites the data directory: one cut short leaves data
# that may start but cannot be trusted.
REBUILDING=$(dirname "$PGDATA")/rebuild.in-progress

# repmgrd gives a lost primary up after monitor_interval + reconnect_attempts * interval
# (2 + 3 * 2 s) and then elects and promotes; a former primary holds off for twice that.
MONITOR_INTERVAL=2 RECONNECT_ATTEMPTS=3 RECONNECT_INTERVAL=2
FAILOVER_HOLDOFF=$(( 2 * (MONITOR_INTERVAL + RECONNECT_ATTEMPTS * RECONNECT_INTERVAL) + 4 ))
# A standby must stream within this long after it starts, or after its upstream is lost.
STREAM_GRACE=${PG_STREAM_GRACE_SECS:-45}
# With no primary, members wait this long for every member to answer before a majority may
# elect: after a full restart the former primary answers only after its hold-off.
ELECTION_WAIT_FOR_ALL=$(( FAILOVER_HOLDOFF + 15 ))
MEMBER_COUNT=$(wc -w <<<"$PG_NODES")
MAJORITY=$(( MEMBER_COUNT / 2 + 1 ))

# Every start of PostgreSQL (by this script or by repmgr during follow) logs into one FIFO
# drained to the container's stdout; repmgr reads its commands' output through pipes that
# close, so the postmaster must not inherit them as its log.
rm -f "$LOG_FIFO"; mkfifo -m 0600 "$LOG_FIFO"
cat <>"$LOG_FIFO" &

PG_CTL="pg_ctl -D $PGDATA -w -t 300"
cat >"$CONF" <<CONF
node_id=$PG_NODE_ID
node_name='$PG_NODE_NAME'
conninfo='host=$PG_NODE_NAME port=5432 user=repmgr dbname=repmgr connect_timeout=2'
data_directory='$PGDATA'
pg_bindir='/usr/lib/postgresql/15/bin'
# No slots: a slot of a lost standby would keep WAL until the primary's disk is full. A
# standby that falls behind wal_keep_size is re-cloned instead.
use_replication_slots=no
log_level=INFO
log_status_interval=60
failover=automatic
promote_command='repmgr standby promote -f $CONF'
follow_command='repmgr standby follow -f $CONF --upstream-node-id=%n'
# Refuses to promote a node that is behind a reachable peer's timeline.
failover_validation_command='/usr/local/bin/pg-promotion-check.sh'
# A stopped dnsrr task's name stops resolving; repmgrd treats that as an unreachable node.
monitor_interval_secs=$MONITOR_INTERVAL
reconnect_attempts=$RECONNECT_ATTEMPTS
reconnect_interval=$RECONNECT_INTERVAL
# A standby that still sees the primary vetoes the promotion (protects against a partition).
primary_visibility_consensus=true
standby_disconnect_on_failover=true
service_start_command='$PG_CTL -l $LOG_FIFO start'
service_stop_command='$PG_CTL -m fast stop'
service_restart_command='$PG_CTL -m fast -l $LOG_FIFO restart'
service_reload_command='pg_ctl -D $PGDATA reload'
CONF

# ANY n over every node's name: a primary never streams to itself, so listing it is harmless
# and the same setting serves whichever node is primary.
sync_names() {
  local names
  names=$(printf '"%s", ' $PG_NODES)
  echo "ANY $PG_SYNC_STANDBYS (${names%, })"
}

# archive_mode=on archives on the primary only; a promoted standby carries on into the same
# repository from its promotion (with the new timeline's history file). A promotion also
# archives the old timeline's last segment as <segment>.partial, which recovery never reads;
# two promotions off the same timeline (a new primary killed, another member elected) write
# the same name with other contents, and pgBackRest refuses the second for good. A refused
# .partial is therefore dropped, or archiving would stop there and pg_wal fill up.
write_runtime_conf() {  # write_runtime_conf SYNCHRONOUS_STANDBY_NAMES
  {
    echo "synchronous_standby_names = '$1'"
    if [ -n "$PGBACKREST_STANZA" ]; then
      echo "archive_mode = on"
      echo "archive_command = 'pgbackrest --stanza=$PGBACKREST_STANZA archive-push %p || case %f in *.partial) exit 0;; *) exit 1;; esac'"
      echo "archive_timeout = ${PG_ARCHIVE_TIMEOUT}s"
    fi
  } >"$RUNTIME_CONF.new"
  mv "$RUNTIME_CONF.new" "$RUNTIME_CONF"
}

if [ "$PG_SYNC_STANDBYS" -gt 0 ]; then write_runtime_conf "$(sync_names)"; else write_runtime_conf ''; fi

start_pg() { $PG_CTL -l "$LOG_FIFO" start >&2; }
stop_pg() { $PG_CTL -m fast stop >&2 || true; }
pg_running() { pg_ctl -D "$PGDATA" status >/dev/null 2>&1; }

# Swarm adds a task to DNS only once its healthcheck passes; repmgr reaches this node by name.
wait_for_own_dns() {
  until getent hosts "$PG_NODE_NAME" >/dev/null; do sleep 1; done
}

control() {  # control FIELD -> value of a pg_controldata field
  pg_controldata "$PGDATA" | sed -n "s/^$1: *//p"
}

# The newest timeline of this data: the control file's, or that of a WAL segment it holds (a
# primary killed after its promotion and before its next checkpoint shows the old one).
own_timeline() {
  local max segment tl
  max=$(control "Latest checkpoint's TimeLineID")
  tl=$(control "Min recovery ending loc's timeline")
  [ "$tl" -gt "$max" ] && max=$tl
  for segment in "$PGDATA"/pg_wal/*; do
    segment=${segment##*/}
    [[ $segment =~ ^[0-9A-F]{24}$ ]] || continue
    tl=$(( 16#${segment:0:8} ))
    [ "$tl" -gt "$max" ] && max=$tl
  done
  echo "$max"
}

point_config_outside_datadir() {
  echo "include '/etc/boxoffice/postgresql.conf'" >"$PGDATA/postgresql.conf"
}

# Passwords are (re)applied on every primary start so that a rotated secret takes effect.
apply_roles() {
  psql -X -v ON_ERROR_STOP=1 -q -d postgres <<SQL
\\set postgres_pw \`cat $SECRETS_DIR/postgres_password\`
\\set repmgr_pw \`cat $SECRETS_DIR/repmgr_password\`
\\set pgpool_pw \`cat $SECRETS_DIR/pgpool_password\`
\\set app_pw \`cat $SECRETS_DIR/pretix_password\`
\\set app_user $PG_APP_USER
\\set app_db $PG_APP_DATABASE
SELECT format('CREATE ROLE %I LOGIN', r) FROM unnest(ARRAY['repmgr', 'pgpool', :'app_user']) AS r
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) \\gexec
ALTER ROLE postgres PASSWORD :'postgres_pw';
-- repmgr needs superuser for pg_rewind, promote and follow.
ALTER ROLE repmgr SUPERUSER REPLICATION PASSWORD :'repmgr_pw';
-- pgpool only checks health and replication state.
ALTER ROLE pgpool NOSUPERUSER PASSWORD :'pgpool_pw';
GRANT pg_monitor TO pgpool;
ALTER ROLE :"app_user" NOSUPERUSER NOCREATEROLE PASSWORD :'app_pw';
SELECT 'CREATE DATABASE repmgr OWNER repmgr'
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'repmgr') \\gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'app_db', :'app_user')
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'app_db') \\gexec
-- Slots from before use_replication_slots=no would hold WAL for ever.
SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
 WHERE NOT active AND slot_name LIKE 'repmgr\\_slot\\_%';
SQL
}

become_primary() {
  if pg_running; then
    log "promoting this member"
    pg_ctl -D "$PGDATA" -w -t 300 promote >&2
  else
    rm -f "$PGDATA/standby.signal"
    start_pg
  fi
  serve_as_primary
}

# With no primary, a member with data runs as a hot standby that follows nobody: it takes no
# writes, and its peers can read its timeline and position for the election. "latest" follows
# every timeline whose WAL it holds; "current" starts a diverged standby that fetched the history
# of a timeline it cannot follow.
serve_waiting() {
  local target
  pg_running && return 0
  case "$(control "Database cluster state")" in
    "shut down"|"shut down in recovery"|"in archive recovery") ;;
    *) make_clean ;;
  esac
  touch "$PGDATA/standby.signal"
  for target in latest current; do
    pg_ctl -D "$PGDATA" -w -t 300 -l "$LOG_FIFO" \
      -o "-c primary_conninfo='' -c recovery_target_timeline=$target" start >&2 && return 0
  done
  return 1
}

serve_as_primary() {
  apply_roles
  wait_for_own_dns
  repmgr -f "$CONF" primary register --force >&2
  # As repmgr's own promotion does: the members registered as primary before are former
  # primaries, and a standby registering later must find this one as its upstream.
  psql -X -q -d repmgr -c "UPDATE repmgr.nodes SET active = false
    WHERE type = 'primary' AND active AND node_id <> $PG_NODE_ID" >&2
  ensure_stanza
}

# The stanza must exist before the first WAL segment is archived; creating it is a no-op when
# it does. It fails (logged, not fatal: WAL stays in pg_wal) when the repository belongs to
# another database system, e.g. a freshly deployed cluster that restore.yml is about to replace.
# A member promoted by repmgrd tries from its supervision loop, once a minute until it succeeds.
stanza_ready=0 stanza_tried=-3600
ensure_stanza() {
  [ -n "$PGBACKREST_STANZA" ] && [ "$stanza_ready" = 0 ] || return 0
  stanza_tried=$SECONDS
  if pgbackrest --stanza="$PGBACKREST_STANZA" --log-level-console=warn stanza-create >&2; then
    stanza_ready=1
  else
    log "pgbackrest stanza-create failed: WAL is not archived until the repository matches" \
        "this database system (see roles/backup/README.md)"
  fi
}

# Restored data (recovery.signal, see the header): replay the archive up to the restore target,
# whose recovery_target_action promotes; then serve as the primary of the rebuilt cluster.
finish_restore() {
  local found
  if found=$(find_other_primary); then
    log "FATAL: restored data directory, but ${found%% *} runs as primary: restore.yml stops" \
        "every member and empties the others before a restored member starts"
    exit 1
  fi
  log "restored data directory: replaying the archive up to the restore target"
  rm -f "$PGDATA/standby.signal"
  pg_ctl -D "$PGDATA" -w -t 3600 -l "$LOG_FIFO" start >&2
  until [ "$(sql_local 'SELECT pg_is_in_recovery()')" = f ]; do
    if ! pg_running; then
      log "FATAL: PostgreSQL stopped while recovering the restored data (a restore target after" \
          "the last archived WAL stops it: restore again with an earlier restore_target_time)"
      exit 1
    fi
    sleep 1
  done
  # The restore's recovery settings end with the recovery; a later standby start must not
  # inherit its target.
  sed -i -e '/^recovery_target/d' "$PGDATA/postgresql.auto.conf"
  log "recovery of the restored data complete, now primary: $(sql_local "$STATE_SQL")"
  serve_as_primary
}

# pg_rewind needs a cleanly shut down target. A crashed primary runs crash recovery in
# single-user mode (which cannot run with standby.signal); a crashed standby is started as a
# standby that follows nobody, so that it replays only its own WAL, and stopped again.
make_clean() {
  local state
  state=$(control "Database cluster state")
  case "$state" in
    "shut down"|"shut down in recovery") return 0 ;;
    "in archive recovery")
      log "data directory state '$state': replaying local WAL before the rewind"
      touch "$PGDATA/standby.signal"
      # The current timeline only: a newer timeline's history file, fetched while streaming,
      # would make the start fail on a diverged standby.
      pg_ctl -D "$PGDATA" -w -t 120 -l "$LOG_FIFO" \
        -o "-c primary_conninfo='' -c recovery_target_timeline=current -c hot_standby=on" start >&2 \
        && stop_pg
      ;;
    *)
      log "data directory state '$state': crash recovery in single-user mode before the rewind"
      rm -f "$PGDATA/standby.signal"
      postgres --single -D "$PGDATA" -c archive_mode=off -c synchronous_standby_names='' \
        postgres </dev/null >&2
      ;;
  esac
}

configure_standby() {  # configure_standby PRIMARY
  local auto="$PGDATA/postgresql.auto.conf"
  touch "$auto" "$PGDATA/standby.signal"
  sed -i -e '/^primary_conninfo/d' -e '/^primary_slot_name/d' -e '/^recovery_target/d' "$auto"
  echo "primary_conninfo = 'host=$1 port=5432 user=repmgr application_name=$PG_NODE_NAME connect_timeout=2'" >>"$auto"
}

wal_receiver_status() { sql_local "SELECT status FROM pg_stat_wal_receiver"; }

wait_streaming() {  # wait_streaming SECONDS -> 0 once the WAL receiver streams
  local deadline=$(( SECONDS + $1 ))
  while [ $SECONDS -lt $deadline ]; do
    [ "$(wal_receiver_status)" = streaming ] && return 0
    pg_running || return 1
    sleep 1
  done
  return 1
}

start_standby_of() {  # start_standby_of PRIMARY -> 0 when it streams from PRIMARY
  configure_standby "$1"
  start_pg || return 1
  if wait_streaming "$STREAM_GRACE"; then
    wait_for_own_dns
    repmgr -f "$CONF" standby register --force >&2
    return 0
  fi
  log "not streaming from $1 within ${STREAM_GRACE}s"
  stop_pg
  return 1
}

system_id_of_primary() { sql_peer "$1" "SELECT system_identifier FROM pg_control_system()"; }

clone_from() {  # clone_from PRIMARY; the data directory must be empty
  log "cloning from primary $1"
  touch "$REBUILDING"
  repmgr -f "$CONF" -h "$1" -U repmgr -d repmgr standby clone --fast-checkpoint >&2
  rm -f "$REBUILDING"
  start_standby_of "$1"
}

# Moves the data directory aside (one copy) and clones it again from PRIMARY.
reclone_from() {
  local mine theirs
  mine=$(control "Database system identifier")
  theirs=$(system_id_of_primary "$1")
  if [ -z "$theirs" ]; then
    log "primary $1 does not answer: keeping this data and deciding again"
    return 1
  fi
  if [ "$mine" != "$theirs" ]; then
    log "FATAL: this data belongs to database system $mine but primary $1 runs $theirs" \
        "(a cluster bootstrapped anew?); refusing to discard it. If $1 is the cluster to keep:" \
        "ansible-playbook site.yml -e postgres_repmgr_reclone=$PG_NODE_NAME"
    exit 1
  fi
  discard_and_clone "$1"
}

discard_and_clone() {  # discard_and_clone PRIMARY
  set_data_aside
  clone_from "$1"
}

set_data_aside() {
  rm -rf "$DIVERGED"
  if [ "$PG_KEEP_DIVERGED" = 1 ]; then
    log "moving the data directory to $DIVERGED"
    mv "$PGDATA" "$DIVERGED"
  else
    rm -rf "$PGDATA"
  fi
  mkdir -m 0700 "$PGDATA"
  rm -f "$REBUILDING"
}

# Follow PRIMARY: start as is when on its timeline, else (or when that does not stream)
# rewind, and re-clone when rewinding fails or does not stream either.
rejoin() {  # rejoin PRIMARY PRIMARY_TIMELINE
  local primary=$1 primary_tl=$2
  if [ -f "$PGDATA/standby.signal" ] && [ "$(own_timeline)" = "$primary_tl" ] \
     && [ "$(control "Database cluster state")" != "in production" ]; then
    log "standby on timeline $primary_tl: following $primary"
    start_standby_of "$primary" && return 0
  fi
  make_clean || true
  checkpoint_on "$primary" "$primary_tl"
  log "rewinding to $primary (timeline $(own_timeline) -> $primary_tl)"
  touch "$REBUILDING"
  if pg_rewind --target-pgdata="$PGDATA" --source-server="host=$primary port=5432 user=repmgr dbname=postgres" >&2; then
    rm -f "$REBUILDING"
    point_config_outside_datadir
    start_standby_of "$primary" && return 0
  else
    log "pg_rewind failed"
  fi
  reclone_from "$primary"
}

# pg_rewind reads the source's timeline from its control file, which a promotion updates only
# at the next checkpoint: until then it finds "the same timeline" and rewinds nothing.
checkpoint_on() {  # checkpoint_on PRIMARY TIMELINE
  local i
  for i in 1 2 3 4 5; do
    [ "$(sql_peer "$1" "SELECT timeline_id FROM pg_control_checkpoint()")" = "$2" ] && return 0
    log "checkpoint on $1 so that its control file shows timeline $2"
    sql_peer "$1" "CHECKPOINT" >/dev/null
    sleep "$i"
  done
  log "the control file of $1 does not show timeline $2 yet; rewinding anyway"
}

wait_for_primary() {  # prints "<node> <timeline>"
  local found
  until found=$(find_other_primary); do
    log "waiting for a primary among: $PG_NODES"
    sleep 2
  done
  echo "$found"
}

# Highest timeline any reachable other node is on (0 when none answers).
peers_max_timeline() {
  local node tl max=0
  for node in $PG_NODES; do
    [ "$node" = "$PG_NODE_NAME" ] && continue
    read -r _ tl _ <<<"$(peer_state "$node")" || true
    [ -n "$tl" ] && [ "$tl" -gt "$max" ] && max=$tl
  done
  echo "$max"
}

reclone_requested() {
  [ -n "${PG_RECLONE_REQUEST:-}" ] && [ "$(cat "$RECLONE_DONE" 2>/dev/null)" != "$PG_RECLONE_REQUEST" ]
}

startup() {
  local found primary tl own_tl former_primary=0 waiting_since need
  if [ -e "$REBUILDING" ] && [ -s "$PGDATA/PG_VERSION" ]; then
    log "a rewind or clone of this data directory was cut short: it is not trusted again"
    set_data_aside
  fi
  if reclone_requested && [ -s "$PGDATA/PG_VERSION" ]; then
    if found=$(find_other_primary); then
      read -r primary _ <<<"$found"
      log "operator re-clone request $PG_RECLONE_REQUEST: discarding this member's data"
      discard_and_clone "$primary" || { log "the new clone does not stream"; exit 1; }
      echo "$PG_RECLONE_REQUEST" >"$RECLONE_DONE"
      return
    fi
    log "operator re-clone request $PG_RECLONE_REQUEST refused: no other primary runs, and this" \
        "member's data may be the only copy"
  fi
  if [ ! -s "$PGDATA/PG_VERSION" ]; then
    rm -rf "${PGDATA:?}"/*
    # Only the initial primary creates a cluster, and only when no peer answers at all: a
    # peer that answers holds data, which an empty new cluster must never replace.
    if [ "$PG_NODE_NAME" = "$PG_INITIAL_PRIMARY" ] && [ "$(peers_max_timeline)" = 0 ]; then
      log "empty data directory, bootstrapping the cluster as primary"
      initdb -D "$PGDATA" -U postgres --auth-local=peer --auth-host=scram-sha-256 \
        --data-checksums --encoding=UTF8 --locale=C.UTF-8 >&2
      point_config_outside_datadir
      become_primary
      return
    fi
    read -r primary _ <<<"$(wait_for_primary)"
    clone_from "$primary" || { log "the new clone does not stream"; exit 1; }
    [ -z "${PG_RECLONE_REQUEST:-}" ] || echo "$PG_RECLONE_REQUEST" >"$RECLONE_DONE"
    return
  fi

  if [ -f "$PGDATA/recovery.signal" ] && [ ! -f "$PGDATA/standby.signal" ]; then
    finish_restore
    return
  fi

  [ -f "$PGDATA/standby.signal" ] || former_primary=1
  if [ "$former_primary" = 1 ] && ! find_other_primary >/dev/null; then
    # A former primary: repmgrd on the standbys may be promoting one right now.
    log "former primary data: waiting ${FAILOVER_HOLDOFF}s for a failover in progress"
    sleep "$FAILOVER_HOLDOFF"
  fi
  waiting_since=$SECONDS
  while :; do
    if found=$(find_other_primary); then
      read -r primary tl <<<"$found"
      own_tl=$(own_timeline)
      if [ "$tl" -lt "$own_tl" ]; then
        # The other primary is the stale one: it fences itself once this node is primary.
        if [ "$former_primary" = 1 ]; then
          log "$primary is primary on timeline $tl, older than this node's $own_tl: becoming primary"
          become_primary
          return
        fi
        log "$primary is primary on timeline $tl, older than this node's $own_tl; waiting"
      else
        pg_running && stop_pg
        rejoin "$primary" "$tl" || { log "could not rejoin $primary"; exit 1; }
        return
      fi
    elif ! serve_waiting; then
      log "this data does not start even as a standby: waiting for a primary to re-clone from"
    else
      need=$MAJORITY
      [ $(( SECONDS - waiting_since )) -ge "$ELECTION_WAIT_FOR_ALL" ] || need=$MEMBER_COUNT
      if most_advanced "$need" ties=lowest; then
        log "no primary, and this member is the most advanced of those that answer: becoming primary"
        become_primary
        return
      fi
    fi
    sleep 2
  done
}

# Without a streaming standby for PG_SYNC_FALLBACK_SECS the primary commits alone (an explicit
# choice of availability over durability); the quorum returns once a standby streams again.
sync_fallback() {
  [ "$PG_SYNC_STANDBYS" -gt 0 ] && [ "$PG_SYNC_FALLBACK_SECS" -gt 0 ] || return 0
  local streaming
  streaming=$(sql_local "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")
  if [ "${streaming:-0}" -gt 0 ]; then
    no_standby_since=$SECONDS
    if [ "$sync_degraded" = 1 ]; then
      log "a standby streams again: commits wait for the quorum again"
      write_runtime_conf "$(sync_names)"; pg_ctl -D "$PGDATA" reload >&2; sync_degraded=0
    fi
  elif [ "$sync_degraded" = 0 ] && [ $(( SECONDS - no_standby_since )) -ge "$PG_SYNC_FALLBACK_SECS" ]; then
    log "no standby for ${PG_SYNC_FALLBACK_SECS}s: committing without a synchronous standby"
    write_runtime_conf ''; pg_ctl -D "$PGDATA" reload >&2; sync_degraded=1
  fi
}

# One check of the running node; returns non-zero when the node must leave and start over.
supervise_once() {
  local state role tl found primary primary_tl upstream
  state=$(sql_local "$STATE_SQL")
  if [ -z "$state" ]; then
    # repmgr restarts PostgreSQL during follow; only a lasting absence is fatal.
    [ $(( SECONDS - last_seen_up )) -lt "$STREAM_GRACE" ] && return 0
    log "PostgreSQL has not answered for ${STREAM_GRACE}s"
    return 1
  fi
  last_seen_up=$SECONDS
  read -r role tl _ <<<"$state"
  if [ "$role" = primary ]; then
    if found=$(find_other_primary); then
      read -r primary primary_tl <<<"$found"
      if [ "$primary_tl" -gt "$tl" ]; then
        log "fencing: $primary is primary on timeline $primary_tl, newer than this node's $tl"
        return 1
      fi
    fi
    sync_fallback
    [ $(( SECONDS - stanza_tried )) -lt 60 ] || ensure_stanza
    return 0
  fi
  # Streaming counts only from the primary: a standby left pointing at a former primary that
  # rejoined as a standby streams from it (cascading) and looks healthy, but the primary cannot
  # count it towards the synchronous quorum, and it falls over when that standby does.
  upstream=$(sql_local "SELECT sender_host FROM pg_stat_wal_receiver WHERE status = 'streaming'")
  primary=""
  found=$(find_other_primary) && primary=${found%% *}
  if [ -n "$upstream" ] && { [ -z "$primary" ] || [ "$upstream" = "$primary" ]; }; then
    last_streaming=$SECONDS
  elif [ -n "$primary" ] && [ $(( SECONDS - last_streaming )) -ge "$STREAM_GRACE" ]; then
    if [ -n "$upstream" ]; then
      log "standby streaming from $upstream, not from the primary $primary, for ${STREAM_GRACE}s: starting over"
    else
      log "standby not streaming for ${STREAM_GRACE}s while $primary is primary: starting over"
    fi
    return 1
  fi
}

startup

repmgrd -f "$CONF" --daemonize=false &
repmgrd_pid=$!

shutdown() {
  log "stopping"
  kill -TERM "$repmgrd_pid" 2>/dev/null || true
  stop_pg
  exit 0
}
trap shutdown TERM INT

last_seen_up=$SECONDS last_streaming=$SECONDS no_standby_since=$SECONDS sync_degraded=0
while kill -0 "$repmgrd_pid" 2>/dev/null; do
  if ! supervise_once; then
    kill -TERM "$repmgrd_pid" 2>/dev/null || true
    $PG_CTL -m immediate stop >&2 || true
    exit 1
  fi
  sleep 3 &
  wait $! || true
done
log "repmgrd exited"
stop_pg
exit 1
