#!/bin/bash
# Checks the built payload for instructions that would fault (and so triple
# fault) at CPL3 without an IDT, and for SSE/AVX state the VMM never enables.
set -euo pipefail
elf="$1"
dis="$(objdump -d --no-show-raw-insn "$elf")"
if ! grep -q '<_start>:' <<<"$dis"; then
  echo "FAIL: no _start in $elf" >&2
  exit 1
fi
# Mnemonic is the second tab-separated field of an instruction line.
mnemonics="$(awk -F'\t' '/^ *[0-9a-f]+:\t/ {split($2, m, " "); print m[1]}' <<<"$dis" | sort -u)"
forbidden='^(hlt|syscall|sysenter|sysret|sysexit|ud2|ud1|ud0|int|int3|into|iret|iretq|cli|sti|lgdt|lidt|ltr|lldt|invlpg|wrmsr|rdmsr|clts|wbinvd|invd|vmcall|vmmcall|rdtscp|in|ins|outs|insb|insl|outsb|outsl)$'
if bad="$(grep -E "$forbidden" <<<"$mnemonics")"; then
  echo "FAIL: forbidden instructions in payload:" $bad >&2
  exit 1
fi
if grep -Eq '%(x|y|z)mm[0-9]|%cr[0-9]|%dr[0-9]' <<<"$dis"; then
  echo "FAIL: payload uses SSE/AVX or control/debug registers" >&2
  grep -E '%(x|y|z)mm[0-9]|%cr[0-9]|%dr[0-9]' <<<"$dis" | head >&2
  exit 1
fi
# Exactly the expected privileged-but-allowed ones: out (IOPL=3), rdtsc, pause.
for need in out rdtsc pause; do
  grep -qx "$need" <<<"$mnemonics" || { echo "FAIL: expected '$need' in payload" >&2; exit 1; }
done
echo "PASS: $(wc -l <<<"$mnemonics") distinct mnemonics, none forbidden"
