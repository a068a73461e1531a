//! The seccomp filters every process in a sandbox runs under, as reviewed tables.
//!
//! Two filters, installed in this order on the agent (and so inherited by everything it
//! starts):
//!
//! 1. the allow list ([`allow_program`]): the system calls of `crate::syscalls::ALLOWED`,
//!    plus the ones the operator adds (`hutch serve --seccomp-allow`), pass; every other one
//!    answers `ENOSYS`, which programs treat as "this kernel does not have it" and fall back
//!    from (a newer call than the list knows, such as a future `clone3`-like one, degrades
//!    instead of failing with a permission error). The list follows Docker's default profile
//!    and was checked against what hutch's agent, workers and ordinary user programs call.
//! 2. the deny list ([`programs`]): the system calls in [`DENIED`] and `clone` with namespace
//!    flags answer `EPERM`, whatever the allow list says (of two filters that both refuse, the
//!    kernel answers with the one installed last). The list holds those a container without
//!    extra capabilities has no use for: mounting and namespace manipulation, kernel modules
//!    and kexec, BPF, perf, keyrings, `ptrace` and cross-process memory access, `userfaultfd`,
//!    handle-based opens, clock and swap control, `io_uring`, `unshare` and `setns`.
//!
//! Before the deny table, every system call made through the x32 ABI (an x86-64 call whose
//! number has bit 30 set, `__X32_SYSCALL_BIT`) answers `EPERM`: such numbers match none of the
//! table's rules, so on a kernel with x32 enabled `syscall(0x40000000 | __NR_unshare, …)`
//! would pass a deny list (the rule compiler checks the architecture field only). Nothing
//! hutch runs uses x32.
//! For user processes `clone3` also answers `ENOSYS`, because its flags sit in memory a filter
//! cannot read; libc then falls back to `clone`, whose flags the filter checks. The agent
//! itself keeps `clone3` (it starts processes straight into their cgroups with it) and adds
//! that third filter to each process it starts ([`crate::process::ChildFilter`]).
//!
//! The allow list's table is x86-64's; on other architectures only the deny list applies.

use std::collections::BTreeMap;
use std::io;

use crate::syscalls;
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

/// Checks system call names an operator adds to the allow list: each must be an x86-64
/// system call that the deny list does not refuse. The error names the first bad one.
pub fn check_allow_names(names: &[String]) -> Result<(), String> {
    for name in names {
        if syscalls::number(name).is_none() {
            return Err(format!("{name:?} is not the name of an x86-64 system call"));
        }
        if DENIED.iter().any(|(denied, _)| denied == name) {
            return Err(format!(
                "{name} is refused in every sandbox (it can reach outside the sandbox), so it \
                 cannot be allowed"
            ));
        }
    }
    Ok(())
}

/// Compiles the allow list: the system calls of `ALLOWED` and `extra` pass, any other one
/// answers `ENOSYS`. Names of `extra` that are no system call are refused.
#[cfg(target_arch = "x86_64")]
pub(crate) fn allow_program(extra: &[String]) -> io::Result<BpfProgram> {
    check_allow_names(extra).map_err(io::Error::other)?;
    let rules: BTreeMap<i64, Vec<SeccompRule>> = syscalls::ALLOWED
        .iter()
        .copied()
        .chain(extra.iter().map(String::as_str))
        .filter_map(syscalls::number)
        .map(|nr| (nr, Vec::new()))
        .collect();
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Errno(libc::ENOSYS as u32),
        SeccompAction::Allow,
        arch()?,
    )
    .map_err(other)?;
    BpfProgram::try_from(filter).map_err(other)
}

/// No table of this architecture's system calls: no allow list.
#[cfg(not(target_arch = "x86_64"))]
pub(crate) fn allow_program(extra: &[String]) -> io::Result<BpfProgram> {
    check_allow_names(extra).map_err(io::Error::other)?;
    Ok(Vec::new())
}

/// Installs the allow list (with the operator's `extra` names), then the deny filter, on the
/// calling thread (and so on everything it starts).
pub(crate) fn install(extra: &[String]) -> io::Result<()> {
    let allow = allow_program(extra)?;
    let (deny, _) = programs()?;
    if !allow.is_empty() {
        seccompiler::apply_filter(&allow).map_err(other)?;
    }
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
    fn operators_may_add_system_calls_but_not_unknown_or_denied_ones() {
        assert!(check_allow_names(&["fanotify_init".to_owned()]).is_ok());
        let unknown = check_allow_names(&["fanotify_init".to_owned(), "nosuch".to_owned()]);
        assert!(unknown.unwrap_err().contains("nosuch"));
        assert!(
            check_allow_names(&["bpf".to_owned()])
                .unwrap_err()
                .contains("bpf")
        );
    }

    /// Forks a child that sets `no_new_privs`, installs `filters` in order, runs `checks`
    /// (raw system calls only) and exits with what it returns, or 10 if a filter would not
    /// install. Answers that exit code.
    fn exit_code_under(filters: &[&BpfProgram], checks: fn() -> i32) -> i32 {
        // SAFETY: the child makes raw system calls only and exits; the filters were compiled
        // before fork, and apply_filter does not allocate.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // SAFETY: we are the child; see above.
            unsafe {
                libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
                for filter in filters {
                    if seccompiler::apply_filter(filter).is_err() {
                        libc::_exit(10);
                    }
                }
                libc::_exit(checks());
            }
        }
        let mut status = 0;
        // SAFETY: waiting for the child forked above.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status));
        libc::WEXITSTATUS(status)
    }

    /// The errno of a failed raw system call, 0 if it succeeded.
    fn errno(rc: libc::c_long) -> i32 {
        if rc == -1 {
            // SAFETY: reading this thread's errno.
            unsafe { *libc::__errno_location() }
        } else {
            0
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn outside_the_allow_list_enosys_on_the_deny_list_eperm() {
        // Under both filters: a call on neither list is unknown (ENOSYS), a denied one is
        // refused (EPERM) although the allow list does not name it, a listed one runs; with
        // fanotify_init added by the operator, it reaches the kernel.
        fn checks() -> i32 {
            // SAFETY: raw system calls with integer arguments only.
            unsafe {
                if errno(libc::syscall(libc::SYS_bpf, 0, 0, 0)) != libc::EPERM {
                    return 11;
                }
                if errno(libc::syscall(libc::SYS_kexec_load, 0, 0, 0, 0)) != libc::EPERM {
                    return 12;
                }
                if libc::getpid() <= 0 {
                    return 13;
                }
                let fanotify = errno(libc::syscall(libc::SYS_fanotify_init, 0, 0));
                if fanotify == libc::ENOSYS { 20 } else { 21 }
            }
        }
        let (deny, _) = programs().unwrap();
        let listed = allow_program(&[]).unwrap();
        let extended = allow_program(&["fanotify_init".to_owned()]).unwrap();
        assert_eq!(
            exit_code_under(&[&listed, &deny], checks),
            20,
            "fanotify_init is outside the list: ENOSYS"
        );
        assert_eq!(
            exit_code_under(&[&extended, &deny], checks),
            21,
            "added: the kernel answers"
        );
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
        // Under the deny filter and the child filter, unshare fails with EPERM, clone3 with
        // ENOSYS and every x32 number with EPERM, while getpid works.
        fn checks() -> i32 {
            // SAFETY: raw system calls with integer (or null) arguments only.
            unsafe {
                if errno(libc::unshare(libc::CLONE_NEWUSER).into()) != libc::EPERM {
                    return 11;
                }
                let clone3 = libc::syscall(libc::SYS_clone3, std::ptr::null::<u8>(), 0);
                if errno(clone3) != libc::ENOSYS {
                    return 12;
                }
                // Every x32 number is refused, listed or not (a kernel without x32 would
                // answer ENOSYS).
                #[cfg(target_arch = "x86_64")]
                for nr in [libc::SYS_unshare, libc::SYS_getpid, libc::SYS_mount] {
                    let rc = libc::syscall(0x4000_0000 | nr, libc::CLONE_NEWUSER);
                    if errno(rc) != libc::EPERM {
                        return 14;
                    }
                }
                if libc::getpid() <= 0 {
                    return 13;
                }
                0
            }
        }
        let (deny, no_clone3) = programs().unwrap();
        assert_eq!(
            exit_code_under(&[&deny, &no_clone3], checks),
            0,
            "child exit code names the failed check"
        );
    }
}
