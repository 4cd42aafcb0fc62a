#!/usr/bin/env bash
# Qustody's own Docker engine for tests, the demo and benchmarks (Debian's docker.io).
#
#   tools/dockerd.sh start    start it unless an engine already answers on DOCKER_HOST
#   tools/dockerd.sh stop     stop it, only if this script started it (by its pidfile)
#   tools/dockerd.sh status   exit 0 when an engine answers
#
# No default bridge and no iptables: user containers run on an internal bridge network
# the hub creates (SpawnPolicy.network_mode/network_subnet; user-defined bridges work
# without the default one), with no route off their subnet. State lives
# in QUSTODY_DOCKER_DIR (default /tmp/qustody-docker): data root, exec root, socket,
# pidfile and log, so images survive a restart of the engine.
set -euo pipefail
DIR="${QUSTODY_DOCKER_DIR:-/tmp/qustody-docker}"
SOCK="$DIR/docker.sock"
export DOCKER_HOST="${DOCKER_HOST:-unix://$SOCK}"
PIDFILE="$DIR/dockerd.pid"
OURS="$DIR/started-by-qustody"

answers() { timeout 20 docker info >/dev/null 2>&1; }

case "${1:-}" in
start)
    if answers; then
        echo "dockerd: an engine already answers on $DOCKER_HOST"
        exit 0
    fi
    if [[ "$DOCKER_HOST" != "unix://$SOCK" ]]; then
        echo "dockerd: DOCKER_HOST=$DOCKER_HOST does not answer, and it is not ours to start" >&2
        exit 1
    fi
    command -v dockerd >/dev/null || { echo "dockerd: not installed; run make system-deps" >&2; exit 1; }
    [[ "$(id -u)" == 0 ]] || { echo "dockerd: starting the engine needs root" >&2; exit 1; }
    mkdir -p "$DIR/root" "$DIR/exec"
    if [[ -f "$PIDFILE" ]] && ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then rm -f "$PIDFILE"; fi
    setsid dockerd --bridge=none --iptables=false --ip6tables=false \
        --data-root "$DIR/root" --exec-root "$DIR/exec" \
        --host "unix://$SOCK" --pidfile "$PIDFILE" >>"$DIR/dockerd.log" 2>&1 </dev/null &
    for _ in $(seq 1 120); do
        if answers; then
            touch "$OURS"
            echo "dockerd: started (pid $(cat "$PIDFILE"), DOCKER_HOST=$DOCKER_HOST, log $DIR/dockerd.log)"
            exit 0
        fi
        sleep 0.5
    done
    echo "dockerd: did not start; last lines of $DIR/dockerd.log:" >&2
    tail -n 20 "$DIR/dockerd.log" >&2
    exit 1
    ;;
stop)
    if [[ -f "$OURS" && -f "$PIDFILE" ]]; then
        pid="$(cat "$PIDFILE")"
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid"
            for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
            kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
            echo "dockerd: stopped (pid $pid)"
        fi
        rm -f "$OURS"
    fi
    ;;
status)
    answers
    ;;
*)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
