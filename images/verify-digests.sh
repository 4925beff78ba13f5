#!/usr/bin/env bash
# Check that every base image digest in images/*/Dockerfile is still the digest its tag names on the registry
# (the digests were copied from the registry's index manifests; a re-pushed tag gets a new digest, and the
# old one keeps building the old image). Needs registry access and `docker buildx` (or `crane digest`).
#   images/verify-digests.sh        -> one line per base image: ok, or the tag's digest now
set -euo pipefail
cd "$(dirname "$0")/.."
status=0
for ref in $(grep -hoE '^FROM [^ ]+@sha256:[0-9a-f]{64}' images/*/Dockerfile | cut -d' ' -f2 | sort -u); do
  tag=${ref%@*} pinned=${ref#*@}
  if command -v crane >/dev/null; then
    now=$(crane digest "$tag")
  else
    now=$(docker buildx imagetools inspect "$tag" --format '{{json .Manifest}}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["digest"])')
  fi
  if [[ "$now" == "$pinned" ]]; then echo "ok       $tag"; else echo "changed  $tag: pinned $pinned, tag now $now"; status=1; fi
done
exit $status
