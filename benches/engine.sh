#!/usr/bin/env bash
# Engine benchmark: modelgate against the bare Pingora engine
# (examples/bare_proxy.rs) and nginx proxy_pass, in the same run, on the same
# upstream, so that every later change can be judged against both.
#
#   bash benches/engine.sh
#
# Each round starts every target afresh, in an order rotated round by round
# (drift hits all alike), and measures:
#   - JSON chat POSTs (~2 KB, Authorization: Bearer sk-bench) with wrk at
#     each concurrency: rps, rps ÷ nginx proxy and ÷ bare of the same round,
#     p50/p99 latency, added p50 over the upstream called directly, and CPU
#     µs per request of the proxy process (utime+stime from /proc, over the
#     requests wrk counted; "in kernel" is the stime part);
#   - streaming: time to the first event (the upstream sends it after
#     50 ms), sequential requests on one keep-alive connection;
#   - memory (bare and modelgate): RSS idle, after MEM_REQUESTS requests
#     (c=32, before the runs above), with STREAMS streams held open, with
#     IDLE_CONNS idle keep-alive connections (one request each) open, and
#     3 s after they closed.
# Then one table per round, and median [min–max] over the rounds.
#
# The proxy under test is pinned to CPU $PROXY_CPU (0), the upstream (nginx
# and the Python SSE server behind its /sse/ path), wrk and the Python
# clients to $LOAD_CPU (1). Everything listens on 127.0.0.1; all processes
# are ended on exit. Knobs (environment):
#   ROUNDS=3 DURATION=5 WARMUP=1 CONCURRENCY="1 32 256" TTFB_N=200
#   MEM_REQUESTS=100000 STREAMS=2000 IDLE_CONNS=3000
#   TARGETS="direct nginx bare modelgate" BARE_THREADS=1
#   PROXY_CPU=0 LOAD_CPU=1 KEEP_WORK=1 (keep configs and logs)
#   MODELGATE_BIN=/path/to/other/modelgate (A/B another build; no cargo build
#   of modelgate then), NO_BUILD=1
set -euo pipefail
cd "$(dirname "$0")/.."
OWN_MODELGATE="${MODELGATE_BIN:-}"
source scripts/lib.sh
source benches/bench_lib.sh

ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-5}"
WARMUP="${WARMUP:-1}"
CONCURRENCY="${CONCURRENCY:-1 32 256}"
TTFB_N="${TTFB_N:-200}"
MEM_REQUESTS="${MEM_REQUESTS:-100000}"
STREAMS="${STREAMS:-2000}"
IDLE_CONNS="${IDLE_CONNS:-3000}"
TARGETS="${TARGETS:-direct nginx bare modelgate}"
BARE_THREADS="${BARE_THREADS:-1}"
PROXY_CPU="${PROXY_CPU:-0}"
LOAD_CPU="${LOAD_CPU:-1}"

ensure_bench_tools wrk nginx python3 taskset pgrep
if [ "${NO_BUILD:-0}" != 1 ]; then
  ensure_build_deps
  if [ -z "$OWN_MODELGATE" ]; then
    cargo build --release --quiet --bin modelgate --example bare_proxy
  else
    cargo build --release --quiet --example bare_proxy
  fi
fi
if [ "$(nproc)" -lt 2 ]; then
  echo "warning: one CPU; proxy and load share it" >&2
  PROXY_CPU=0 LOAD_CPU=0
fi

bench_init
CLK_TCK="$(getconf CLK_TCK)"
RESULTS="$WORK/results.tsv"
: >"$RESULTS"
make_bodies
cat >"$WORK/wrk.lua" <<'EOF'
local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench"
local limit = tonumber(os.getenv("BENCH_LIMIT") or "0")
if limit > 0 then
  local n = 0
  response = function()
    n = n + 1
    if n == limit then
      -- wrk sleeps out its -d; the script sees this file and ends it (SIGINT).
      io.open(os.getenv("BENCH_MARK"), "w"):close()
      wrk.thread:stop()
    end
  end
end
done = function(s, latency)
  local e = s.errors
  io.write(string.format("WRK %d %d %d %d %d\n", s.requests, s.duration,
    e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
EOF

read -r UP_PORT SSE_PORT < <(free_ports 2)
start_upstream

record() { printf '%s\t%s\t%s\t%s\n' "$ROUND" "$1" "$2" "$3" >>"$RESULTS"; }

# wrk at concurrency $2 for $3 seconds against URL $1 (JSON body), or until
# $4 requests if given; sets WRK_RES to "requests duration_us errors
# p50_us p99_us". (Not in a subshell: the exit trap must see wrk's pid.)
run_wrk() {
  local url="$1" c="$2" d="$3" limit="${4:-0}" out="$WORK/wrk.out" mark="$WORK/wrk.done" wp
  rm -f "$mark"
  BENCH_BODY="$WORK/chat.json" BENCH_LIMIT="$limit" BENCH_MARK="$mark" taskset -c "$LOAD_CPU" \
    wrk -t1 -c"$c" -d"${d}s" --timeout 10s -s "$WORK/wrk.lua" "$url" >"$out" 2>&1 &
  wp=$!
  track "$wp"
  if ((limit > 0)); then
    while alive "$wp" && [ ! -e "$mark" ]; do sleep 0.1; done
    kill -INT "$wp" 2>/dev/null || true
  fi
  local rc=0
  wait "$wp" || rc=$?
  untrack "$wp"
  ((rc == 0)) || {
    echo "wrk failed: $(cat "$out")" >&2
    return 1
  }
  WRK_RES="$(grep '^WRK ' "$out" | cut -d' ' -f2-)" || {
    echo "wrk printed no result: $(cat "$out")" >&2
    return 1
  }
}

# Start target $1; sets T_PID (the process whose CPU and RSS are read; none
# for direct), T_JSON (JSON chat URL) and T_STREAM (streaming chat URL).
start_target() {
  local port
  T_PID=""
  case "$1" in
    direct)
      T_JSON="http://127.0.0.1:$UP_PORT/v1/chat/completions"
      T_STREAM="http://127.0.0.1:$UP_PORT/sse/v1/chat/completions"
      return
      ;;
    nginx)
      read -r port < <(free_ports 1)
      start_nginx_proxy "$port" "$PROXY_CPU"
      T_PID="$NGINX_PID"
      T_STREAM="http://127.0.0.1:$port/sse/v1/chat/completions"
      ;;
    bare)
      read -r port < <(free_ports 1)
      taskset -c "$PROXY_CPU" "$BARE_BIN" --listen "127.0.0.1:$port" --upstream "127.0.0.1:$UP_PORT" \
        --threads "$BARE_THREADS" >"$WORK/bare.log" 2>&1 &
      T_PID=$!
      track "$T_PID"
      T_STREAM="http://127.0.0.1:$port/sse/v1/chat/completions"
      ;;
    modelgate)
      local admin
      read -r port admin < <(free_ports 2)
      rm -rf "$WORK/mg"
      write_modelgate_config "$port" "$admin" "$WORK/mg"
      # Pinned to one CPU, modelgate runs one worker thread
      # (available_parallelism follows the affinity mask).
      taskset -c "$PROXY_CPU" "$MODELGATE_BIN" run -c "$WORK/mg/conf/modelgate.yaml" >"$WORK/mg/stdout.log" 2>"$WORK/mg/stderr.log" &
      T_PID=$!
      track "$T_PID"
      T_STREAM="http://127.0.0.1:$port/v1/chat/completions"
      ;;
  esac
  T_JSON="http://127.0.0.1:$port/v1/chat/completions"
  wait_ready "$T_JSON" "$WORK/chat.json" usage 60 "$T_PID"
  wait_ready "$T_STREAM" "$WORK/chat-stream.json" "[DONE]" 30 "$T_PID"
}

# Wait until file $1 has a line starting with $2 (or process $3 ends).
wait_line() {
  local file="$1" prefix="$2" pid="$3" timeout="${4:-180}" t0=$SECONDS
  until grep -q "^$prefix" "$file" 2>/dev/null; do
    if ! alive "$pid"; then
      echo "client exited before '$prefix':" >&2
      cat "$file" >&2
      return 1
    fi
    if ((SECONDS - t0 > timeout)); then
      echo "no '$prefix' from the client after ${timeout}s" >&2
      return 1
    fi
    sleep 0.2
  done
}

measure_target() {
  local t="$1" c req dur err p50 p99 t0 t1 line mem=""
  start_target "$t"
  [ -n "$T_PID" ] && [ "$t" != nginx ] && mem=1
  if [ -n "$mem" ]; then
    wait_tokenizer_loaded "$T_PID"
    sleep 2
    record "$t" rss_idle "$(rss_kib "$T_PID")"
    # MEM_REQUESTS requests at c=32 (wrk stops at the count; the time limit
    # assumes at least 1,000 rps).
    run_wrk "$T_JSON" 32 $((MEM_REQUESTS / 1000 + 10)) "$MEM_REQUESTS"
    sleep 2
    record "$t" mem_requests "${WRK_RES%% *}"
    record "$t" rss_requests "$(rss_kib "$T_PID")"
  fi
  for c in $CONCURRENCY; do
    run_wrk "$T_JSON" "$c" "$WARMUP"
    t0="$([ -n "$T_PID" ] && proc_ticks "$T_PID" || echo 0)"
    s0="$([ -n "$T_PID" ] && PROC_TICKS=sys proc_ticks "$T_PID" || echo 0)"
    run_wrk "$T_JSON" "$c" "$DURATION"
    t1="$([ -n "$T_PID" ] && proc_ticks "$T_PID" || echo 0)"
    s1="$([ -n "$T_PID" ] && PROC_TICKS=sys proc_ticks "$T_PID" || echo 0)"
    read -r req dur err p50 p99 <<<"$WRK_RES"
    ((req > 0)) || { echo "$t c=$c: no request completed" >&2; return 1; }
    record "$t" "rps@$c" "$(awk -v r="$req" -v d="$dur" 'BEGIN { printf "%.1f", r / (d / 1e6) }')"
    record "$t" "p50@$c" "$p50"
    record "$t" "p99@$c" "$p99"
    record "$t" "errors@$c" "$err"
    [ -n "$T_PID" ] && record "$t" "cpu@$c" "$(awk -v a="$t0" -v b="$t1" -v r="$req" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", (b - a) * 1e6 / hz / r }')"
    [ -n "$T_PID" ] && record "$t" "sys@$c" "$(awk -v a="$s0" -v b="$s1" -v r="$req" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", (b - a) * 1e6 / hz / r }')"
    echo "  $t c=$c: $req requests, $err errors, p50 ${p50} µs" >&2
  done
  line="$(helper ttfb "$T_STREAM" "$WORK/chat-stream.json" --n "$TTFB_N")"
  read -r _ p50 p10 p90 _ <<<"$line"
  record "$t" ttfb "$p50"
  record "$t" ttfb_p10 "$p10"
  record "$t" ttfb_p90 "$p90"
  echo "  $t: first event after ${p50} µs (median of $TTFB_N)" >&2

  if [ -n "$mem" ]; then
    local out="$WORK/hold.out" hp
    : >"$out"
    taskset -c "$LOAD_CPU" python3 "$HELPER" hold "${T_STREAM}" "$WORK/chat-hold.json" --n "$STREAMS" --hold-s 600 >"$out" 2>&1 &
    hp=$!
    track "$hp"
    wait_line "$out" held "$hp"
    record "$t" mem_streams "$(awk '/^held/ { print $2 }' "$out")"
    record "$t" rss_streams "$(rss_kib "$T_PID")"
    stop_pid "$hp"
    helper probe "http://127.0.0.1:$SSE_PORT/__release" "$WORK/chat.json" --expect ok
    sleep 3

    out="$WORK/idle.out"
    : >"$out"
    taskset -c "$LOAD_CPU" python3 "$HELPER" idle "$T_JSON" "$WORK/chat.json" --n "$IDLE_CONNS" --hold-s 3 >"$out" 2>&1 &
    hp=$!
    track "$hp"
    wait_line "$out" open "$hp"
    sleep 1
    record "$t" mem_conns "$(awk '/^open/ { print $2 }' "$out")"
    record "$t" rss_conns_open "$(rss_kib "$T_PID")"
    wait_line "$out" closed "$hp"
    stop_pid "$hp"
    sleep 3
    record "$t" rss_conns_closed "$(rss_kib "$T_PID")"
  fi
  [ -n "$T_PID" ] && stop_pid "$T_PID"
  if [ "$t" = modelgate ] && grep -q '"status":[^2]' "$WORK/mg/log/access.log"; then
    echo "  modelgate: non-2xx answers in the access log:" >&2
    grep '"status":[^2]' "$WORK/mg/log/access.log" | head -3 >&2
  fi
  return 0
}

read -ra targets <<<"$TARGETS"
echo "engine bench: $ROUNDS round(s), ${DURATION}s per run (warm-up ${WARMUP}s), c = $CONCURRENCY; proxy on CPU $PROXY_CPU, upstream and load on CPU $LOAD_CPU" >&2
echo "modelgate: $MODELGATE_BIN; bare: $BARE_BIN ($BARE_THREADS thread(s))" >&2
for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
  n=${#targets[@]}
  order=()
  for ((i = 0; i < n; i++)); do order+=("${targets[$(((i + ROUND - 1) % n))]}"); done
  echo "round $ROUND: ${order[*]}" >&2
  for t in "${order[@]}"; do
    measure_target "$t"
  done
  helper report "$RESULTS" --round "$ROUND"
done
((ROUNDS > 1)) && helper report "$RESULTS"
mkdir -p target/engine-bench
saved="target/engine-bench/$(date +%Y%m%d-%H%M%S).tsv"
cp "$RESULTS" "$saved"
echo "raw figures: $saved" >&2
