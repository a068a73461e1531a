//! The system calls of the hutch agent, behind small safe wrappers in one place.
//!
//! The agent (PID 1 of every sandbox) talks to the kernel for confined file access, its
//! per-command cgroups, signals, reaping, pipes, terminals and sealed in-memory files. Every
//! such call is here, built on `rustix` wherever it covers the call, so that the agent itself
//! holds no `unsafe` code (its crate denies it) and each wrapper has tests of its own.
//!
//! - [`heap`]: the C allocator's arenas, and giving its free memory back;
//! - [`idmap`]: idmapped mounts, a sandbox's view of the shared layers in its own id range
//!   (used by the runtime that builds sandboxes, and by a sandbox's first process);
//! - [`fs`]: descriptor-relative file access, and the confinement core [`fs::openat2`], which
//!   resolves every path inside a root directory and never through a `/proc` magic link;
//! - [`process`]: signals, reaping and resource limits;
//! - [`pipe`]: close-on-exec pipes;
//! - [`pty`]: pseudo-terminals with an async master side;
//! - [`random_u64`]: kernel randomness.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod fs;
pub mod heap;
pub mod idmap;
pub mod pipe;
pub mod process;
pub mod pty;

/// Eight random bytes from the kernel (`getrandom(2)`), or the clock's nanoseconds if the
/// kernel refuses (a seccomp filter, an old kernel): for unique names, not for secrets.
pub fn random_u64() -> u64 {
    let mut buf = [0u8; 8];
    match rustix::rand::getrandom(&mut buf, rustix::rand::GetRandomFlags::empty()) {
        Ok(8) => u64::from_ne_bytes(buf),
        _ => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn random_numbers_differ() {
        assert_ne!(super::random_u64(), super::random_u64());
    }
}
