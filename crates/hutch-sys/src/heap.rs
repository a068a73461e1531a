//! The C library's allocator: how many arenas it keeps, and giving free memory back.
//!
//! The agent is one per session, idle most of its life: memory its allocator holds but no
//! longer uses is paid once per session. Both calls are glibc's (`mallopt`, `malloc_trim`);
//! elsewhere they do nothing.

/// Caps the allocator's arenas at `arenas` (`mallopt(M_ARENA_MAX)`). glibc otherwise gives
/// each thread that allocates while another holds the lock an arena of its own (up to eight
/// per core), each keeping the freed memory of its heap. True when the allocator took it.
pub fn limit_arenas(arenas: i32) -> bool {
    #[cfg(target_env = "gnu")]
    {
        #[allow(unsafe_code)]
        // SAFETY: mallopt only sets an allocator parameter; any value is checked by glibc.
        let taken = unsafe { libc::mallopt(libc::M_ARENA_MAX, arenas) };
        taken == 1
    }
    #[cfg(not(target_env = "gnu"))]
    {
        let _ = arenas;
        false
    }
}

/// Gives every whole free page the allocator holds back to the kernel (`malloc_trim(0)`):
/// the top of each heap, and the free pages inside it. True when some memory went back.
pub fn give_back_free() -> bool {
    #[cfg(target_env = "gnu")]
    {
        #[allow(unsafe_code)]
        // SAFETY: malloc_trim takes the allocator's own locks and touches only free memory.
        let released = unsafe { libc::malloc_trim(0) };
        released == 1
    }
    #[cfg(not(target_env = "gnu"))]
    {
        false
    }
}

#[cfg(all(test, target_env = "gnu"))]
mod tests {
    use super::*;

    /// This process's resident memory, KiB.
    fn rss_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap()
    }

    #[test]
    fn arenas_can_be_limited() {
        assert!(limit_arenas(8));
    }

    #[test]
    fn freed_memory_goes_back_to_the_kernel() {
        // 32 MiB in blocks under the mmap threshold, so they come from a heap; the last one
        // stays allocated above the others, so that freeing them cannot shrink the heap's top.
        let mut blocks: Vec<Vec<u8>> = (0..32 * 1024).map(|_| vec![1u8; 1024]).collect();
        let pin = vec![1u8; 1024];
        blocks.clear();
        blocks.shrink_to_fit();
        let before = rss_kib();
        assert!(give_back_free(), "nothing was given back");
        let after = rss_kib();
        assert!(
            before >= after + 16 * 1024,
            "resident memory {before} KiB -> {after} KiB after the trim"
        );
        drop(pin);
    }
}
