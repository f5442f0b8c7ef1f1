#!/bin/sh
# Runs tools/emulate_payload.py on the built payload. A missing emulator is a
# broken install (scripts/install-deps adds python3-unicorn), so it fails.
set -eu
if ! /usr/bin/python3 -c 'import unicorn' 2>/dev/null; then
  echo "python3-unicorn is missing: run scripts/install-deps" >&2
  exit 1
fi
exec /usr/bin/python3 "$1" "$2"
