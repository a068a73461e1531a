//! The seccomp filter every process in a sandbox runs under, as a reviewed table.
//!
//! It is a deny list: it denies (with `EPERM`) the system calls in [`DENIED`] and `clone` with
//! namespace flags, and allows everything else. The list holds those a container without
//! extra capabilities has no use for: mounting and namespace manipulation, kernel modules and
//! kexec, BPF, perf, keyrings, `ptrace` and cross-process memory access, `userfaultfd`,
//! handle-based opens, clock and swap control, `io_uring`, `unshare` and `setns`. (Docker's
//! default profile is the opposite, an allow list; a system call newer than this table is
//! allowed here.)
//! Before any of that, every system call made through the x32 ABI (an x86-64 call whose number
//! has bit 30 set, `__X32_SYSCALL_BIT`) answers `EPERM`: such numbers match none of the table's
//! rules, so on a kernel with x32 enabled `syscall(0x40000000 | __NR_unshare, …)` would pass a
//! deny list (the rule compiler checks the architecture field only). Nothing hutch runs uses
//! x32.
//! For user processes `clone3` also answers `ENOSYS`, because its flags sit in memory a filter
//! cannot read; libc then falls back to `clone`, whose flags the filter checks. The agent
//! itself keeps `clone3` (it starts processes straight into their cgroups with it) and adds
//! that second filter to each process it starts ([`crate::process::ChildFilter`]).

use std::collections::BTreeMap;
use std::io;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch, sock_filter,
};

/// System calls denied outright.
const DENIED: &[(&str, libc::c_long)] = &[
    ("acct", libc::SYS_acct),
    ("add_key", libc::SYS_add_key),
    ("bpf", libc::SYS_bpf),
    ("clock_adjtime", libc::SYS_clock_adjtime),
    ("clock_settime", libc::SYS_clock_settime),
    ("delete_module", libc::SYS_delete_module),
    ("finit_module", libc::SYS_finit_module),
    ("fsconfig", libc::SYS_fsconfig),
    ("fsmount", libc::SYS_fsmount),
    ("fsopen", libc::SYS_fsopen),
    ("fspick", libc::SYS_fspick),
    ("init_module", libc::SYS_init_module),
    ("io_uring_enter", libc::SYS_io_uring_enter),
    ("io_uring_register", libc::SYS_io_uring_register),
    ("io_uring_setup", libc::SYS_io_uring_setup),
    ("kcmp", libc::SYS_kcmp),
    ("kexec_file_load", libc::SYS_kexec_file_load),
    ("kexec_load", libc::SYS_kexec_load),
    ("keyctl", libc::SYS_keyctl),
    ("mount", libc::SYS_mount),
    ("mount_setattr", libc::SYS_mount_setattr),
    ("move_mount", libc::SYS_move_mount),
    ("name_to_handle_at", libc::SYS_name_to_handle_at),
    ("open_by_handle_at", libc::SYS_open_by_handle_at),
    ("open_tree", libc::SYS_open_tree),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("pivot_root", libc::SYS_pivot_root),
    ("process_vm_readv", libc::SYS_process_vm_readv),
    ("process_vm_writev", libc::SYS_process_vm_writev),
    ("ptrace", libc::SYS_ptrace),
    ("quotactl", libc::SYS_quotactl),
    ("reboot", libc::SYS_reboot),
    ("request_key", libc::SYS_request_key),
    ("setns", libc::SYS_setns),
    ("settimeofday", libc::SYS_settimeofday),
    ("swapoff", libc::SYS_swapoff),
    ("swapon", libc::SYS_swapon),
    ("syslog", libc::SYS_syslog),
    ("umount2", libc::SYS_umount2),
    ("unshare", libc::SYS_unshare),
    ("userfaultfd", libc::SYS_userfaultfd),
    ("vhangup", libc::SYS_vhangup),
    #[cfg(target_arch = "x86_64")]
    ("iopl", libc::SYS_iopl),
    #[cfg(target_arch = "x86_64")]
    ("ioperm", libc::SYS_ioperm),
    #[cfg(target_arch = "x86_64")]
    ("uselib", libc::SYS_uselib),
    #[cfg(target_arch = "x86_64")]
    ("ustat", libc::SYS_ustat),
    #[cfg(target_arch = "x86_64")]
    ("sysfs", libc::SYS_sysfs),
    #[cfg(target_arch = "x86_64")]
    ("lookup_dcookie", libc::SYS_lookup_dcookie),
];

/// `clone` flags that create namespaces: `clone` with any of them is denied.
const NAMESPACE_FLAGS: &[libc::c_int] = &[
    libc::CLONE_NEWNS,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
    libc::CLONE_NEWCGROUP,
];

fn arch() -> io::Result<TargetArch> {
    TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|e| io::Error::other(format!("seccomp arch: {e:?}")))
}

fn other(e: impl std::fmt::Debug) -> io::Error {
    io::Error::other(format!("seccomp: {e:?}"))
}

/// The x32 ABI's flag in an x86-64 system call number.
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// `AUDIT_ARCH_X86_64`: the architecture field of an x86-64 (or x32) system call.
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;

/// Instructions that answer `EPERM` to every x32 system call and fall through, past their
/// end, for anything else. Offsets are those of `struct seccomp_data`: `nr` at 0, `arch` at 4.
#[cfg(target_arch = "x86_64")]
fn refuse_x32() -> BpfProgram {
    let op = |code: u32, jt: u8, jf: u8, k: u32| sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    let (ld_w_abs, jeq_k, jge_k, ret_k) = (
        libc::BPF_LD | libc::BPF_W | libc::BPF_ABS,
        libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
        libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K,
        libc::BPF_RET | libc::BPF_K,
    );
    vec![
        op(ld_w_abs, 0, 0, 4),
        // Another architecture: the table's own check answers it.
        op(jeq_k, 0, 3, AUDIT_ARCH_X86_64),
        op(ld_w_abs, 0, 0, 0),
        op(jge_k, 0, 1, X32_SYSCALL_BIT),
        op(ret_k, 0, 0, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
    ]
}

/// No x32 ABI elsewhere: nothing to refuse.
#[cfg(not(target_arch = "x86_64"))]
fn refuse_x32() -> BpfProgram {
    Vec::new()
}

/// Compiles the filters: (x32 refused, then denials with `EPERM`; `clone3` with `ENOSYS`).
pub(crate) fn programs() -> io::Result<(BpfProgram, BpfProgram)> {
    let arch = arch()?;
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        DENIED.iter().map(|(_, nr)| (*nr, Vec::new())).collect();
    // The x86-64 clone ABI puts the flags in the first argument.
    let clone_rules = NAMESPACE_FLAGS
        .iter()
        .map(|flag| {
            let cond = SeccompCondition::new(
                0,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(*flag as u64),
                *flag as u64,
            )
            .map_err(other)?;
            SeccompRule::new(vec![cond]).map_err(other)
        })
        .collect::<io::Result<Vec<_>>>()?;
    rules.insert(libc::SYS_clone, clone_rules);
    let deny = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(other)?;
    let no_clone3 = SeccompFilter::new(
        BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .map_err(other)?;
    let mut deny_program = refuse_x32();
    deny_program.extend(BpfProgram::try_from(deny).map_err(other)?);
    Ok((deny_program, no_clone3.try_into().map_err(other)?))
}

/// Installs the deny filter on the calling thread (and so on everything it starts).
pub(crate) fn install() -> io::Result<()> {
    let (deny, _) = programs()?;
    seccompiler::apply_filter(&deny).map_err(other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_compile_for_this_arch() {
        let (deny, no_clone3) = programs().unwrap();
        assert!(deny.len() > DENIED.len());
        assert!(!no_clone3.is_empty());
    }

    #[test]
    fn table_has_no_duplicates() {
        let mut nrs: Vec<_> = DENIED.iter().map(|(_, nr)| *nr).collect();
        nrs.sort();
        nrs.dedup();
        assert_eq!(nrs.len(), DENIED.len());
    }

    #[test]
    fn denied_call_fails_with_eperm_in_a_filtered_child() {
        // Fork a child, filter it, and check that mount and unshare fail while getpid works.
        let (deny, no_clone3) = programs().unwrap();
        // SAFETY: the child only makes raw system calls and exits; the filters were compiled
        // before fork, and apply_filter does not allocate.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // SAFETY: we are the child; see above.
            unsafe {
                libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
                if seccompiler::apply_filter(&deny).is_err()
                    || seccompiler::apply_filter(&no_clone3).is_err()
                {
                    libc::_exit(10);
                }
                let rc = libc::unshare(libc::CLONE_NEWUSER);
                let errno = *libc::__errno_location();
                if rc != -1 || errno != libc::EPERM {
                    libc::_exit(11);
                }
                let rc = libc::syscall(libc::SYS_clone3, std::ptr::null::<u8>(), 0);
                let errno = *libc::__errno_location();
                if rc != -1 || errno != libc::ENOSYS {
                    libc::_exit(12);
                }
                // Every x32 number is refused, listed or not (a kernel without x32 would
                // answer ENOSYS).
                #[cfg(target_arch = "x86_64")]
                for nr in [libc::SYS_unshare, libc::SYS_getpid, libc::SYS_mount] {
                    let rc = libc::syscall(0x4000_0000 | nr, libc::CLONE_NEWUSER);
                    let errno = *libc::__errno_location();
                    if rc != -1 || errno != libc::EPERM {
                        libc::_exit(14);
                    }
                }
                if libc::getpid() <= 0 {
                    libc::_exit(13);
                }
                libc::_exit(0);
            }
        }
        let mut status = 0;
        // SAFETY: waiting for the child forked above.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status));
        assert_eq!(
            libc::WEXITSTATUS(status),
            0,
            "child exit code names the failed check"
        );
    }
}
