#!/bin/sh
# Entrypoint of the streamguard image: run one Bytewax process of a streamguard flow.
#
#   entrypoint.sh [IMPORT_STR]     e.g. flows.fraud:flow (the default)
#
# The Python half (streamguard.deploy.pod.launch) derives the process id from the pod ordinal and the peer
# addresses from the StatefulSet (or the Bytewax chart's hostfile), creates this pod's recovery partitions
# on first start, then execs `python -m bytewax.run`. The Bytewax Helm chart (waxctl) runs
# `sh ./entrypoint.sh` from the image's working directory with no argument and the flow file in
# BYTEWAX_PYTHON_FILE_PATH; BYTEWAX_KEEP_CONTAINER_ALIVE=true is its troubleshooting mode.
set -eu

if [ "$#" -eq 0 ]; then
    set -- "${BYTEWAX_PYTHON_FILE_PATH:-flows.fraud:flow}"
fi

if [ "${BYTEWAX_KEEP_CONTAINER_ALIVE:-false}" = "true" ]; then
    status=0
    python -m streamguard.deploy.pod.launch "$@" || status=$?
    echo "entrypoint: flow exited with status ${status}; BYTEWAX_KEEP_CONTAINER_ALIVE=true keeps the pod for inspection" >&2
    while :; do
        sleep 3600
    done
fi

# exec: Python becomes PID 1 and gets the stop signal (SIGINT, see the Dockerfile) directly.
exec python -m streamguard.deploy.pod.launch "$@"
