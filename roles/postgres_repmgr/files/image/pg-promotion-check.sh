#!/bin/bash
# repmgrd's failover_validation_command: a non-zero exit cancels this node's promotion.
# repmgr elects by LSN among the standbys it follows; this also refuses a candidate that a
# reachable member is ahead of: a peer on a newer timeline (whose writes the promotion would
# discard) or a member outside repmgr's view, such as a former primary waiting to rejoin.
set -euo pipefail
# shellcheck source=pg-common.sh
. /usr/local/bin/pg-common.sh

if ! most_advanced 1; then
  log "refusing promotion: a reachable member is further on"
  exit 1
fi
log "promotion check passed: no reachable member is further on"
