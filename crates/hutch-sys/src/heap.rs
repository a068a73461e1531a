//! The C library's allocator: how many arenas it keeps, and giving free memory back (the
//! allocator's, and a thread's stack below its use).
//!
//! The agent is one per session, idle most of its life: memory its allocator holds but no
//! longer uses is paid once per session. The allocator's calls are glibc's (`mallopt`,
//! `malloc_trim`) and elsewhere do nothing; the stack's is Linux's (`madvise`).

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

/// Room left untouched below the caller's frame when [`give_back_stack`] gives pages back: the
/// frames of the call that does it (a few hundred bytes) and the 128-byte red zone.
const STACK_MARGIN: usize = 16 * 1024;

/// Gives back the pages of the calling thread's stack below the caller's frame
/// (`madvise(MADV_DONTNEED)`): a deep call during a process's start leaves them dirty for
/// its whole life, and the kernel never takes back a stack's pages by itself. Below the
/// stack pointer nothing is live (the next call that goes that deep gets zeroed pages again).
/// The stack is the mapping that holds the caller's frame, if it is the main thread's
/// `[stack]` or sits right above a guard page (a thread's stack); otherwise, or without
/// `/proc/self/maps`, it does nothing. True when pages went back.
#[inline(never)]
pub fn give_back_stack() -> bool {
    let here = 0u8;
    let sp = std::ptr::addr_of!(here) as usize;
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return false;
    };
    let Some(low) = stack_low(&maps, sp) else {
        return false;
    };
    drop(maps);
    #[allow(unsafe_code)]
    // SAFETY: sysconf reads a constant of the system.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    let end = sp.saturating_sub(STACK_MARGIN) & !(page - 1);
    if end <= low {
        return false;
    }
    #[allow(unsafe_code)]
    // SAFETY: `low..end` lies in the calling thread's own stack mapping, below its stack
    // pointer by more than the red zone and the frames of this call: no live data is there,
    // and the kernel gives zeroed pages to the next call that reaches it.
    let done = unsafe { libc::madvise(low as *mut libc::c_void, end - low, libc::MADV_DONTNEED) };
    done == 0
}

/// The low end of the mapping in `maps` (`/proc/self/maps`) that holds `sp`, if that mapping
/// is a stack: `[stack]`, or one right above a guard page (`---p`).
fn stack_low(maps: &str, sp: usize) -> Option<usize> {
    let mut below: Option<(usize, bool)> = None;
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (low, high) = fields.next()?.split_once('-')?;
        let (low, high) = (
            usize::from_str_radix(low, 16).ok()?,
            usize::from_str_radix(high, 16).ok()?,
        );
        let guard = fields.next() == Some("---p");
        if (low..high).contains(&sp) {
            let guarded = below == Some((low, true));
            return (line.ends_with("[stack]") || guarded).then_some(low);
        }
        below = Some((high, guard));
    }
    None
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

    /// Dirty pages of the calling thread's stack mapping, KiB.
    #[inline(never)]
    fn stack_dirty_kib() -> u64 {
        let here = 0u8;
        let sp = std::ptr::addr_of!(here) as usize;
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        for line in smaps.lines() {
            if let Some((low, high)) = line
                .split_whitespace()
                .next()
                .and_then(|r| r.split_once('-'))
                && let (Ok(low), Ok(high)) = (
                    usize::from_str_radix(low, 16),
                    usize::from_str_radix(high, 16),
                )
            {
                inside = (low..high).contains(&sp);
            } else if inside && let Some(v) = line.strip_prefix("Private_Dirty:") {
                return v.split_whitespace().next().unwrap().parse().unwrap();
            }
        }
        panic!("no mapping holds the stack");
    }

    /// Touches `depth` KiB of stack below the caller, one KiB a frame.
    #[inline(never)]
    fn go_deep(depth: usize) -> u8 {
        let mut frame = [0u8; 1024];
        frame[depth % 1024] = depth as u8;
        let below = if depth > 1 { go_deep(depth - 1) } else { 0 };
        std::hint::black_box(&mut frame)[0].wrapping_add(below)
    }

    #[test]
    fn unused_stack_goes_back_to_the_kernel() {
        // On a thread of its own, with a stack deep enough for the test in a debug build.
        let thread = std::thread::Builder::new().stack_size(8 << 20);
        let (before, after) = thread
            .spawn(|| {
                std::hint::black_box(go_deep(2048));
                let before = stack_dirty_kib();
                assert!(give_back_stack(), "nothing was given back");
                let after = stack_dirty_kib();
                // What is below the stack pointer works as before.
                assert_eq!(go_deep(2048), go_deep(2048));
                (before, after)
            })
            .unwrap()
            .join()
            .unwrap();
        assert!(
            before >= after + 1024,
            "stack {before} KiB -> {after} KiB after giving it back"
        );
    }

    #[test]
    fn only_a_stack_mapping_is_given_back() {
        let maps = "\
1000-2000 rw-p 00000000 00:00 0 \n\
2000-3000 ---p 00000000 00:00 0 \n\
3000-9000 rw-p 00000000 00:00 0 \n\
a000-f000 rw-p 00000000 00:00 0                          [stack]\n";
        assert_eq!(stack_low(maps, 0x1800), None, "no guard below");
        assert_eq!(stack_low(maps, 0x4000), Some(0x3000), "above a guard page");
        assert_eq!(stack_low(maps, 0xb000), Some(0xa000), "the main stack");
        assert_eq!(stack_low(maps, 0x9800), None, "not mapped");
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
