#!/usr/bin/env bash
# The systemd units in deploy/systemd/ parse cleanly: systemd-analyze verify
# reports nothing (unknown keys, bad values and missing binaries are all
# reported). ExecStart is pointed at the binaries Bazel built.
set -uo pipefail
if ! command -v systemd-analyze >/dev/null; then
  reason="systemd-analyze is not installed (package systemd)"
  echo "SKIP: $reason"
  # Report the skip as such (scripts/test lists it), not as a pass.
  if [ -n "${XML_OUTPUT_FILE:-}" ]; then
    cat >"$XML_OUTPUT_FILE" <<XML
<?xml version="1.0" encoding="UTF-8"?>
<testsuites><testsuite name="systemd_units_test" tests="1" skipped="1">
<testcase classname="SystemdUnits" name="Verify" result="skipped"><skipped message="$reason"/></testcase>
</testsuite></testsuites>
XML
  fi
  exit 0
fi
ws="${TEST_SRCDIR}/${TEST_WORKSPACE}"
out="${TEST_TMPDIR}/units"
mkdir -p "$out"
for unit in "$ws"/deploy/systemd/*.service; do
  sed -e "s|/usr/local/bin/ferry-controller|$ws/controller/ferry-controller|" \
      -e "s|/usr/local/bin/ferry-agent|$ws/agent/ferry-agent|" \
      "$unit" >"$out/$(basename "$unit")"
done
n=$(ls "$out"/*.service | wc -l)
[ "$n" -eq 2 ] || { echo "FAIL: expected 2 units, found $n"; exit 1; }
report=$(systemd-analyze verify "$out"/*.service 2>&1)
if [ -n "$report" ]; then
  echo "FAIL: systemd-analyze verify:"
  echo "$report"
  exit 1
fi
echo PASS
