#!/usr/bin/env bash
# Instructions per request (valgrind --tool=callgrind, the server process
# only) for modelgate and the bare Pingora engine (examples/bare_proxy.rs),
# with the same fixed request mix through each:
#
#   json         OpenAI Chat request → OpenAI-kind provider (nginx's fixed answer)
#   stream       the same, streamed (the Python SSE upstream, 6 events)
#   json-xlat    Anthropic Messages request (/anthropic/v1/messages) → for
#                modelgate routed to gpt-4o-mini and translated both ways
#   stream-xlat  the same, streamed
#
# The bare engine forwards the same requests unchanged to the same upstream
# (its xlat rows measure the same bytes with no translation). Each mix runs
# on one keep-alive connection, requests one after another (deterministic):
# WARM requests, then N1 and N2 requests with a callgrind dump
# (callgrind_control -d) before and after each; (Ir(N2) − Ir(N1)) / (N2 − N1)
# removes what does not grow with requests (connection set-up, dumps).
# Then, per mix, where modelgate's instructions went (benches/cg_breakdown.py
# over the N2 dump: translation, budgets, access log, Pingora, ...).
#
#   bash benches/callgrind.sh
#
# Knobs: N1=200 N2=1200 WARM=50 PROXY_CPU=0 LOAD_CPU=1 KEEP_WORK=1
# MIXES="json stream" TARGETS=modelgate (profiling one side; no table then),
# VG_EXTRA="--dump-instr=yes" (more valgrind options),
# MODELGATE_BIN=/path/to/other/modelgate (no cargo build of modelgate then)
# NO_BUILD=1, MG_BENCH_TRACING=1 (modelgate traces every request:
# telemetry on, sample_ratio 1.0). About 1-2 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
OWN_MODELGATE="${MODELGATE_BIN:-}"
source scripts/lib.sh
source benches/bench_lib.sh

N1="${N1:-200}"
N2="${N2:-1200}"
WARM="${WARM:-50}"
PROXY_CPU="${PROXY_CPU:-0}"
LOAD_CPU="${LOAD_CPU:-1}"
((N2 > N1)) || { echo "N2 must be larger than N1" >&2; exit 2; }

ensure_bench_tools valgrind callgrind_control nginx python3 taskset pgrep
if [ "${NO_BUILD:-0}" != 1 ]; then
  ensure_build_deps
  if [ -z "$OWN_MODELGATE" ]; then
    cargo build --release --quiet --bin modelgate --example bare_proxy
  else
    cargo build --release --quiet --example bare_proxy
  fi
fi
if [ "$(nproc)" -lt 2 ]; then PROXY_CPU=0 LOAD_CPU=0; fi

bench_init
make_bodies
# Streams without the 50 ms wait: events 1 ms apart, so each arrives on its own.
SSE_ARGS="--first-ms 0 --gap-ms 1"
read -r UP_PORT SSE_PORT < <(free_ports 2)
start_upstream

read -r -a MIXES <<<"${MIXES:-json stream json-xlat stream-xlat}"
declare -A IR DUMP

# URL path, body and a string every answer must contain, per target and mix.
mix_request() {
  local target="$1" mix="$2" sse=""
  [ "$target" = bare ] && sse="/sse"
  case "$mix" in
    json) echo "/v1/chat/completions chat.json chat.completion" ;;
    stream) echo "$sse/v1/chat/completions chat-stream.json [DONE]" ;;
    json-xlat) [ "$target" = bare ] && echo "/anthropic/v1/messages messages.json chat.completion" || echo "/anthropic/v1/messages messages.json \"type\":\"message\"" ;;
    stream-xlat) [ "$target" = bare ] && echo "$sse/anthropic/v1/messages messages-stream.json [DONE]" || echo "/anthropic/v1/messages messages-stream.json message_stop" ;;
  esac
}

# Dump callgrind's counters of $1 now; prints the Ir since the last dump.
dump_ir() {
  local pid="$1" before after f
  before="$(find "$WORK/cg" -name "callgrind.out.$pid.*" | wc -l)"
  callgrind_control -d "$pid" >/dev/null 2>&1
  for _ in $(seq 100); do
    after="$(find "$WORK/cg" -name "callgrind.out.$pid.*" | wc -l)"
    ((after > before)) && break
    sleep 0.1
  done
  f="$WORK/cg/callgrind.out.$pid.$after"
  [ -s "$f" ] || { echo "no callgrind dump $f" >&2; return 1; }
  awk '/^totals:/ { print $2; exit }' "$f"
}

measure() {
  local target="$1" port admin pid mix path body expect url i1 i2
  read -r port admin < <(free_ports 2)
  mkdir -p "$WORK/cg"
  local vg=(taskset -c "$PROXY_CPU" valgrind --tool=callgrind --callgrind-out-file="$WORK/cg/callgrind.out.%p" ${VG_EXTRA:-})
  if [ "$target" = modelgate ]; then
    write_modelgate_config "$port" "$admin" "$WORK/mg"
    "${vg[@]}" "$MODELGATE_BIN" run -c "$WORK/mg/conf/modelgate.yaml" >"$WORK/mg.stdout" 2>"$WORK/$target.log" &
  else
    "${vg[@]}" "$BARE_BIN" --listen "127.0.0.1:$port" --upstream "127.0.0.1:$UP_PORT" --threads 1 >"$WORK/bare.stdout" 2>"$WORK/$target.log" &
  fi
  pid=$!
  track "$pid"
  wait_ready "http://127.0.0.1:$port/v1/chat/completions" "$WORK/chat.json" usage 300 "$pid"
  wait_tokenizer_loaded "$pid"
  for mix in "${MIXES[@]}"; do
    read -r path body expect < <(mix_request "$target" "$mix")
    url="http://127.0.0.1:$port$path"
    taskset -c "$LOAD_CPU" python3 "$HELPER" seq "$url" "$WORK/$body" --n "$WARM" --expect "$expect"
    dump_ir "$pid" >/dev/null
    taskset -c "$LOAD_CPU" python3 "$HELPER" seq "$url" "$WORK/$body" --n "$N1" --expect "$expect"
    i1="$(dump_ir "$pid")"
    taskset -c "$LOAD_CPU" python3 "$HELPER" seq "$url" "$WORK/$body" --n "$N2" --expect "$expect"
    i2="$(dump_ir "$pid")"
    IR[$target,$mix]=$(((i2 - i1) / (N2 - N1)))
    DUMP[$target,$mix]="$(find "$WORK/cg" -name "callgrind.out.$pid.*" | awk -F. '{ print $NF, $0 }' | sort -n | tail -1 | cut -d' ' -f2-)"
    echo "  $target $mix: Ir($N1) $i1, Ir($N2) $i2 → ${IR[$target,$mix]} per request" >&2
  done
  # Idle cost (timers, upkeep) over 3 s, to judge the noise in the above.
  dump_ir "$pid" >/dev/null
  sleep 3
  IR[$target,idle]=$(($(dump_ir "$pid") / 3))
  stop_pid "$pid" 60
}

echo "callgrind: instructions per request, (Ir(N2=$N2) − Ir(N1=$N1)) / $((N2 - N1)), after $WARM warm-up requests" >&2
read -r -a TARGETS <<<"${TARGETS:-bare modelgate}"
for target in "${TARGETS[@]}"; do
  measure "$target"
done
[ "${#TARGETS[@]}" = 2 ] || exit 0

fmt() { sed ':a;s/\B[0-9]\{3\}\>/,&/;ta' <<<"$1"; }
printf '\n%-13s %-30s %12s %12s %10s\n' mix request bare modelgate 'mg/bare'
for mix in "${MIXES[@]}"; do
  case "$mix" in
    json) what="OpenAI chat -> OpenAI" ;;
    stream) what="OpenAI chat stream -> OpenAI" ;;
    json-xlat) what="Anthropic messages -> OpenAI" ;;
    stream-xlat) what="Anthropic stream -> OpenAI" ;;
  esac
  b="${IR[bare,$mix]}" m="${IR[modelgate,$mix]}"
  printf '%-13s %-30s %12s %12s %10s\n' "$mix" "$what" "$(fmt "$b")" "$(fmt "$m")" "$(awk -v m="$m" -v b="$b" 'BEGIN { printf "%.2f", m / b }')"
done
printf '%-13s %-30s %12s %12s\n' idle "instructions per second" "$(fmt "${IR[bare,idle]}")" "$(fmt "${IR[modelgate,idle]}")"
echo "(bare forwards the xlat requests unchanged; only modelgate translates them)"

# Where modelgate's instructions go: the last dump of each mix (its N2
# requests), split into parts (benches/cg_breakdown.py).
for mix in "${MIXES[@]}"; do
  printf '\nmodelgate %s, per request:\n' "$mix"
  python3 benches/cg_breakdown.py "${DUMP[modelgate,$mix]}" "$N2" "${IR[bare,$mix]}"
done
