#!/usr/bin/python3
"""Runs the real guest payload image in a CPU emulator (Unicorn), playing VMM.

Development check for machines without /dev/kvm: executes payload.bin as
built (entry stub, compiler output, rdtsc, `out`), interleaving several vCPUs,
then checks the status pages, the stamps and untouched memory. Runs as
//agent/guest:payload_emulation_test (python3-unicorn comes from Debian via
scripts/install-deps).

Unicorn runs the code at CPL0 without page tables (identity), so this does not
check the CPL3/U-bit/IOPL setup -- that is the VMM's job and its tests'.

Usage: emulate_payload.py path/to/payload.bin
"""
import struct
import sys

from unicorn import Uc, UC_ARCH_X86, UC_MODE_64, UC_HOOK_INSN, UcError
from unicorn.x86_const import UC_X86_INS_OUT, UC_X86_REG_RDI, UC_X86_REG_RIP

# abi.h constants (layout pinned there by _Static_assert).
PARAMS_GPA, LOAD_GPA, STATUS_GPA = 0x3000, 0x100000, 0x200000
TABLE_GPA, WS_GPA, PAGE = 0x800000, 0x1000000, 0x1000
EVENT_PORT, EV_STARTED, EV_FATAL = 0x0FF0, 1, 2
PARAMS_MAGIC, STATUS_MAGIC = 0x3150595252454646, 0x3153595252454646
P_OFF = dict(magic=0x0, version=0x8, mem_size=0x10, nr_vcpus=0x18, kind=0x20,
             ws_gpa=0x28, ws_pages=0x30, stamp_table_gpa=0x38,
             target_dirty_pages_per_sec=0x40, tsc_hz=0x48, seed=0x50,
             hot_fraction_permille=0x58, hot_probability_permille=0x60,
             verify_interval_batches=0x68, verify_chunk_pages=0x70)
S_OFF = dict(magic=0x0, state=0x18, fatal_code=0x20, kind=0x28,
             slice_first_page=0x30, slice_pages=0x38, iterations=0x40,
             pages_written=0x48, last_stamp=0x50, cur_page=0x58,
             selfcheck_errors=0x60, verify_passes=0x68, pages_verified=0x70)
UNIFORM, HOTCOLD, SEQUENTIAL, MIXED = 2, 3, 4, 5


class Vm:
    def __init__(self, payload, ws_pages, nr_vcpus, **params):
        self.mem_size = WS_GPA + ws_pages * PAGE
        self.uc = Uc(UC_ARCH_X86, UC_MODE_64)
        self.uc.mem_map(PAGE, self.mem_size - PAGE)  # page 0 stays unmapped
        self.uc.mem_write(LOAD_GPA, payload)
        p = dict(magic=PARAMS_MAGIC, version=1, mem_size=self.mem_size,
                 nr_vcpus=nr_vcpus, kind=UNIFORM, ws_gpa=WS_GPA,
                 ws_pages=ws_pages, stamp_table_gpa=TABLE_GPA, tsc_hz=10**9,
                 seed=1, hot_fraction_permille=100,
                 hot_probability_permille=900)
        p.update(params)
        for k, v in p.items():
            self.w64(PARAMS_GPA + P_OFF[k], v)
        self.events = []
        self.uc.hook_add(UC_HOOK_INSN, self._on_out, None, 1, 0, UC_X86_INS_OUT)
        self.nr_vcpus, self.ws_pages = nr_vcpus, ws_pages
        self.ctx = []
        for v in range(nr_vcpus):  # the VMM's entry convention: RDI, RIP
            self.uc.reg_write(UC_X86_REG_RDI, v)
            self.uc.reg_write(UC_X86_REG_RIP, LOAD_GPA)
            self.ctx.append(self.uc.context_save())
        self.current = 0

    def _on_out(self, uc, port, size, value, _):
        self.events.append((self.current, port, size, value))

    def r64(self, gpa):
        return struct.unpack("<Q", self.uc.mem_read(gpa, 8))[0]

    def w64(self, gpa, v):
        self.uc.mem_write(gpa, struct.pack("<Q", v))

    def status(self, v, field):
        return self.r64(STATUS_GPA + v * PAGE + S_OFF[field])

    def run(self, slices, insns_per_slice):
        """Round-robin the vCPUs like a host scheduler would."""
        for _ in range(slices):
            for v in range(self.nr_vcpus):
                self.current = v
                self.uc.context_restore(self.ctx[v])
                rip = self.uc.reg_read(UC_X86_REG_RIP)
                self.uc.emu_start(rip, 0, count=insns_per_slice)
                self.ctx[v] = self.uc.context_save()


def expect(cond, what):
    if not cond:
        raise SystemExit("FAIL: " + what)
    print("ok:", what)


def check_memory(vm):
    mem = bytes(vm.uc.mem_read(WS_GPA, vm.ws_pages * PAGE))
    table = bytes(vm.uc.mem_read(TABLE_GPA, vm.ws_pages * 8))
    written = 0
    for p in range(vm.ws_pages):
        stamp = struct.unpack_from("<Q", table, 8 * p)[0]
        page = mem[p * PAGE:(p + 1) * PAGE]
        if stamp == 0:
            if page.count(0) != PAGE:
                raise SystemExit("FAIL: untouched page %d not zero" % p)
            continue
        written += 1
        head, tail = struct.unpack_from("<Q", page, 0)[0], struct.unpack_from("<Q", page, PAGE - 8)[0]
        if (head, tail) != (stamp, stamp) or stamp & 0xffffffff != p or stamp >> 63 != 1:
            raise SystemExit("FAIL: page %d head %x tail %x table %x" % (p, head, tail, stamp))
        if page[8:PAGE - 8].count(0) != PAGE - 16:
            raise SystemExit("FAIL: page %d has bytes outside its stamps" % p)
    return written


def main():
    payload = open(sys.argv[1], "rb").read()
    print("payload: %d bytes" % len(payload))

    vm = Vm(payload, ws_pages=512, nr_vcpus=3, kind=MIXED,
            verify_interval_batches=4, verify_chunk_pages=32)
    vm.run(slices=40, insns_per_slice=20000)
    started = [(v, val) for (v, port, size, val) in vm.events if port == EVENT_PORT]
    expect(started == [(v, EV_STARTED | (v << 8)) for v in range(3)],
           "each vCPU reports STARTED once through port 0x%x: %s" % (EVENT_PORT, started))
    for v in range(3):
        expect(vm.status(v, "magic") == STATUS_MAGIC and vm.status(v, "state") == 1,
               "vCPU %d status RUNNING" % v)
        expect(vm.status(v, "kind") == [UNIFORM, HOTCOLD, SEQUENTIAL][v],
               "vCPU %d MIXED rotation kind %d" % (v, vm.status(v, "kind")))
        expect(vm.status(v, "pages_written") > 1000,
               "vCPU %d wrote %d pages" % (v, vm.status(v, "pages_written")))
        expect(vm.status(v, "pages_verified") > 0 and vm.status(v, "selfcheck_errors") == 0,
               "vCPU %d verified %d pages, 0 errors" % (v, vm.status(v, "pages_verified")))
    # vCPUs may be stopped mid-write: exempt their cur_page like wl_check_all.
    written = check_memory_exempting(vm)
    expect(written > 300, "stamps consistent, untouched pages zero (%d pages written)" % written)

    # Corrupt every written page: the guest's own verifier must catch it.
    # (One page is not enough: its vCPU may rewrite it, healing the stamp,
    # before the verifier's cursor gets there.)
    victims = [p for p in range(512) if vm.r64(TABLE_GPA + 8 * p) != 0]
    for p in victims:
        vm.w64(WS_GPA + p * PAGE, 0xdead)
    vm.run(slices=60, insns_per_slice=20000)
    errors = sum(vm.status(v, "selfcheck_errors") for v in range(3))
    expect(errors >= 1, "guest self-check caught corrupted pages (%d of %d corrupted pages)" % (errors, len(victims)))

    bad = Vm(payload, ws_pages=16, nr_vcpus=1, magic=0)
    bad.run(slices=2, insns_per_slice=5000)
    expect([e[3] for e in bad.events] == [EV_FATAL | (1 << 8)], "bad magic -> FATAL(1) event")
    expect(bad.status(0, "state") == 2 and bad.status(0, "fatal_code") == 1, "FATAL status")
    expect(bad.uc.mem_read(WS_GPA, 16 * PAGE).count(0) == 16 * PAGE, "failed guest wrote nothing")

    slow = Vm(payload, ws_pages=64, nr_vcpus=1, target_dirty_pages_per_sec=1000)
    slow.run(slices=20, insns_per_slice=50000)
    fast = Vm(payload, ws_pages=64, nr_vcpus=1)
    fast.run(slices=20, insns_per_slice=50000)
    ps, pf = slow.status(0, "pages_written"), fast.status(0, "pages_written")
    expect(ps * 20 < pf, "pacing throttles: %d pages at 1000/s vs %d unthrottled" % (ps, pf))
    print("PASS")


def check_memory_exempting(vm):
    exempt = {vm.status(v, "cur_page") for v in range(vm.nr_vcpus)}
    saved = {}
    for p in exempt:
        if p < vm.ws_pages:  # blank the in-flight page and its entry for the scan
            saved[p] = (bytes(vm.uc.mem_read(WS_GPA + p * PAGE, PAGE)), vm.r64(TABLE_GPA + 8 * p))
            vm.uc.mem_write(WS_GPA + p * PAGE, b"\0" * PAGE)
            vm.w64(TABLE_GPA + 8 * p, 0)
    written = check_memory(vm)
    for p, (page, entry) in saved.items():
        vm.uc.mem_write(WS_GPA + p * PAGE, page)
        vm.w64(TABLE_GPA + 8 * p, entry)
    return written


if __name__ == "__main__":
    main()
