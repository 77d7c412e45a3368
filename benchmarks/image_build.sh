#!/usr/bin/env bash
# Cold build of the stack's images: delete the role's <namespace>/* images (base included), run
# playbooks/images.yml, print wall-clock time, per-image build time and image sizes.
#
#   benchmarks/image_build.sh --delete-images [--images registry,dind-node,locust]
#                             [--namespace boxoffice] [-- extra ansible-playbook args]
#
# --delete-images is required: it removes the local <namespace>/base:bookworm-* and
# <namespace>/<image>:<content tag> images of the listed images (only those; tags used by a
# running container are kept by Docker, which is fine: the base is bootstrapped again, so no
# build can reuse an old layer). To leave a deployed registry service alone, measure in another
# namespace with its own service, e.g.
#   benchmarks/image_build.sh --delete-images --namespace bxbench --images registry,dind-node,locust \
#     -- -e images_registry_service=bxbench-registry -e images_registry_volume=bxbench-registry \
#        -e images_registry_port=5056
# Per-image times are the gaps between consecutive images' creation times (the role builds in
# images_list order); the base's time runs from the playbook's start, so it includes the role's
# ~10-30 s of checks. Sizes are `docker image inspect` sizes, each including the shared base.
set -euo pipefail

cd "$(dirname "$0")/.."
namespace=boxoffice
images=""
confirmed=false
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --delete-images) confirmed=true ;;
    --images) images="$2"; shift ;;
    --namespace) namespace="$2"; shift ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if ! $confirmed; then
  echo "This deletes the local ${namespace}/* images the role builds before building; pass --delete-images." >&2
  exit 2
fi

# shellcheck disable=SC1091
. .venv/bin/activate
vars_file=$(mktemp --suffix=.json)
trap 'rm -f "$vars_file"' EXIT

# Only what the role makes: <namespace>/base:<suite>-<hash> and <namespace>/<image>:<tag>
# for the images built here (a hand-made <namespace>/base:manual stays).
if [ -z "$images" ]; then
  images=$(python3 -c 'import yaml; print(",".join(entry["name"] for entry in yaml.safe_load(
    open("roles/boxoffice_defaults/defaults/main.yml"))["boxoffice_defaults_images"]))')
fi
pattern="^${namespace}/(base:bookworm-[0-9a-f]{12}|($(echo "$images" | tr , '|')):[0-9a-f]{12})\$"
mapfile -t old < <(docker image ls --format '{{.Repository}}:{{.Tag}}' | grep -E "$pattern" || true)
if [ ${#old[@]} -gt 0 ]; then
  echo "deleting ${#old[@]} ${namespace}/* image tags"
  docker image rm "${old[@]}" >/dev/null 2>&1 || echo "(some tags are in use by containers and stay)"
fi

# The role knows the stack's, monitoring's and the autoscaler's images by name; dind-node is the
# test_cluster role's, which only playbooks/test_cluster.yml builds.
python3 -c 'import json,sys; print(json.dumps({"images_list": [
  {"name": n, "role": "test_cluster"} if n == "dind-node" else n for n in sys.argv[1].split(",")],
  "images_namespace": sys.argv[2]}))' "$images" "$namespace" >"$vars_file"

start=$(date +%s.%N)
ansible-playbook playbooks/images.yml -e "@${vars_file}" "${extra[@]}" >/tmp/image_build.$$.log 2>&1 || {
  echo "playbook failed, log: /tmp/image_build.$$.log" >&2; exit 1; }
end=$(date +%s.%N)
echo "playbook log: /tmp/image_build.$$.log"

# Newest tag per repository, in build order (base first, then by creation time).
docker image ls --format '{{.Repository}} {{.Tag}} {{.ID}}' | awk -v ns="${namespace}/" 'index($1, ns) == 1' |
  while read -r repo tag id; do
    created=$(docker image inspect --format '{{.Created}}' "$id")
    size=$(docker image inspect --format '{{.Size}}' "$id")
    printf '%s %s %s %s\n' "$(date -d "$created" +%s.%N)" "$repo" "$tag" "$size"
  done | sort -n | awk -v start="$start" -v end="$end" '
    $1 >= start - 1 {
      prev = (n == 0) ? start : last
      printf "%-28s %-24s %9.0f s %9.1f MB\n", $2, $3, $1 - prev, $4 / 1e6
      last = $1; n++
    }
    BEGIN { printf "%-28s %-24s %11s %12s\n", "image", "tag", "build", "size" }
    END { printf "%-28s %-24s %9.0f s   (sizes include the shared base)\n", "TOTAL (playbook wall clock)", "", end - start }'
