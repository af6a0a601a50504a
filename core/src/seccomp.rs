//! Seccomp-BPF deny-list installed in the sandbox child right before `execve`.
//!
//! The policy follows the spirit of Flatpak's filter: everything is allowed
//! by default and a short list of system calls that are either host-global
//! (not covered by namespaces) or notorious kernel attack surface fails with
//! `EPERM`. Why each group is denied:
//!
//! - `syslog`: reads and clears the host kernel log, which leaks addresses and host activity.
//! - `uselib`: obsolete a.out library loader, nothing modern uses it; pure attack surface.
//! - `acct`, `quotactl`: host-wide process accounting and disk-quota administration.
//! - `add_key`, `keyctl`, `request_key`: the kernel keyring is not namespaced, keys would leak between host and sandbox.
//! - `move_pages`, `mbind`, `get_mempolicy`, `set_mempolicy`, `migrate_pages`: NUMA controls that touch other processes' memory placement; historically buggy.
//! - `userfaultfd`: lets a process stall kernel memory accesses at will, the classic tool for winning kernel races.
//! - `perf_event_open`: huge kernel surface and hardware side channels on the host.
//! - `ptrace`: would let one sandboxed process read and rewrite another one's memory.
//! - `kexec_load`, `kexec_file_load`: replacing the running kernel is never a desktop app's job.
//! - `init_module`, `finit_module`, `delete_module`: kernel module loading and unloading, same.
//! - `open_by_handle_at`: opens files by handle, bypassing the mount namespace (the "shocker" container escape).
//! - `bpf`: the eBPF verifier and maps are a large, frequently exploited surface.
//! - `lookup_dcookie`: profiling interface that resolves kernel dentry cookies to host paths.
//! - `personality` with anything but `PER_LINUX`, `PER_LINUX32` or a query: flags such as
//!   `READ_IMPLIES_EXEC` or `ADDR_NO_RANDOMIZE` weaken NX and ASLR for everything exec'd later.
//! - `io_uring_setup`, `io_uring_enter`, `io_uring_register`: io_uring performs operations
//!   this filter never sees and has been a rich source of kernel bugs.
//! - `ioctl(TIOCSTI)`, `ioctl(TIOCLINUX)`: push characters into a terminal's input queue, i.e.
//!   inject commands into the host shell the sandbox was started from.
//!
//! Deliberately allowed: `clone`, `clone3`, `unshare` (including `CLONE_NEWUSER`), `setns`,
//! `mount`, `umount2`, `pivot_root` and `chroot`. Chromium, Electron, QtWebEngine and
//! WebKitGTK (through bwrap) build nested sandboxes out of them, and inside our unprivileged
//! user namespace they can only affect namespaces the sandbox itself owns.
//!
//! `clone3` passes its flags in a struct in memory, which a classic BPF filter cannot
//! dereference. Flatpak answers `ENOSYS` so that libc falls back to `clone`, whose flags it
//! can inspect. We have no clone flag to forbid, so falling back would gain nothing: `clone3`
//! is simply allowed.
//!
//! Architectures: on x86_64 both native and i386 (32-bit apps, and `int 0x80` from 64-bit
//! code) system calls are filtered, each against its own numbering; x32 system calls (number
//! with bit 30 set) fail with `ENOSYS` because this list does not cover their numbering. On
//! aarch64 only native calls are accepted. A system call from any other ABI kills the
//! process, since its numbers would bypass the deny-list.

// On other architectures only the error path of `program` remains, leaving the assembler
// and the constants unused.
#![cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(dead_code)
)]

use nix::errno::Errno;

/// Error building or installing the seccomp filter.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The filter has no rules for the architecture Doppel was compiled for.
    #[error(
        "seccomp filter: unsupported architecture {0} (only x86_64 and aarch64 are supported)"
    )]
    UnsupportedArch(&'static str),
    /// The program generator produced a jump the classic BPF encoding cannot express
    /// (an internal bug, reported rather than installing a broken filter).
    #[error(
        "seccomp filter: internal error, BPF jump at instruction {from} cannot reach its target"
    )]
    BadJump {
        /// Index of the offending jump instruction.
        from: usize,
    },
    /// The program is empty or longer than the kernel accepts (`BPF_MAXINSNS`).
    #[error("seccomp filter: invalid program length {len} (must be 1..={max})")]
    BadLength {
        /// Number of instructions passed.
        len: usize,
        /// Kernel limit.
        max: usize,
    },
    /// A system call failed; `call` names it, e.g. `prctl(PR_SET_SECCOMP)`.
    #[error("{call}: {errno}")]
    Syscall {
        /// The failing call.
        call: &'static str,
        /// The errno it returned.
        errno: Errno,
    },
}

// --- Classic BPF opcodes (linux/filter.h), narrowed to the 16-bit `code` field. ---
const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const JMP_JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // only x86_64 emits it (x32 check)
const JMP_JSET_K: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

// --- Offsets into `struct seccomp_data { int nr; u32 arch; u64 ip; u64 args[6]; }`. ---
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const OFF_ARGS: u32 = 16;

/// Offset of the low 32 bits of system call argument `i`. BPF loads 32-bit words in host
/// byte order, so on big-endian hosts the low half is the second word.
const fn arg_lo(i: u32) -> u32 {
    OFF_ARGS + 8 * i + if cfg!(target_endian = "big") { 4 } else { 0 }
}

// --- Return values. ---
const RET_ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
const RET_KILL_PROCESS: u32 = libc::SECCOMP_RET_KILL_PROCESS;
const RET_EPERM: u32 = libc::SECCOMP_RET_ERRNO | (libc::EPERM as u32 & libc::SECCOMP_RET_DATA);
#[cfg(target_arch = "x86_64")]
const RET_ENOSYS: u32 = libc::SECCOMP_RET_ERRNO | (libc::ENOSYS as u32 & libc::SECCOMP_RET_DATA);

// --- Audit architecture tokens (linux/audit.h: EM_* | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE);
// libc does not export them. ---
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH_I386: u32 = 0x4000_0003;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH_AARCH64: u32 = 0xC000_00B7;

/// x32 system calls are x86_64 calls with this bit set in the number.
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

// --- Argument values the filter compares (low 32 bits; the kernel takes both as unsigned int). ---
/// `personality(PER_LINUX)`: the default persona, used to reset.
const PER_LINUX: u32 = 0x0000;
/// `personality(PER_LINUX32)`: what `linux32`/`setarch i686` set for 32-bit builds.
const PER_LINUX32: u32 = 0x0008;
/// `personality(0xffffffff)` only queries the current persona.
const PER_QUERY: u32 = 0xffff_ffff;
/// Compared on the low 32 bits only: the kernel truncates the request to `unsigned int`, so
/// a filter comparing 64 bits could be bypassed by setting high bits (Flatpak CVE-2019-10063).
const TIOCSTI: u32 = libc::TIOCSTI as u32;
const TIOCLINUX: u32 = libc::TIOCLINUX as u32;

/// System call numbers of one ABI that the filter inspects.
struct Abi {
    /// Calls that always fail with `EPERM`.
    deny: &'static [u32],
    /// `personality`: denied unless the persona is one of the harmless values.
    personality: u32,
    /// `ioctl`: denied for `TIOCSTI`/`TIOCLINUX`.
    ioctl: u32,
}

#[cfg(target_arch = "x86_64")]
const NATIVE: Abi = Abi {
    deny: &[
        libc::SYS_syslog as u32,
        libc::SYS_uselib as u32,
        libc::SYS_acct as u32,
        libc::SYS_quotactl as u32,
        libc::SYS_add_key as u32,
        libc::SYS_keyctl as u32,
        libc::SYS_request_key as u32,
        libc::SYS_move_pages as u32,
        libc::SYS_mbind as u32,
        libc::SYS_get_mempolicy as u32,
        libc::SYS_set_mempolicy as u32,
        libc::SYS_migrate_pages as u32,
        libc::SYS_userfaultfd as u32,
        libc::SYS_perf_event_open as u32,
        libc::SYS_ptrace as u32,
        libc::SYS_kexec_load as u32,
        libc::SYS_kexec_file_load as u32,
        libc::SYS_init_module as u32,
        libc::SYS_finit_module as u32,
        libc::SYS_delete_module as u32,
        libc::SYS_open_by_handle_at as u32,
        libc::SYS_bpf as u32,
        libc::SYS_lookup_dcookie as u32,
        libc::SYS_io_uring_setup as u32,
        libc::SYS_io_uring_enter as u32,
        libc::SYS_io_uring_register as u32,
    ],
    personality: libc::SYS_personality as u32,
    ioctl: libc::SYS_ioctl as u32,
};

/// i386 numbers, from the kernel's arch/x86/entry/syscalls/syscall_32.tbl; libc only
/// exports the numbers of the target it was compiled for. i386 has no `kexec_file_load`.
#[cfg(target_arch = "x86_64")]
const I386: Abi = Abi {
    deny: &[
        103, // syslog
        86,  // uselib
        51,  // acct
        131, // quotactl
        286, // add_key
        288, // keyctl
        287, // request_key
        317, // move_pages
        274, // mbind
        275, // get_mempolicy
        276, // set_mempolicy
        294, // migrate_pages
        374, // userfaultfd
        336, // perf_event_open
        26,  // ptrace
        283, // kexec_load
        128, // init_module
        350, // finit_module
        129, // delete_module
        342, // open_by_handle_at
        357, // bpf
        253, // lookup_dcookie
        425, // io_uring_setup
        426, // io_uring_enter
        427, // io_uring_register
    ],
    personality: 136,
    ioctl: 54,
};

/// aarch64 uses the asm-generic table, which has no `uselib`.
#[cfg(target_arch = "aarch64")]
const NATIVE: Abi = Abi {
    deny: &[
        libc::SYS_syslog as u32,
        libc::SYS_acct as u32,
        libc::SYS_quotactl as u32,
        libc::SYS_add_key as u32,
        libc::SYS_keyctl as u32,
        libc::SYS_request_key as u32,
        libc::SYS_move_pages as u32,
        libc::SYS_mbind as u32,
        libc::SYS_get_mempolicy as u32,
        libc::SYS_set_mempolicy as u32,
        libc::SYS_migrate_pages as u32,
        libc::SYS_userfaultfd as u32,
        libc::SYS_perf_event_open as u32,
        libc::SYS_ptrace as u32,
        libc::SYS_kexec_load as u32,
        // kexec_file_load: asm-generic number, hard-coded because libc's musl bindings lack it.
        294,
        libc::SYS_init_module as u32,
        libc::SYS_finit_module as u32,
        libc::SYS_delete_module as u32,
        libc::SYS_open_by_handle_at as u32,
        libc::SYS_bpf as u32,
        libc::SYS_lookup_dcookie as u32,
        libc::SYS_io_uring_setup as u32,
        libc::SYS_io_uring_enter as u32,
        libc::SYS_io_uring_register as u32,
    ],
    personality: libc::SYS_personality as u32,
    ioctl: libc::SYS_ioctl as u32,
};

/// A forward jump target of the program being assembled.
#[derive(Clone, Copy)]
struct Label(usize);

#[derive(Clone, Copy)]
enum Target {
    /// Fall through to the next instruction.
    Next,
    /// Jump to a label bound later in the program.
    To(Label),
}

enum Insn {
    Stmt {
        code: u16,
        k: u32,
    },
    Jump {
        code: u16,
        k: u32,
        jt: Target,
        jf: Target,
    },
}

/// Minimal classic-BPF assembler: jumps go to labels, and the offsets (forward only, at
/// most 255 in the 8-bit `jt`/`jf` fields) are computed and checked in [`Asm::finish`],
/// so editing the deny-lists cannot silently produce a mis-targeted jump.
#[derive(Default)]
struct Asm {
    insns: Vec<Insn>,
    labels: Vec<Option<usize>>,
}

impl Asm {
    fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }

    fn bind(&mut self, label: Label) {
        if let Some(slot) = self.labels.get_mut(label.0) {
            *slot = Some(self.insns.len());
        }
    }

    fn load(&mut self, offset: u32) {
        self.insns.push(Insn::Stmt {
            code: LD_W_ABS,
            k: offset,
        });
    }

    fn ret(&mut self, value: u32) {
        self.insns.push(Insn::Stmt {
            code: RET_K,
            k: value,
        });
    }

    /// `if A == k goto target`.
    fn jeq(&mut self, k: u32, target: Label) {
        self.insns.push(Insn::Jump {
            code: JMP_JEQ_K,
            k,
            jt: Target::To(target),
            jf: Target::Next,
        });
    }

    /// `if A & k != 0 goto target`.
    #[cfg(target_arch = "x86_64")]
    fn jset(&mut self, k: u32, target: Label) {
        self.insns.push(Insn::Jump {
            code: JMP_JSET_K,
            k,
            jt: Target::To(target),
            jf: Target::Next,
        });
    }

    fn finish(self) -> Result<Vec<libc::sock_filter>, SeccompError> {
        let len = self.insns.len();
        let offset = |from: usize, target: Target| -> Result<u8, SeccompError> {
            let Target::To(label) = target else {
                return Ok(0);
            };
            self.labels
                .get(label.0)
                .copied()
                .flatten()
                .filter(|&pos| pos > from && pos < len)
                .and_then(|pos| u8::try_from(pos - from - 1).ok())
                .ok_or(SeccompError::BadJump { from })
        };
        let mut out = Vec::with_capacity(len);
        for (pc, insn) in self.insns.iter().enumerate() {
            out.push(match *insn {
                Insn::Stmt { code, k } => libc::sock_filter {
                    code,
                    jt: 0,
                    jf: 0,
                    k,
                },
                Insn::Jump { code, k, jt, jf } => libc::sock_filter {
                    code,
                    jt: offset(pc, jt)?,
                    jf: offset(pc, jf)?,
                    k,
                },
            });
        }
        Ok(out)
    }
}

/// Emits the checks for one ABI: A is loaded with the system call number, then each denied
/// number jumps to `deny`, `personality` and `ioctl` jump to their argument checks, and
/// everything else is allowed.
fn emit_abi(asm: &mut Asm, abi: &Abi, deny: Label, personality: Label, ioctl: Label) {
    for &nr in abi.deny {
        asm.jeq(nr, deny);
    }
    asm.jeq(abi.personality, personality);
    asm.jeq(abi.ioctl, ioctl);
    asm.ret(RET_ALLOW);
}

/// Builds the filter program (pure; nothing is installed).
///
/// Fails with [`SeccompError::UnsupportedArch`] on architectures other than x86_64 and
/// aarch64, for which no system call tables are known.
pub fn program() -> Result<Vec<libc::sock_filter>, SeccompError> {
    build()
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn build() -> Result<Vec<libc::sock_filter>, SeccompError> {
    Err(SeccompError::UnsupportedArch(std::env::consts::ARCH))
}

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn build() -> Result<Vec<libc::sock_filter>, SeccompError> {
    let mut asm = Asm::default();
    let native = asm.label();
    let deny = asm.label();
    let personality = asm.label();
    let ioctl = asm.label();
    let allow = asm.label();

    // Dispatch on the ABI of the call; numbers of an ABI we do not know would slip past the
    // deny-list, so such calls kill the process.
    asm.load(OFF_ARCH);
    #[cfg(target_arch = "x86_64")]
    let i386 = asm.label();
    #[cfg(target_arch = "x86_64")]
    {
        asm.jeq(AUDIT_ARCH_X86_64, native);
        asm.jeq(AUDIT_ARCH_I386, i386);
    }
    #[cfg(target_arch = "aarch64")]
    asm.jeq(AUDIT_ARCH_AARCH64, native);
    asm.ret(RET_KILL_PROCESS);

    asm.bind(native);
    asm.load(OFF_NR);
    #[cfg(target_arch = "x86_64")]
    {
        // x32 numbers are not in any of our tables: refuse them before the native checks.
        let x32 = asm.label();
        asm.jset(X32_SYSCALL_BIT, x32);
        emit_abi(&mut asm, &NATIVE, deny, personality, ioctl);
        asm.bind(x32);
        asm.ret(RET_ENOSYS);

        asm.bind(i386);
        asm.load(OFF_NR);
        emit_abi(&mut asm, &I386, deny, personality, ioctl);
    }
    #[cfg(target_arch = "aarch64")]
    emit_abi(&mut asm, &NATIVE, deny, personality, ioctl);

    // Shared argument checks: on i386 (zero-extended by the kernel) and the 64-bit ABIs the
    // low 32 bits of an argument sit at the same offset.
    asm.bind(personality);
    asm.load(arg_lo(0));
    asm.jeq(PER_LINUX, allow);
    asm.jeq(PER_LINUX32, allow);
    asm.jeq(PER_QUERY, allow);
    asm.ret(RET_EPERM);

    asm.bind(ioctl);
    asm.load(arg_lo(1));
    asm.jeq(TIOCSTI, deny);
    asm.jeq(TIOCLINUX, deny);
    asm.bind(allow);
    asm.ret(RET_ALLOW);

    asm.bind(deny);
    asm.ret(RET_EPERM);

    asm.finish()
}

/// Builds the filter with [`program`] and installs it in the calling thread with
/// [`install_program`].
///
/// Call it last before `execve`, after the caller has set `PR_SET_NO_NEW_PRIVS` (without it,
/// or `CAP_SYS_ADMIN` in the current user namespace, the kernel answers `EACCES`).
pub fn install() -> Result<(), SeccompError> {
    let filter = program()?;
    install_program(&filter)
}

/// Installs an already built filter with `prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER)`.
///
/// Performs no allocation, so a caller that forked a multi-threaded process can build the
/// program with [`program`] before forking and install it in the child. Requires
/// no_new_privs to be set already; errors name the failing call, e.g.
/// `prctl(PR_SET_SECCOMP): EACCES: Permission denied`.
pub fn install_program(filter: &[libc::sock_filter]) -> Result<(), SeccompError> {
    let max = libc::BPF_MAXINSNS as usize;
    let len = u16::try_from(filter.len())
        .ok()
        .filter(|&n| n > 0 && usize::from(n) <= max)
        .ok_or(SeccompError::BadLength {
            len: filter.len(),
            max,
        })?;
    let prog = libc::sock_fprog {
        len,
        // The kernel only reads (copies) the instructions; the field is `*mut` for C reasons.
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: `prog` is a valid sock_fprog whose `filter` points to `len` initialized
    // instructions borrowed from `filter`, both alive for the duration of the call; the
    // kernel copies the program and never writes through the pointer.
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::c_ulong::from(libc::SECCOMP_MODE_FILTER),
            &prog as *const libc::sock_fprog,
        )
    };
    if rc != 0 {
        return Err(SeccompError::Syscall {
            call: "prctl(PR_SET_SECCOMP)",
            errno: Errno::last(),
        });
    }
    Ok(())
}

#[cfg(test)]
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod tests {
    use super::*;

    /// `TCGETS` is `c_ulong` or `c_int` depending on the libc flavour.
    const TCGETS: u32 = libc::TCGETS as u32;

    #[cfg(target_arch = "x86_64")]
    const NATIVE_ARCH: u32 = AUDIT_ARCH_X86_64;
    #[cfg(target_arch = "aarch64")]
    const NATIVE_ARCH: u32 = AUDIT_ARCH_AARCH64;

    /// Serializes a `struct seccomp_data` the way the kernel presents it to the filter.
    fn data(arch: u32, nr: u32, args: [u64; 6]) -> Vec<u8> {
        let mut d = Vec::with_capacity(64);
        d.extend_from_slice(&nr.to_ne_bytes());
        d.extend_from_slice(&arch.to_ne_bytes());
        d.extend_from_slice(&0u64.to_ne_bytes()); // instruction_pointer
        for a in args {
            d.extend_from_slice(&a.to_ne_bytes());
        }
        d
    }

    /// Tiny interpreter for the subset of classic BPF that `program()` emits; panics on
    /// anything else so that a new opcode cannot go untested.
    fn run(prog: &[libc::sock_filter], data: &[u8]) -> u32 {
        let mut a: u32 = 0;
        let mut pc = 0usize;
        loop {
            let insn = prog[pc];
            pc += 1;
            match insn.code {
                LD_W_ABS => {
                    let k = insn.k as usize;
                    a = u32::from_ne_bytes(data[k..k + 4].try_into().unwrap());
                }
                JMP_JEQ_K => pc += usize::from(if a == insn.k { insn.jt } else { insn.jf }),
                JMP_JSET_K => pc += usize::from(if a & insn.k != 0 { insn.jt } else { insn.jf }),
                RET_K => return insn.k,
                other => panic!("unexpected BPF opcode {other:#x} at {}", pc - 1),
            }
        }
    }

    fn eval(arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        run(&program().unwrap(), &data(arch, nr, args))
    }

    fn native(nr: libc::c_long, args: [u64; 6]) -> u32 {
        eval(NATIVE_ARCH, nr as u32, args)
    }

    #[test]
    fn program_is_well_formed() {
        let prog = program().unwrap();
        assert!(!prog.is_empty() && prog.len() <= libc::BPF_MAXINSNS as usize);
        // Every jump stays inside the program, and the program ends with a return.
        for (pc, insn) in prog.iter().enumerate() {
            if insn.code == JMP_JEQ_K || insn.code == JMP_JSET_K {
                assert!(pc + 1 + usize::from(insn.jt.max(insn.jf)) < prog.len());
            }
        }
        assert_eq!(prog.last().unwrap().code, RET_K);
    }

    #[test]
    fn native_policy() {
        let z = [0u64; 6];
        assert_eq!(native(libc::SYS_keyctl, z), RET_EPERM);
        assert_eq!(native(libc::SYS_bpf, z), RET_EPERM);
        assert_eq!(native(libc::SYS_io_uring_setup, z), RET_EPERM);
        assert_eq!(native(libc::SYS_getpid, z), RET_ALLOW);
        let newuser = libc::CLONE_NEWUSER as u64;
        assert_eq!(
            native(libc::SYS_unshare, [newuser, 0, 0, 0, 0, 0]),
            RET_ALLOW
        );
        assert_eq!(native(libc::SYS_clone3, z), RET_ALLOW);
        assert_eq!(native(libc::SYS_mount, z), RET_ALLOW);
        assert_eq!(native(libc::SYS_pivot_root, z), RET_ALLOW);
        assert_eq!(native(libc::SYS_setns, z), RET_ALLOW);
    }

    #[test]
    fn ioctl_terminal_injection() {
        let ioctl = |req: u64| native(libc::SYS_ioctl, [1, req, 0, 0, 0, 0]);
        assert_eq!(ioctl(u64::from(TIOCSTI)), RET_EPERM);
        assert_eq!(ioctl(u64::from(TIOCLINUX)), RET_EPERM);
        // High bits are ignored by the kernel, so they must not bypass the check.
        assert_eq!(ioctl(0xdead_beef_0000_0000 | u64::from(TIOCSTI)), RET_EPERM);
        assert_eq!(ioctl(u64::from(TCGETS)), RET_ALLOW);
    }

    #[test]
    fn personality_values() {
        let pers = |p: u64| native(libc::SYS_personality, [p, 0, 0, 0, 0, 0]);
        assert_eq!(pers(0), RET_ALLOW);
        assert_eq!(pers(0x0008), RET_ALLOW);
        assert_eq!(pers(0xffff_ffff), RET_ALLOW);
        assert_eq!(pers(0x0040000), RET_EPERM); // ADDR_NO_RANDOMIZE
        assert_eq!(pers(0x0400000), RET_EPERM); // READ_IMPLIES_EXEC
    }

    #[test]
    fn unknown_arch_is_killed() {
        // AUDIT_ARCH_ARM (EM_ARM | LE).
        assert_eq!(eval(0x4000_0028, 20, [0; 6]), RET_KILL_PROCESS);
        assert_eq!(eval(0, 0, [0; 6]), RET_KILL_PROCESS);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn x32_is_refused() {
        let nr = X32_SYSCALL_BIT | libc::SYS_getpid as u32;
        let ret = eval(AUDIT_ARCH_X86_64, nr, [0; 6]);
        assert_ne!(ret, RET_ALLOW);
        assert_eq!(ret, RET_ENOSYS);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn i386_policy() {
        let i386 = |nr: u32, args: [u64; 6]| eval(AUDIT_ARCH_I386, nr, args);
        assert_eq!(i386(288, [0; 6]), RET_EPERM); // keyctl
        assert_eq!(i386(20, [0; 6]), RET_ALLOW); // getpid
        assert_eq!(
            i386(310, [libc::CLONE_NEWUSER as u64, 0, 0, 0, 0, 0]),
            RET_ALLOW
        ); // unshare
        assert_eq!(i386(54, [1, u64::from(TIOCSTI), 0, 0, 0, 0]), RET_EPERM); // ioctl
        assert_eq!(i386(54, [1, u64::from(TCGETS), 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(i386(136, [0x0040000, 0, 0, 0, 0, 0]), RET_EPERM); // personality
        assert_eq!(i386(136, [8, 0, 0, 0, 0, 0]), RET_ALLOW);
        // 250 is keyctl on x86_64 but fadvise64 on i386: the tables must not be mixed up.
        assert_eq!(i386(250, [0; 6]), RET_ALLOW);
    }

    /// Installs the filter for real, in a forked child (never in the test process, where it
    /// would stay for the rest of the test run), and reports the observed results through the
    /// exit status, one bit per expectation.
    #[test]
    fn installed_filter_in_child() {
        const ALL: i32 = 0x7f;
        // SAFETY: the child only makes raw system calls and calls install() (which allocates;
        // glibc resets its malloc locks in the child after fork) and leaves with _exit, never
        // returning into the test harness.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let errno = || Errno::last() as i32;
            // SAFETY: plain system calls with integer arguments and no pointers (the ioctl
            // argument is never dereferenced because the call is refused or the fd is bad).
            unsafe {
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                    libc::_exit(0x80);
                }
                if install().is_err() {
                    libc::_exit(0x81);
                }
                let mut bits = 0;
                // An unknown keyctl command is EOPNOTSUPP without the filter.
                if libc::syscall(libc::SYS_keyctl, 0x7fff_ffff_i64, 0, 0, 0, 0) == -1
                    && errno() == libc::EPERM
                {
                    bits |= 1;
                }
                if libc::syscall(libc::SYS_getpid) > 0 {
                    bits |= 2;
                }
                // ioctl on fd -1 is EBADF unless the filter refuses it first.
                let tiocsti = libc::c_long::from(TIOCSTI);
                if libc::syscall(libc::SYS_ioctl, -1, tiocsti, 0) == -1 && errno() == libc::EPERM {
                    bits |= 4;
                }
                let high = (1 << 32) | tiocsti;
                if libc::syscall(libc::SYS_ioctl, -1, high, 0) == -1 && errno() == libc::EPERM {
                    bits |= 8;
                }
                let tcgets = libc::c_long::from(TCGETS);
                if libc::syscall(libc::SYS_ioctl, -1, tcgets, 0) == -1 && errno() == libc::EBADF {
                    bits |= 16;
                }
                if libc::syscall(libc::SYS_personality, 0xffff_ffff_u32 as libc::c_long) != -1 {
                    bits |= 32;
                }
                if libc::syscall(libc::SYS_personality, 0x0040000) == -1 && errno() == libc::EPERM {
                    bits |= 64;
                }
                libc::_exit(bits);
            }
        }
        let mut status = 0;
        // SAFETY: waiting for our own child with a valid pointer to a local.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(rc, pid);
        assert!(
            libc::WIFEXITED(status),
            "child did not exit normally: status {status:#x}"
        );
        let code = libc::WEXITSTATUS(status);
        assert_eq!(code, ALL, "child results {code:#x}, expected {ALL:#x}");
    }

    #[test]
    fn install_program_rejects_empty() {
        // Never reaches prctl, so it is safe to call in the test process.
        let err = install_program(&[]).unwrap_err();
        assert!(matches!(err, SeccompError::BadLength { len: 0, .. }));
    }
}
