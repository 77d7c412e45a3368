#!/bin/bash
# repmgrd's failover_validation_command: a non-zero exit cancels this node's promotion.
# repmgr elects by LSN among the nodes it sees; this also refuses a candidate that is on an
# older timeline than a reachable peer (a member that diverged and did not rejoin), whose
# promotion would discard everything written on the newer timeline.
set -euo pipefail
# shellcheck source=pg-common.sh
. /usr/local/bin/pg-common.sh

read -r _ own_tl _ <<<"$(psql -X -d repmgr -Atqc "$STATE_SQL")"
peers_tl=$(peers_max_timeline)
if [ "$peers_tl" -gt "$own_tl" ]; then
  log "refusing promotion: a peer is on timeline $peers_tl, this node on $own_tl"
  exit 1
fi
log "promotion check passed (timeline $own_tl, peers at most $peers_tl)"
