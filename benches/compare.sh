#!/usr/bin/env bash
# Side-by-side benchmark: a 3-node Hubbub cluster and a 3-node NATS cluster
# (Debian's nats-server, WebSocket listener), both on loopback, driven by
# hubbub-loadgen with the same workloads in one run. Prints every workload's
# figures side by side with ratios (Hubbub / NATS). See BENCHMARKS.md.
#
#   benches/compare.sh            full run (about 6 minutes; --repeat N repeats the load workloads)
#   benches/compare.sh --smoke    a few seconds: checks both targets and the harness
#
# Options: --out DIR (results, default: a new temp dir), --no-build,
#          --debug (debug binaries: enough for --smoke, which CI runs after
#          its debug build; never for figures),
#          --idle N (idle connections on one node, default: the open-file
#          limit minus 1,000, at most 19,000),
#          --window W (in flight per publisher in `saturation`, default 1000,
#          just under Hubbub's default --max-in-flight of 1024;
#          `saturation-300` uses W/4),
#          --repeat N (rounds of each load workload, default 1: the two
#          targets alternate which goes first; the round with the median
#          Hubbub / NATS ratio, of deliveries/s in open loop or of p99 at
#          a fixed rate, stands for the workload, and a table lists every
#          round's ratios: this box's speed drifts by tens of percent
#          within minutes, so only paired, repeated ratios are solid),
#          --workloads LIST (comma-separated subset of: latency, saturation,
#          saturation-300, idle, growth, scale; default all).
#          growth: the latency load at 1,000 / 5,000 / 10,000 / 20,000
#          publishes/s on both targets (10k..200k deliveries/s), for how
#          CPU per delivery changes with load; scale: the same 1,000/s load
#          on Hubbub with 3 nodes, then with 2 more nodes started (5).
# Everything it starts is stopped by PID on exit, also on error or ctrl-c.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)

SMOKE=0
BUILD=1
PROFILE=release
OUT=""
# As many idle connections as the open-file limit leaves room for (the node
# and the load generator each hold one descriptor per connection), at most 19,000.
NOFILE=$(ulimit -n)
[[ $NOFILE == unlimited ]] && NOFILE=1000000
IDLE=$(( NOFILE - 1000 ))
(( IDLE > 19000 )) && IDLE=19000
(( IDLE < 100 )) && IDLE=100
WORKLOADS=latency,saturation,saturation-300,idle,growth,scale
WINDOW=1000
REPEAT=1
while [[ $# -gt 0 ]]; do
    case "$1" in
        --smoke) SMOKE=1 ;;
        --no-build) BUILD=0 ;;
        --debug) PROFILE=debug ;;
        --out) OUT=$2; shift ;;
        --idle) IDLE=$2; shift ;;
        --workloads) WORKLOADS=$2; shift ;;
        --window) WINDOW=$2; shift ;;
        --repeat) REPEAT=$2; shift ;;
        *) echo "compare.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
[[ -n "$OUT" ]] || OUT=$(mktemp -d /tmp/hubbub-compare.XXXXXX)
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/hubbub-compare-run.XXXXXX)

PIDS=()
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "compare.sh: $*" >&2; }

# ---- prerequisites ----------------------------------------------------------
if ! command -v nats-server >/dev/null; then
    log "installing nats-server (apt-get)"
    SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO=sudo
    $SUDO apt-get install -y nats-server >/dev/null 2>&1 ||
        { $SUDO apt-get update >/dev/null && $SUDO apt-get install -y nats-server >/dev/null; }
fi
if [[ $BUILD -eq 1 ]]; then
    log "building ($PROFILE)"
    if [[ $PROFILE == release ]]; then
        cargo build --release -q -p hubbub -p hubbub-benches
    else
        cargo build -q -p hubbub -p hubbub-benches
    fi
fi
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)
HUBBUB="$TARGET_DIR/$PROFILE/hubbub"
LOADGEN="$TARGET_DIR/$PROFILE/hubbub-loadgen"

# ---- ports -----------------------------------------------------------------
# A base port with nothing listening (TCP or UDP) in [base, base+100), below
# the ephemeral range (32768+) so no outgoing connection holds one of ours.
busy_ports() { ss -Hltun | awk '{print $5}' | sed 's/.*://' | sort -u; }
pick_base() {
    local busy base
    busy=$(busy_ports)
    for _ in $(seq 50); do
        base=$((12000 + (RANDOM % 200) * 100))
        if ! awk -v b="$base" '$1 >= b && $1 < b + 100 { found = 1 } END { exit !found }' <<<"$busy"; then
            echo "$base"; return
        fi
    done
    log "no free port range found"; exit 1
}
BASE=$(pick_base)
HB_BASE=$BASE            # Hubbub node i: HTTP BASE+10(i-1), gossip +1, +2
NATS_BASE=$((BASE + 50)) # NATS node i: client +0, route +1, ws +2, monitor +3 (step 10)

wait_http() { # url seconds
    for _ in $(seq $(($2 * 10))); do
        curl -fs -o /dev/null "$1" && return 0
        sleep 0.1
    done
    log "timed out waiting for $1"; return 1
}

# ---- NATS cluster ------------------------------------------------------------
NATS_PIDS=()
NATS_URLS=()
routes=""
for i in 1 2 3; do routes+="nats-route://127.0.0.1:$((NATS_BASE + 10 * (i - 1) + 1)),"; done
routes=${routes%,}
for i in 1 2 3; do
    p=$((NATS_BASE + 10 * (i - 1)))
    cat >"$WORK/nats$i.conf" <<EOF
server_name: nats$i
host: 127.0.0.1
port: $p
http: 127.0.0.1:$((p + 3))
cluster {
  name: bench
  host: 127.0.0.1
  port: $((p + 1))
  routes: [$(tr ',' '\n' <<<"$routes" | grep -v ":$((p + 1))$" | paste -sd, -)]
}
websocket {
  host: 127.0.0.1
  port: $((p + 2))
  no_tls: true
}
EOF
    nats-server -c "$WORK/nats$i.conf" >"$OUT/nats$i.log" 2>&1 &
    PIDS+=($!); NATS_PIDS+=($!)
    NATS_URLS+=("ws://127.0.0.1:$((p + 2))")
done
for i in 1 2 3; do
    mon="http://127.0.0.1:$((NATS_BASE + 10 * (i - 1) + 3))"
    wait_http "$mon/varz" 20
    for _ in $(seq 100); do
        [[ $(curl -fs "$mon/routez" | jq .num_routes) -ge 2 ]] && break
        sleep 0.1
    done
    [[ $(curl -fs "$mon/routez" | jq .num_routes) -ge 2 ]] || { log "NATS node $i has no full mesh"; exit 1; }
done
log "NATS cluster up: ${NATS_URLS[*]} (pids ${NATS_PIDS[*]})"

# ---- Hubbub cluster ----------------------------------------------------------
HB_PIDS=()
HB_URLS=()
# A cluster key per run, handed to each node's environment only.
CLUSTER_KEY=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')

# start_hubbub I: starts node nI (seeded from n1 unless it is n1); its pid
# goes to PIDS (stopped on exit) and HB_LAST_PID, its URL to HB_LAST_URL.
start_hubbub() {
    local i=$1 p=$((HB_BASE + 10 * ($1 - 1))) seeds=()
    [[ $i -gt 1 ]] && seeds=(--seeds "127.0.0.1:$((HB_BASE + 1))")
    env -u HUBBUB_CONFIG HUBBUB_CLUSTER_KEY="$CLUSTER_KEY" RUST_LOG="${RUST_LOG:-warn}" "$HUBBUB" node --name "n$i" \
        --listen "127.0.0.1:$p" --gossip "127.0.0.1:$((p + 1))" --state-gossip "127.0.0.1:$((p + 2))" \
        "${seeds[@]}" >"$OUT/hubbub$i.log" 2>&1 &
    HB_LAST_PID=$!
    HB_LAST_URL="ws://127.0.0.1:$p/ws"
    PIDS+=($!)
}

# wait_ring I N: node nI is ready and sees an N-member ring (20 s at most).
wait_ring() {
    local i=$1 n=$2 http="http://127.0.0.1:$((HB_BASE + 10 * ($1 - 1)))"
    wait_http "$http/healthz/ready" 30
    for _ in $(seq 200); do
        [[ $(curl -fs "$http/debug/ring" | jq '.members | length') -eq $n ]] && return 0
        sleep 0.1
    done
    log "Hubbub node $i sees no $n-node ring"; exit 1
}

for i in 1 2 3; do
    start_hubbub "$i"
    HB_PIDS+=("$HB_LAST_PID"); HB_URLS+=("$HB_LAST_URL")
done
for i in 1 2 3; do wait_ring "$i" 3; done
log "Hubbub cluster up: ${HB_URLS[*]} (pids ${HB_PIDS[*]})"

join() { local IFS=,; echo "$*"; }
HB_ALL=$(join "${HB_URLS[@]}")
NATS_ALL=$(join "${NATS_URLS[@]}")

# ---- workloads --------------------------------------------------------------
wanted() { [[ ",$WORKLOADS," == *",$1,"* ]]; }
labels=()

# run LABEL ARGS...: the same load against Hubbub and NATS, REPEAT rounds
# (odd rounds Hubbub first, even rounds NATS first); the median round's
# reports become LABEL.{hubbub,nats}.{txt,json}.
run() {
    local label=$1; shift
    wanted "$label" || return 0
    labels+=("$label")
    local r target order
    for ((r = 1; r <= REPEAT; r++)); do
        order="hubbub nats"; (( r % 2 )) || order="nats hubbub"
        for target in $order; do
            local urls pids
            if [[ $target == hubbub ]]; then urls=$HB_ALL; pids=$(join "${HB_PIDS[@]}")
            else urls=$NATS_ALL; pids=$(join "${NATS_PIDS[@]}"); fi
            log "$label: $target (round $r of $REPEAT)"
            "$LOADGEN" --target "$target" --urls "$urls" --server-pids "$pids" --label "$label" \
                --room-prefix "$label-r$r" "$@" >"$OUT/$label.$target.r$r.txt"
            cat "$OUT/$label.$target.r$r.txt" >&2
            tail -n 1 "$OUT/$label.$target.r$r.txt" >"$OUT/$label.$target.r$r.json"
        done
    done
    local median
    median=$(round_ratios "$label" | sort -g -k2 | awk -v n="$REPEAT" 'NR == int((n + 1) / 2) { print $1 }')
    for target in hubbub nats; do
        cp "$OUT/$label.$target.r$median.txt" "$OUT/$label.$target.txt"
        cp "$OUT/$label.$target.r$median.json" "$OUT/$label.$target.json"
    done
}

# round_ratios LABEL: "ROUND RATIO" per round: Hubbub / NATS deliveries/s in
# open loop, NATS / Hubbub p99 at a fixed rate (higher is better for Hubbub
# in both).
round_ratios() {
    local r
    for ((r = 1; r <= REPEAT; r++)); do
        jq -rn --arg r "$r" --slurpfile h "$OUT/$1.hubbub.r$r.json" --slurpfile n "$OUT/$1.nats.r$r.json" \
            'if $h[0].offered_rate == 0 then "\($r) \($h[0].deliveries_per_s / $n[0].deliveries_per_s)"
             else "\($r) \($n[0].latency.p99_us / ([$h[0].latency.p99_us, 1] | max))" end'
    done
}
# idle LABEL N: N idle connections on node 1 of each cluster.
idle() {
    local label=$1 n=$2
    wanted "$label" || return 0
    labels+=("$label")
    local rooms=100 subs=$(( (n + 99) / 100 ))
    log "$label: hubbub"
    "$LOADGEN" --target hubbub --urls "${HB_URLS[0]}" --server-pids "${HB_PIDS[0]}" --label "$label" \
        --room-prefix "$label" --idle-only --rooms $rooms --subscribers $subs --connect-concurrency 128 \
        --first-source-ip 1 >"$OUT/$label.hubbub.txt"
    log "$label: nats"
    "$LOADGEN" --target nats --urls "${NATS_URLS[0]}" --server-pids "${NATS_PIDS[0]}" --label "$label" \
        --room-prefix "$label" --idle-only --rooms $rooms --subscribers $subs --connect-concurrency 128 \
        --first-source-ip 101 >"$OUT/$label.nats.txt"
    for t in hubbub nats; do cat "$OUT/$label.$t.txt" >&2; tail -n 1 "$OUT/$label.$t.txt" >"$OUT/$label.$t.json"; done
}

# node_chat I FILTER: jq FILTER applied to Hubbub node nI's chat counters.
node_chat() {
    curl -fs "http://127.0.0.1:$((HB_BASE + 10 * ($1 - 1)))/debug/node" | jq -r ".chat | $2"
}

# wait_settled N SECONDS: the rooms are done moving after a ring change:
# every room has one holder on the N nodes (held rooms sum to ROOMS_BEFORE,
# what the nodes held before the change) and what each node holds and
# replicates did not change over a second. Sets SETTLED_S; fails after SECONDS.
wait_settled() {
    local n=$1 limit=$2 start=$SECONDS before="" now i
    while ((SECONDS - start < limit)); do
        now=""
        for ((i = 1; i <= n; i++)); do
            now+="$(node_chat "$i" '"\(.rooms_held)/\(.replica_rooms) "')" || now+="? "
        done
        if [[ $now == "$before" && $now != *"?"* ]] &&
            (($(tr ' ' '\n' <<<"$now" | awk -F/ '{ s += $1 } END { print s }') == ROOMS_BEFORE)); then
            SETTLED_S=$((SECONDS - start))
            return 0
        fi
        before=$now
        sleep 1
    done
    log "rooms did not settle on $n nodes within $limit s (held/replicas per node: $now)"; exit 1
}

# scale LABEL ARGS...: the load on Hubbub's 3 nodes (LABEL-3), then on 5
# (two more nodes started for it, stopped after; LABEL-5). Hubbub only.
scale() {
    local label=$1; shift
    wanted "$label" || return 0
    local urls pids
    urls=$(join "${HB_URLS[@]}"); pids=$(join "${HB_PIDS[@]}")
    log "$label-3: hubbub"
    "$LOADGEN" --target hubbub --urls "$urls" --server-pids "$pids" --label "$label-3" \
        --room-prefix "$label-3" "$@" >"$OUT/$label-3.hubbub.txt"
    ROOMS_BEFORE=0
    for i in 1 2 3; do
        ROOMS_BEFORE=$((ROOMS_BEFORE + $(node_chat "$i" .rooms_held)))
    done
    local extra=() i p
    for i in 4 5; do
        start_hubbub "$i"
        extra+=("$HB_LAST_PID"); urls+=",$HB_LAST_URL"; pids+=",$HB_LAST_PID"
    done
    for i in 1 2 3 4 5; do wait_ring "$i" 5; done
    # The goal compares steady states: the rooms (with their histories) that
    # move to the new nodes are a one-off cost of the join, not of running
    # on 5 nodes, so it is waited out before measuring.
    wait_settled 5 120
    log "$label-5: hubbub (2 more nodes: pids ${extra[*]}; rooms settled after ${SETTLED_S} s)"
    "$LOADGEN" --target hubbub --urls "$urls" --server-pids "$pids" --label "$label-5" \
        --room-prefix "$label-5" "$@" >"$OUT/$label-5.hubbub.txt"
    for p in "${extra[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${extra[@]}"; do wait "$p" 2>/dev/null || true; done
    for n in 3 5; do cat "$OUT/$label-$n.hubbub.txt" >&2; tail -n 1 "$OUT/$label-$n.hubbub.txt" >"$OUT/$label-$n.hubbub.json"; done
}

if [[ $SMOKE -eq 1 ]]; then
    WORKLOADS=smoke-latency,smoke-idle
    run smoke-latency --rooms 100 --subscribers 10 --publishers 10 --rate 5000 --duration 2 --payload 64 --drain 2
    idle smoke-idle 500
else
    run latency --rooms 100 --subscribers 10 --publishers 10 --rate 5000 --duration 15 --payload 64
    run saturation --rooms 100 --subscribers 10 --publishers 10 --rate 0 --window "$WINDOW" --duration 10 --payload 64
    run saturation-300 --rooms 10 --subscribers 300 --publishers 10 --rate 0 --window $(( (WINDOW + 3) / 4 )) --duration 10 --payload 64
    idle idle "$IDLE"
    for rate in 1000 5000 10000 20000; do
        wanted growth && WORKLOADS+=",growth-$((rate / 100))k"
        run "growth-$((rate / 100))k" --rooms 100 --subscribers 10 --publishers 10 --rate "$rate" --duration 10 --payload 64
    done
    scale scale --rooms 100 --subscribers 10 --publishers 10 --rate 1000 --duration 10 --payload 64
fi

files=()
for l in "${labels[@]}"; do files+=("$OUT/$l.hubbub.json" "$OUT/$l.nats.json"); done

# How CPU per delivery changes from 10k to 200k deliveries/s (goal: Hubbub's
# deliveries per CPU-second within 20 % across the range).
growth_table() {
    [[ -f "$OUT/growth-10k.hubbub.json" ]] || return 0
    echo "## growth (latency load at rising rates)"
    echo "| rate, publishes/s | Hubbub deliveries/s | Hubbub CPU µs/delivery | vs 10k | NATS deliveries/s | NATS CPU µs/delivery |"
    echo "|---:|---:|---:|---:|---:|---:|"
    local base k h n
    base=$(jq .server_cpu_us_per_delivery "$OUT/growth-10k.hubbub.json")
    for k in 10 50 100 200; do
        h="$OUT/growth-${k}k.hubbub.json"; n="$OUT/growth-${k}k.nats.json"
        [[ -f $h && -f $n ]] || continue
        jq -rn --slurpfile h "$h" --slurpfile n "$n" --argjson base "$base" \
            '"| \($h[0].offered_rate) | \($h[0].deliveries_per_s | floor) | \($h[0].server_cpu_us_per_delivery * 100 | round / 100) | \($h[0].server_cpu_us_per_delivery / $base * 100 | round / 100) | \($n[0].deliveries_per_s | floor) | \($n[0].server_cpu_us_per_delivery * 100 | round / 100) |"'
    done
    echo
}

# 5 Hubbub nodes against 3 under the same load (goal: at most 3 nodes + 25 % CPU).
scale_table() {
    [[ -f "$OUT/scale-3.hubbub.json" && -f "$OUT/scale-5.hubbub.json" ]] || return 0
    echo "## scale (Hubbub, the same load on 3 and on 5 nodes)"
    echo "| nodes | deliveries/s | server CPU s (all nodes) | CPU µs/delivery | lost |"
    echo "|---:|---:|---:|---:|---:|"
    local n
    for n in 3 5; do
        jq -r --arg n "$n" '"| \($n) | \(.deliveries_per_s | floor) | \(.server_cpu_s) | \(.server_cpu_us_per_delivery * 100 | round / 100) | \(.lost) |"' \
            "$OUT/scale-$n.hubbub.json"
    done
    jq -rn --slurpfile a "$OUT/scale-3.hubbub.json" --slurpfile b "$OUT/scale-5.hubbub.json" \
        '"5 nodes use \($b[0].server_cpu_s / $a[0].server_cpu_s * 100 | round / 100) x the CPU of 3"'
    echo
}
# Every round of every load workload, when there were several.
rounds_table() {
    ((REPEAT > 1)) || return 0
    echo "## rounds (the median round of each workload is the one shown above)"
    echo "| workload | round | first | Hubbub deliveries/s | NATS deliveries/s | ratio | Hubbub p99, µs | NATS p99, µs | ratio | Hubbub / NATS CPU per delivery |"
    echo "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"
    local l r
    for l in "${labels[@]}"; do
        [[ -f "$OUT/$l.hubbub.r1.json" ]] || continue
        for ((r = 1; r <= REPEAT; r++)); do
            jq -rn --arg l "$l" --arg r "$r" --arg first "$( ((r % 2)) && echo Hubbub || echo NATS)" \
                --slurpfile h "$OUT/$l.hubbub.r$r.json" --slurpfile n "$OUT/$l.nats.r$r.json" \
                '($h[0]) as $h | ($n[0]) as $n |
                 "| \($l) | \($r) | \($first) | \($h.deliveries_per_s | floor) | \($n.deliveries_per_s | floor) | \($h.deliveries_per_s / $n.deliveries_per_s * 100 | round / 100) | \($h.latency.p99_us) | \($n.latency.p99_us) | \($h.latency.p99_us / ([$n.latency.p99_us, 1] | max) * 100 | round / 100) | \($h.server_cpu_us_per_delivery / $n.server_cpu_us_per_delivery * 100 | round / 100) |"'
        done
    done
    echo
}
{
    echo "# hubbub compare.sh $([[ $SMOKE -eq 1 ]] && echo --smoke) — $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "# machine: nproc=$(nproc), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load average $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "# nats-server $(nats-server --version | awk '{print $2}'), hubbub $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet HEAD -- crates 2>/dev/null || echo ' + uncommitted changes'), binary built $(date -u -r "$HUBBUB" '+%H:%M UTC')"
    echo
    if ((${#files[@]})); then "$LOADGEN" --compare "${files[@]}"; fi
    growth_table
    scale_table
    rounds_table
} | tee "$OUT/summary.md"

# A smoke run fails when a target delivered nothing.
if [[ $SMOKE -eq 1 ]]; then
    for t in hubbub nats; do
        got=$(jq .received "$OUT/smoke-latency.$t.json")
        [[ "$got" -gt 0 ]] || { log "smoke: $t delivered nothing"; exit 1; }
    done
fi
log "results in $OUT"
