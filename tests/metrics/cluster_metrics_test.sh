#!/usr/bin/env bash
# deploy/local/cluster --metrics --prometheus with the binaries Bazel built:
# the controller and each agent serve /metrics on the fixed ports that
# deploy/prometheus/prometheus.yml scrapes (agents 127.0.0.1:946N, the
# controller 127.0.0.1:9470), Debian's prometheus started by the script
# scrapes all of them, and `down` stops it too. Skips (exit 0, reason
# printed) where those fixed ports are taken or prometheus is missing.
set -uo pipefail
ws="${TEST_SRCDIR}/${TEST_WORKSPACE}"
cluster="$ws/deploy/local/cluster"
bin="${TEST_TMPDIR}/bin"
mkdir -p "$bin"
ln -sf "$ws/controller/ferry-controller" "$ws/agent/ferry-agent" "$ws/cli/ferryctl" "$bin/"
dir="${TEST_TMPDIR}/cluster"
fail() { echo "FAIL: $*"; tail -n 20 "$dir"/*.log 2>/dev/null; "$cluster" down --dir "$dir" >/dev/null 2>&1; exit 1; }
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# Never fails itself: under pipefail `curl | grep -q` would fail when grep
# stops reading early and curl gets SIGPIPE.
get() { curl -sf "$1" 2>/dev/null || true; }

# Bad use is refused before anything starts.
"$cluster" up --agents 10 --metrics --dir "$dir" --bin "$bin" 2>"$TEST_TMPDIR/err"
[ $? -eq 2 ] || fail "--metrics with 10 agents should exit 2"
grep -q "at most 9 agents" "$TEST_TMPDIR/err" || fail "no reason given: $(cat "$TEST_TMPDIR/err")"
[ ! -e "$dir/env" ] || fail "a refused up left $dir/env"

for p in 9461 9462 9470; do
  if port_busy "$p"; then echo "SKIP: 127.0.0.1:$p is taken (a local cluster running?)"; exit 0; fi
done
if ! command -v prometheus >/dev/null; then
  echo "SKIP: prometheus not installed (Debian package prometheus)"; exit 0
fi

"$cluster" up --agents 2 --dir "$dir" --backend soft --agent-memory 1GiB --bin "$bin" \
  --prometheus || fail "cluster up --prometheus"
. "$dir/env"
[ -n "${FERRY_PROMETHEUS:-}" ] || fail "env file lacks FERRY_PROMETHEUS"

get http://127.0.0.1:9461/metrics | grep -q '^ferry_host_vms{host="host-1"}' ||
  fail "host-1 does not serve its metrics on 9461"
get http://127.0.0.1:9462/metrics | grep -q '^ferry_host_vms{host="host-2"}' ||
  fail "host-2 does not serve its metrics on 9462"
get http://127.0.0.1:9470/metrics | grep -q '^ferry_controller_hosts{readiness="ready"} 2' ||
  fail "the controller does not serve 2 ready hosts on 9470"

# Prometheus scrapes every daemon (5 s interval in prometheus.yml) and
# loaded the rules.
up=0
for _ in $(seq 60); do
  up=$(get "$FERRY_PROMETHEUS/api/v1/query?query=up" | grep -o '"value":\[[0-9.]*,"1"\]' | wc -l)
  [ "$up" -eq 3 ] && break
  sleep 0.5
done
[ "$up" -eq 3 ] || fail "prometheus sees $up of 3 targets up: $(curl -s "$FERRY_PROMETHEUS/api/v1/targets")"
get "$FERRY_PROMETHEUS/api/v1/rules" | grep -q FerryHostNotReady || fail "rules not loaded"
get "$FERRY_PROMETHEUS/api/v1/targets" | grep -q '127.0.0.1:9463' &&
  fail "prometheus scrapes a third agent that was not started"

"$cluster" status --dir "$dir" | grep -c running | grep -qx 4 ||
  fail "status: 4 processes (controller, 2 agents, prometheus) running expected"
pids=$(cat "$dir"/*.pid)
"$cluster" down --dir "$dir" || fail "down"
[ ! -e "$dir" ] || fail "down left $dir"
for p in $pids; do
  if kill -0 "$p" 2>/dev/null; then fail "pid $p still running after down"; fi
done
for p in 9461 9462 9470; do
  if port_busy "$p"; then fail "127.0.0.1:$p still served after down"; fi
done
echo PASS
