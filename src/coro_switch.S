/*
 * The coroutine context switch (see coro.c). Only the registers the C calling convention says a
 * callee must preserve are saved, because coro__switch is entered by an ordinary call: the
 * compiler has already spilled everything else. They are pushed on the stack being left and the
 * resulting stack pointer is stored through the first argument; then the second argument becomes
 * the stack pointer and the same frame layout is popped from it. A new coroutine's stack is
 * prepared by coro.c with that layout, so its first switch "returns" into coro__trampoline.
 *
 *   void coro__switch(void **save_sp, void *to_sp);
 *
 * The floating-point control state (rounding mode, exception masks) is callee-saved as well, so
 * it is switched too: a handler that changes the rounding mode and then waits must not change it
 * for the event loop. Other architectures use the ucontext fallback in coro.c; this file then
 * assembles to nothing. CORO_USE_UCONTEXT selects the fallback everywhere.
 */

#if defined(__x86_64__) && !defined(CORO_USE_UCONTEXT)

/*
 * Frame, from the saved stack pointer up (64 bytes, so a 16-byte aligned frame start leaves the
 * stack 16-byte aligned after the final ret, as the trampoline's call needs):
 *   0: MXCSR (4 bytes), 4: x87 control word (2 bytes), 8: r15, 16: r14, 24: r13, 32: r12,
 *   40: rbx, 48: rbp, 56: return address.
 */
	.text
	.globl	coro__switch
	.hidden	coro__switch
	.type	coro__switch, @function
	.p2align 4
coro__switch:
	.cfi_startproc
	pushq	%rbp
	.cfi_adjust_cfa_offset 8
	pushq	%rbx
	.cfi_adjust_cfa_offset 8
	pushq	%r12
	.cfi_adjust_cfa_offset 8
	pushq	%r13
	.cfi_adjust_cfa_offset 8
	pushq	%r14
	.cfi_adjust_cfa_offset 8
	pushq	%r15
	.cfi_adjust_cfa_offset 8
	subq	$8, %rsp
	.cfi_adjust_cfa_offset 8
	stmxcsr	(%rsp)
	fnstcw	4(%rsp)
	movq	%rsp, (%rdi)
	movq	%rsi, %rsp
	ldmxcsr	(%rsp)
	fldcw	4(%rsp)
	addq	$8, %rsp
	popq	%r15
	popq	%r14
	popq	%r13
	popq	%r12
	popq	%rbx
	popq	%rbp
	ret
	.cfi_endproc
	.size	coro__switch, .-coro__switch

/*
 * First code of a coroutine: r12 holds the coroutine, r13 the C entry function, both placed in
 * the initial frame by coro.c. The entry function never returns (a finished coroutine switches
 * away for good); ud2 traps if it ever did. The undefined return address ends backtraces here.
 */
	.globl	coro__trampoline
	.hidden	coro__trampoline
	.type	coro__trampoline, @function
	.p2align 4
coro__trampoline:
	.cfi_startproc
	.cfi_undefined rip
	movq	%r12, %rdi
	callq	*%r13
	ud2
	.cfi_endproc
	.size	coro__trampoline, .-coro__trampoline

#elif defined(__aarch64__) && !defined(CORO_USE_UCONTEXT)

/*
 * Frame, from the saved stack pointer up (176 bytes, a multiple of 16 as sp must stay):
 *   0: x19 x20, 16: x21 x22, 32: x23 x24, 48: x25 x26, 64: x27 x28, 80: x29 (frame pointer)
 *   x30 (return address), 96: d8 d9, 112: d10 d11, 128: d12 d13, 144: d14 d15, 160: FPCR.
 * FPCR is written back only when it differs, because a write to it can stall the pipeline.
 */
	.text
	.globl	coro__switch
	.hidden	coro__switch
	.type	coro__switch, %function
	.p2align 4
coro__switch:
	.cfi_startproc
	sub	sp, sp, #176
	.cfi_adjust_cfa_offset 176
	stp	x19, x20, [sp, #0]
	stp	x21, x22, [sp, #16]
	stp	x23, x24, [sp, #32]
	stp	x25, x26, [sp, #48]
	stp	x27, x28, [sp, #64]
	stp	x29, x30, [sp, #80]
	stp	d8, d9, [sp, #96]
	stp	d10, d11, [sp, #112]
	stp	d12, d13, [sp, #128]
	stp	d14, d15, [sp, #144]
	mrs	x2, fpcr
	str	x2, [sp, #160]
	mov	x3, sp
	str	x3, [x0]
	mov	sp, x1
	ldr	x3, [sp, #160]
	cmp	x2, x3
	b.eq	1f
	msr	fpcr, x3
1:
	ldp	x19, x20, [sp, #0]
	ldp	x21, x22, [sp, #16]
	ldp	x23, x24, [sp, #32]
	ldp	x25, x26, [sp, #48]
	ldp	x27, x28, [sp, #64]
	ldp	x29, x30, [sp, #80]
	ldp	d8, d9, [sp, #96]
	ldp	d10, d11, [sp, #112]
	ldp	d12, d13, [sp, #128]
	ldp	d14, d15, [sp, #144]
	add	sp, sp, #176
	ret
	.cfi_endproc
	.size	coro__switch, .-coro__switch

/* First code of a coroutine: x19 holds the coroutine, x20 the C entry function (see above). */
	.globl	coro__trampoline
	.hidden	coro__trampoline
	.type	coro__trampoline, %function
	.p2align 4
coro__trampoline:
	.cfi_startproc
	.cfi_undefined x30
	mov	x0, x19
	blr	x20
	brk	#1
	.cfi_endproc
	.size	coro__trampoline, .-coro__trampoline

#endif

/*
 * Mark the stack non-executable on every architecture, even where this file is empty: an object
 * without this note would make the linker give the whole program an executable stack. "%" is
 * the section-type prefix that every GNU assembler target accepts ("@" starts a comment on ARM).
 */
	.section .note.GNU-stack,"",%progbits
