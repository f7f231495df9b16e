# shellcheck shell=bash
# Shared by benches/engine.sh and benches/callgrind.sh: the upstream (nginx
# answering a fixed chat.completion, and a Python SSE upstream behind it at
# /sse/), the targets (nginx proxy_pass, the bare Pingora engine, modelgate)
# and process bookkeeping. Sourced, not run; expects `set -euo pipefail`.
# Everything listens on 127.0.0.1.

BENCH_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HELPER="$BENCH_ROOT/benches/engine_helper.py"
MODELGATE_BIN="${MODELGATE_BIN:-$BENCH_ROOT/target/release/modelgate}"
BARE_BIN="${BARE_BIN:-$BENCH_ROOT/target/release/examples/bare_proxy}"
PATH="$PATH:/usr/sbin:/sbin"

BENCH_PIDS=()
WORK=""

helper() { python3 "$HELPER" "$@"; }

# Remember a started process so the exit trap ends it; forget it once it
# has been waited for (its pid may be reused).
track() { BENCH_PIDS+=("$1"); }
untrack() {
  local keep=() p
  for p in "${BENCH_PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  BENCH_PIDS=("${keep[@]}")
}

# Is process $1 running (not gone, not a zombie waiting to be reaped)?
alive() {
  local state
  state="$(awk '{ sub(/^.*\) /, ""); print $1 }' "/proc/$1/stat" 2>/dev/null)" && [ -n "$state" ] && [ "$state" != Z ]
}

# TERM, then KILL after $2 seconds (default 5); waits for it to go.
stop_pid() {
  local pid="$1" grace="${2:-5}" i
  untrack "$pid"
  if ! kill -0 "$pid" 2>/dev/null; then
    wait "$pid" 2>/dev/null || true
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < grace * 10; i++)); do
    alive "$pid" || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

bench_cleanup() {
  local rc=$? pid
  for pid in "${BENCH_PIDS[@]+"${BENCH_PIDS[@]}"}"; do
    stop_pid "$pid" 2
  done
  if [ -n "$WORK" ] && [ -d "$WORK" ]; then
    if [ "$rc" = 0 ] && [ "${KEEP_WORK:-0}" != 1 ]; then rm -rf "$WORK"; else echo "logs and configs kept in $WORK" >&2; fi
  fi
  return "$rc"
}

bench_init() {
  WORK="$(mktemp -d "${TMPDIR:-/tmp}/modelgate-bench.XXXXXX")"
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
  # 2,000 held streams and 3,000 idle connections need file descriptors.
  ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
}

# Usage: read -r a b c < <(free_ports 3)
free_ports() { helper free-ports "$1" | tr '\n' ' '; echo; }

# Wait until a POST of BODY to URL answers 200 with EXPECT in it.
wait_ready() {
  local url="$1" body="$2" expect="$3" timeout="${4:-30}" pid="${5:-}" t0=$SECONDS
  while ! helper probe "$url" "$body" --expect "$expect" 2>/dev/null; do
    if [ -n "$pid" ] && ! alive "$pid"; then
      echo "process $pid exited before $url answered" >&2
      return 1
    fi
    if ((SECONDS - t0 > timeout)); then
      echo "no answer from $url after ${timeout}s:" >&2
      helper probe "$url" "$body" --expect "$expect" || true
      return 1
    fi
    sleep 0.2
  done
}

# Sum of utime+stime (clock ticks) of the given pids and their children;
# with PROC_TICKS=sys, stime (time in the kernel) only.
proc_ticks() {
  local total=0 pid t
  for pid in "$@"; do
    for t in $pid $(pgrep -P "$pid" || true); do
      [ -r "/proc/$t/stat" ] || continue
      total=$((total + $(awk -v sys="${PROC_TICKS:-}" '{ sub(/^.*\) /, ""); print (sys == "sys" ? 0 : $12) + $13 }' "/proc/$t/stat")))
    done
  done
  echo "$total"
}

rss_kib() { helper rss "$1"; }

# modelgate loads its tokenizer on a thread of its own at start (seconds,
# about a minute under valgrind): wait until that thread of pid $1 ended.
wait_tokenizer_loaded() {
  while grep -qx tokenizer /proc/"$1"/task/*/comm 2>/dev/null; do sleep 0.2; done
}

# The request bodies: ~2 KB OpenAI chat (JSON and stream), a stream that the
# SSE upstream holds open, and the Anthropic Messages forms.
make_bodies() {
  helper body "$WORK/chat.json"
  helper body "$WORK/chat-stream.json" --stream
  helper body "$WORK/chat-hold.json" --stream --hold
  helper body "$WORK/messages.json" --anthropic
  helper body "$WORK/messages-stream.json" --anthropic --stream
}

ANSWER='{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! This is the fixed benchmark answer."},"finish_reason":"stop"}],"usage":{"prompt_tokens":512,"completion_tokens":12,"total_tokens":524}}'

nginx_common() {
  local dir="$1"
  mkdir -p "$dir/tmp"
  cat <<EOF
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
worker_rlimit_nofile 20000;
events { worker_connections 16000; }
http {
  access_log off;
  client_body_temp_path $dir/tmp/body;
  proxy_temp_path $dir/tmp/proxy;
  fastcgi_temp_path $dir/tmp/fastcgi;
  uwsgi_temp_path $dir/tmp/uwsgi;
  scgi_temp_path $dir/tmp/scgi;
  client_body_buffer_size 64k;
  keepalive_requests 100000000;
  keepalive_timeout 600s;
EOF
}

# The upstream: nginx on UP_PORT answering every POST with $ANSWER, and
# /sse/... proxied unbuffered to the Python SSE upstream on SSE_PORT.
# Pinned to CPU $LOAD_CPU; $SSE_ARGS are extra sse-upstream options. Sets
# UP_PID and SSE_PID.
start_upstream() {
  local dir="$WORK/upstream"
  mkdir -p "$dir"
  # shellcheck disable=SC2086 # SSE_ARGS is a list of options
  taskset -c "$LOAD_CPU" python3 "$HELPER" sse-upstream --port "$SSE_PORT" ${SSE_ARGS:-} >"$dir/sse.log" 2>&1 &
  SSE_PID=$!
  track "$SSE_PID"
  {
    nginx_common "$dir"
    cat <<EOF
  upstream sse { server 127.0.0.1:$SSE_PORT; keepalive 512; }
  server {
    listen 127.0.0.1:$UP_PORT backlog=4096;
    location /sse/ {
      proxy_pass http://sse/;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_read_timeout 600s;
    }
    location / {
      default_type application/json;
      return 200 '$ANSWER';
    }
  }
}
EOF
  } >"$dir/nginx.conf"
  taskset -c "$LOAD_CPU" nginx -p "$dir/" -e "$dir/error.log" -c "$dir/nginx.conf" &
  UP_PID=$!
  track "$UP_PID"
  wait_ready "http://127.0.0.1:$UP_PORT/v1/chat/completions" "$WORK/chat.json" usage 10 "$UP_PID"
  wait_ready "http://127.0.0.1:$UP_PORT/sse/v1/chat/completions" "$WORK/chat-stream.json" "[DONE]" 10 "$SSE_PID"
}

# The reference proxy: nginx proxy_pass with a keep-alive upstream pool,
# unbuffered (as LLM proxies are configured for SSE). Sets NGINX_PID.
start_nginx_proxy() {
  local port="$1" cpu="$2" dir="$WORK/nginx-proxy"
  mkdir -p "$dir"
  {
    nginx_common "$dir"
    cat <<EOF
  upstream up { server 127.0.0.1:$UP_PORT; keepalive 256; keepalive_requests 100000000; }
  server {
    listen 127.0.0.1:$port backlog=4096;
    location / {
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_read_timeout 600s;
    }
  }
}
EOF
  } >"$dir/nginx.conf"
  taskset -c "$cpu" nginx -p "$dir/" -e "$dir/error.log" -c "$dir/nginx.conf" &
  NGINX_PID=$!
  track "$NGINX_PID"
}

# modelgate's config: the shipped default's shape (conf/modelgate.yaml:
# models with prices, the task routes, routing mode, retry, breaker) with
# its providers on the upstream, routes that apply to the bench requests,
# two budgets that apply to every request, the access log to a file and
# metrics on the admin port. Streams go to a second OpenAI-kind provider
# (the upstream's /sse/ path); Anthropic requests for claude-* are served
# by gpt-4o-mini (translated). The config and the access log are in
# different folders (the config's folder is watched).
write_modelgate_config() {
  local port="$1" admin="$2" dir="$3"
  mkdir -p "$dir/conf" "$dir/log"
  cat >"$dir/conf/modelgate.yaml" <<EOF
listen:
  gateway: 127.0.0.1:$port
  admin: 127.0.0.1:$admin
state_dir: $dir/data
max_body_bytes: 33554432
access_log: $dir/log/access.log
# The bench's one client key (sk-bench) is valid for every provider here.
cross_provider_client_keys: true

providers:
  openai:
    kind: openai
    base_url: http://127.0.0.1:$UP_PORT/v1
  openai-stream:
    kind: openai
    base_url: http://127.0.0.1:$UP_PORT/sse/v1
  anthropic:
    kind: anthropic
    base_url: http://127.0.0.1:$UP_PORT

models:
  gpt-4o:
    provider: openai
    input_usd_per_mtok: 2.50
    cached_input_usd_per_mtok: 1.25
    output_usd_per_mtok: 10.00
    context_tokens: 128000
    max_output_tokens: 16384
    capabilities: [tools, json, vision, streaming]
    quality: 4
    fallbacks: [gpt-4o-mini]
  gpt-4o-mini:
    provider: openai
    input_usd_per_mtok: 0.15
    cached_input_usd_per_mtok: 0.075
    output_usd_per_mtok: 0.60
    context_tokens: 128000
    max_output_tokens: 16384
    capabilities: [tools, json, vision, streaming]
    quality: 2
  gpt-4o-mini-stream:
    provider: openai-stream
    id: gpt-4o-mini
    input_usd_per_mtok: 0.15
    cached_input_usd_per_mtok: 0.075
    output_usd_per_mtok: 0.60
    context_tokens: 128000
    max_output_tokens: 16384
    capabilities: [tools, json, vision, streaming]
    quality: 2
  gpt-5-mini:
    provider: openai
    input_usd_per_mtok: 0.25
    cached_input_usd_per_mtok: 0.025
    output_usd_per_mtok: 2.00
    context_tokens: 400000
    max_output_tokens: 128000
    capabilities: [tools, json, vision, streaming, reasoning]
    quality: 3
  claude-opus-4-1:
    provider: anthropic
    id: claude-opus-4-1-20250805
    input_usd_per_mtok: 15.00
    cached_input_usd_per_mtok: 1.50
    output_usd_per_mtok: 75.00
    context_tokens: 200000
    max_output_tokens: 32000
    capabilities: [tools, vision, streaming, reasoning]
    quality: 5
    fallbacks: [claude-sonnet-4-5]
  claude-sonnet-4-5:
    provider: anthropic
    id: claude-sonnet-4-5-20250929
    input_usd_per_mtok: 3.00
    cached_input_usd_per_mtok: 0.30
    output_usd_per_mtok: 15.00
    context_tokens: 200000
    max_output_tokens: 64000
    capabilities: [tools, vision, streaming, reasoning]
    quality: 4
  claude-haiku-4-5:
    provider: anthropic
    id: claude-haiku-4-5-20251001
    input_usd_per_mtok: 1.00
    cached_input_usd_per_mtok: 0.10
    output_usd_per_mtok: 5.00
    context_tokens: 200000
    max_output_tokens: 64000
    capabilities: [tools, vision, streaming]
    quality: 3

routes:
  - name: extraction
    match: { task: extraction, dialect: openai }
    target: gpt-5-mini
    fallbacks: [gpt-4o-mini]
  - name: planning
    match: { task: planning, dialect: anthropic }
    target: claude-opus-4-1
  - name: classification
    match: { task: classification, dialect: anthropic }
    target: claude-haiku-4-5
  - name: mini-stream
    match: { model: "gpt-4o*", stream: true }
    target: gpt-4o-mini-stream
  - name: mini
    match: { model: "gpt-4o*" }
    target: gpt-4o-mini
  - name: claude-on-gpt-stream
    match: { model: "claude-*", stream: true }
    target: gpt-4o-mini-stream
  - name: claude-on-gpt
    match: { model: "claude-*" }
    target: gpt-4o-mini

routing:
  mode: balanced

budgets:
  - name: daily-total
    scope: global
    window: day
    limit_usd: 1000000
    warn_at: 0.8
    on_exceed: downgrade
    downgrade_to: gpt-4o-mini
  - name: monthly-cap
    window: month
    limit_usd: 1000000
    on_exceed: reject

retry:
  max_attempts: 2
  backoff_ms: 200
  max_backoff_ms: 2000
  max_retry_after_ms: 5000
  on_status: [408, 429, 500, 502, 503, 504, 529]
breaker:
  failures: 5
  failure_rate: 0.5
  window_ms: 60000
  min_requests: 20
  cooldown_ms: 30000
EOF
  if [ "${MG_BENCH_TRACING:-0}" = 1 ]; then
    # Every request traced; the bench upstream takes the exports (it
    # answers 404, counted as export_failed: modelgate's own work — spans
    # built, encoded and sent — is the same as with a collector).
    printf 'telemetry:\n  otlp_endpoint: http://127.0.0.1:%s\n  sample_ratio: 1.0\n' "$UP_PORT" >>"$dir/conf/modelgate.yaml"
  fi
  "$MODELGATE_BIN" check -c "$dir/conf/modelgate.yaml" >/dev/null
}
