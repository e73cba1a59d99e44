#!/usr/bin/env bash
# A multi-node Ray cluster on one machine, for trying multi-node forge-ray on a laptop and for
# the fault-injection tests: a head and N worker raylets on 127.0.0.1, each with its own CPU
# count and a custom resource (node1, node2, …) so work can be pinned to a node and a node can
# be killed on purpose. Ray token authentication stays on.
#
#   cluster/local.sh up 2 [--cpus 1] [--drivers 2]
#                                        # head (no CPUs: it schedules; 2 job-driver slots)
#                                        # + 2 workers of 1 CPU each
#   cluster/local.sh status
#   cluster/local.sh kill 1              # kill worker node 1's raylet (chaos)
#   cluster/local.sh down                # stops this cluster's processes only (not other Ray clusters)
#
# Then: RAY_ADDRESS=127.0.0.1:$FORGE_LOCAL_PORT forge run SPEC, or forge submit SPEC --address
# http://127.0.0.1:$FORGE_LOCAL_DASHBOARD. Runs go to one storage dir every node sees
# (FORGE_STORAGE, default ./forge_runs): on one machine a local path is shared storage.
set -euo pipefail

PORT="${FORGE_LOCAL_PORT:-6390}"
DASHBOARD="${FORGE_LOCAL_DASHBOARD:-8266}"
STATE="${FORGE_LOCAL_STATE:-${TMPDIR:-/tmp}/forge-local-cluster}"
RAY="${RAY:-$(command -v ray || echo .venv/bin/ray)}"
export RAY_AUTH_MODE=token
export PATH="$(cd "$(dirname "$RAY")" && pwd):$PATH"  # job entrypoints run `python`: the one beside ray

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

up() {
  local n="${1:?how many worker nodes?}" cpus=1 drivers=2
  shift
  while [ $# -gt 0 ]; do case "$1" in
    --cpus) cpus="$2"; shift 2;;
    --drivers) drivers="$2"; shift 2;;
    *) echo "unknown option $1" >&2; exit 2;;
  esac; done
  mkdir -p "$STATE"
  if [ -z "${RAY_AUTH_TOKEN:-}" ] && [ ! -s "${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}" ]; then
    # token mode needs a token: make one where Ray looks (as `ray get-auth-token --generate` does)
    token_file="${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}"
    mkdir -p "$(dirname "$token_file")" && (umask 077 && python3 -c 'import secrets; print(secrets.token_hex(32))' >"$token_file")
    echo "generated a Ray auth token in $token_file (clients of this cluster need it)"
  fi
  "$RAY" start --head --port="$PORT" --node-ip-address=127.0.0.1 --num-cpus=0 --resources="{\"head\": 1, \"forge_driver\": $drivers}" \
    --dashboard-host=127.0.0.1 --dashboard-port="$DASHBOARD" --include-dashboard=true --disable-usage-stats \
    --ray-client-server-port="$(free_port)" --dashboard-agent-listen-port="$(free_port)" >"$STATE/head.log" 2>&1
  # (every port chosen free, so another Ray on this machine — a test suite's, say — is no obstacle)
  # the session directory names every process of this cluster: `down` and `kill` touch only those
  basename "$(readlink -f "${RAY_TMPDIR:-/tmp/ray}/session_latest")" >"$STATE/session"
  for i in $(seq 1 "$n"); do
    "$RAY" start --address="127.0.0.1:$PORT" --node-ip-address=127.0.0.1 --num-cpus="$cpus" \
      --resources="{\"node$i\": 1}" --node-manager-port="$(free_port)" --object-manager-port="$(free_port)" \
      --min-worker-port=$((20000 + i * 1000)) --max-worker-port=$((20000 + i * 1000 + 999)) \
      --dashboard-agent-listen-port="$(free_port)" --disable-usage-stats >"$STATE/node$i.log" 2>&1
  done
  echo "$n" >"$STATE/nodes"
  for _ in $(seq 1 60); do  # wait until every worker raylet has registered with the head
    [ "$(RAY_ADDRESS="127.0.0.1:$PORT" "$RAY" status 2>/dev/null | grep -c '^ 1 node_')" -ge $((n + 1)) ] && break
    sleep 1
  done
  echo "local cluster: head 127.0.0.1:$PORT (dashboard http://127.0.0.1:$DASHBOARD), $n worker node(s) of $cpus CPU"
  echo "  jobs queue on $drivers driver slots with FORGE_DRIVER_RESOURCES='{\"forge_driver\": 1}'"
}

session() { cat "$STATE/session" 2>/dev/null || { echo "no local cluster recorded in $STATE" >&2; exit 1; }; }

raylet_pid() {  # this cluster's raylet that owns resource node$1
  pgrep -af raylet | grep -F "$(session)" | grep -E "[=,]node$1," | awk '{print $1}' | head -1
}

down() {  # every process of this cluster (head, raylets, agents, workers); other clusters live on
  local s pids
  s="$(session)"
  pids="$(pgrep -f -- "$s|--address=[0-9.]+:$PORT( |$)" || true)"
  for raylet in $(pgrep -f -- "raylet.*$s" || true); do pids="$pids $(pgrep -P "$raylet" || true)"; done  # agents, workers
  [ -n "$pids" ] && kill -9 $pids 2>/dev/null || true
  local current="${RAY_TMPDIR:-/tmp/ray}/ray_current_cluster"  # `ray.init()` must not find a dead cluster
  grep -qs ":$PORT\$" "$current" && rm -f "$current"
  rm -rf "$STATE"
  echo "local cluster stopped"
}

case "${1:-}" in
  up) shift; up "$@" ;;
  down) down ;;
  status) RAY_ADDRESS="127.0.0.1:$PORT" "$RAY" status ;;
  kill)
    pid="$(raylet_pid "${2:?which node?}")"
    [ -n "$pid" ] || { echo "no raylet for node$2" >&2; exit 1; }
    kill -9 "$pid" && echo "killed node$2's raylet (pid $pid)" ;;
  *) sed -n '2,16p' "$0"; exit 2 ;;
esac
