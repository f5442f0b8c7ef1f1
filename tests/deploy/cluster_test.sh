#!/usr/bin/env bash
# deploy/local/cluster end to end with the binaries Bazel built: up with two
# agents (soft backend, so it runs anywhere), every agent READY, a VM
# created and migrated with ferryctl, the REST API answering, a second `up`
# on the same dir refused, status, down (nothing left running, dir gone).
set -uo pipefail
ws="${TEST_SRCDIR}/${TEST_WORKSPACE}"
cluster="$ws/deploy/local/cluster"
bin="${TEST_TMPDIR}/bin"
mkdir -p "$bin"
ln -sf "$ws/controller/ferry-controller" "$ws/agent/ferry-agent" "$ws/cli/ferryctl" "$bin/"
dir="${TEST_TMPDIR}/cluster"
fail() { echo "FAIL: $*"; tail -n 20 "$dir"/*.log 2>/dev/null; "$cluster" down --dir "$dir" >/dev/null 2>&1; exit 1; }

"$cluster" up --agents 2 --dir "$dir" --backend soft --agent-memory 1GiB --bin "$bin" ||
  fail "cluster up"
. "$dir/env"
[ -n "${FERRY_SERVER:-}" ] && [ -n "${FERRY_REST:-}" ] || fail "env file lacks the addresses"
ferryctl get hosts | grep -c Ready | grep -qx 2 || fail "two Ready hosts expected"
ferryctl create vm t1 --memory 64MiB --vcpus 1 --workload uniform --dirty-rate 2MB/s ||
  fail "create vm"
for _ in $(seq 50); do
  ferryctl get vm t1 -o json | grep -q VM_PHASE_RUNNING && break
  sleep 0.2
done
from=$(ferryctl get vm t1 -o json | sed -n 's/.*"host": *"\([^"]*\)".*/\1/p' | head -1)
ferryctl migrate vm t1 --max-downtime 500ms || fail "migrate"
to=$(ferryctl get vm t1 -o json | sed -n 's/.*"host": *"\([^"]*\)".*/\1/p' | head -1)
[ -n "$from" ] && [ "$from" != "$to" ] || fail "vm did not move ($from -> $to)"
curl -sf "http://$FERRY_REST/v1/vms/t1" | grep -q "\"host\": *\"$to\"" || fail "REST does not show the VM on $to"

if "$cluster" up --dir "$dir" --bin "$bin" 2>/dev/null; then fail "a second up on the same dir was accepted"; fi
"$cluster" status --dir "$dir" | grep -c running | grep -qx 3 || fail "status: 3 daemons running expected"
pids=$(cat "$dir"/*.pid)
"$cluster" down --dir "$dir" || fail "down"
[ ! -e "$dir" ] || fail "down left $dir"
for p in $pids; do
  if kill -0 "$p" 2>/dev/null; then fail "pid $p still running after down"; fi
done
echo PASS
