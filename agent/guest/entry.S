/*
 * Payload entry, first bytes of the image at FERRY_GUEST_ENTRY_GPA. Runs at
 * CPL3 from the first instruction (kvm_pvm emulates CPL0 very slowly).
 * In:  RDI = vCPU index (set by the VMM). Nothing else is assumed: RSP is
 *      derived here from the index so the VMM need not compute it.
 * Out: never returns. Never faults on purpose: no hlt/ud2/syscall, since a
 *      fault at CPL3 with no IDT is a triple fault (KVM_EXIT_SHUTDOWN).
 */
#include "agent/guest/abi.h"

	.section .text.entry, "ax"
	.globl _start
	.type _start, @function
_start:
	cmp	$FERRY_GUEST_MAX_VCPUS, %rdi
	jae	.Lspin			/* no stack/status page for it: park */
	mov	%rdi, %rax
	inc	%rax
	shl	$FERRY_GUEST_STACK_SHIFT, %rax
	add	$FERRY_GUEST_STACKS_GPA, %rax
	mov	%rax, %rsp		/* 16-byte aligned top of this vCPU's stack */
	xor	%ebp, %ebp		/* terminate frame-pointer chains */
	call	guest_main		/* guest_main(rdi = vCPU index) */
.Lspin:
	pause
	jmp	.Lspin
	.size _start, . - _start
