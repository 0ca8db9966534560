#!/bin/sh
# Run by the Bytewax Helm chart's `init-recovery` init container (waxctl --recovery). The official image
# creates all BYTEWAX_RECOVERY_PARTS partitions here on every pod's volume; with one volume per pod that
# gives each pod its own copy of every partition, and after a rescale Bytewax may resume from a stale copy.
# streamguard's entrypoint creates only this pod's share instead (streamguard/deploy/pod/recovery.py), which
# needs the pod ordinal that this init container does not get. So there is nothing to do here.
set -eu
echo "entrypoint-recovery: partitions are created by entrypoint.sh (this pod's share only); nothing to do" >&2
