# KVM probe: a boot sector that exercises what nested KVM here cannot run:
# real-mode code, the switch to long mode, and `lock cmpxchg16b`.
# Prints "kiln-kvm-ok" on COM1 and exits QEMU via isa-debug-exit (0xf4).
        .code16
        .org 0
start:
        cli
        xor %ax, %ax
        mov %ax, %ds
        mov %ax, %es
        mov %ax, %ss
        mov $0x7c00, %sp
        # real mode: a string instruction and a BIOS-style far data access
        mov $0x1000, %di
        mov $0x1800, %cx        # zero 0x1000..0x4000 (page tables)
        xor %ax, %ax
        rep stosw
        # PML4[0] -> 0x2000, PDPT[0] -> 0x3000, PD[0] = 2 MiB page at 0
        movl $0x2003, 0x1000
        movl $0x3003, 0x2000
        movl $0x0083, 0x3000
        # CR3, PAE, EFER.LME, PG|PE
        mov $0x1000, %eax
        mov %eax, %cr3
        mov %cr4, %eax
        or $0x20, %eax
        mov %eax, %cr4
        mov $0xC0000080, %ecx
        rdmsr
        or $0x100, %eax
        wrmsr
        lgdtl gdtr - start + 0x7c00
        mov %cr0, %eax
        or $0x80000001, %eax
        mov %eax, %cr0
        ljmpl $0x08, $(long64 - start + 0x7c00)

        .code64
long64:
        mov $0x10, %ax
        mov %ax, %ds
        mov %ax, %ss
        # lock cmpxchg16b on a 16-byte aligned slot: rdx:rax == mem -> store rcx:rbx
        xor %eax, %eax
        xor %edx, %edx
        mov $0x4b494c4e, %ebx
        xor %ecx, %ecx
        lea (slot - start + 0x7c00), %rdi
        lock cmpxchg16b (%rdi)
        cmpl $0x4b494c4e, (%rdi)
        jne fail
        lea (msg - start + 0x7c00), %rsi
        mov $0x3f8, %dx
1:      lodsb
        test %al, %al
        jz 2f
        out %al, %dx
        jmp 1b
2:      mov $0xf4, %dx
        mov $0x10, %al          # QEMU exits with (0x10 << 1) | 1 = 33
        out %al, %dx
fail:   hlt
        jmp fail

        .balign 8
gdt:    .quad 0
        .quad 0x00209a0000000000   # 64-bit code
        .quad 0x0000920000000000   # data
gdtr:   .word gdtr - gdt - 1
        .long gdt - start + 0x7c00
msg:    .asciz "kiln-kvm-ok\n"
        .balign 16
slot:   .quad 0, 0
        .org 510
        .word 0xaa55
