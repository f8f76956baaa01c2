//! What deflect asks of the operating system about its own process: CPU time, transparent huge
//! pages, and how soon its allocator hands freed memory back.

use std::time::Duration;

/// CPU time of the whole process so far (user and system, every thread).
pub fn process_cpu() -> Duration {
    let mut u = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage only writes the struct it is given; RUSAGE_SELF is always valid
    let u = unsafe {
        if libc::getrusage(libc::RUSAGE_SELF, u.as_mut_ptr()) != 0 {
            return Duration::ZERO;
        }
        u.assume_init()
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// Whether transparent huge pages were turned off for this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HugePages {
    /// Turned off (`prctl(PR_SET_THP_DISABLE)`).
    Disabled,
    /// Left to the allocator, because `MIMALLOC_ALLOW_THP` is set.
    LeftToAllocator,
    /// The kernel refused (or this is not Linux): nothing changed.
    Unchanged,
}

/// Turns transparent huge pages off for this process, unless `MIMALLOC_ALLOW_THP` says what the
/// allocator should do.
///
/// mimalloc hands memory back to the kernel soon after it was freed (in 64 KiB ranges; see
/// [`delay_allocator_purges`]) and asks for huge pages where the kernel allows them: with the
/// per-batch churn of the pipeline, the kernel kept zeroing fresh 2 MiB pages, 13 % of `deflect
/// bench`'s samples. Without huge pages the pipeline spent about 15 % less CPU per record and
/// `bench-state` peaked 20 MiB lower (README, Benchmarks). The setting is checked at every page
/// fault, so calling this first thing in `main` covers every later allocation, RocksDB's and
/// librdkafka's included, whatever the machine's `/sys/kernel/mm/transparent_hugepage/enabled`
/// says.
pub fn disable_transparent_huge_pages() -> HugePages {
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_some() {
        return HugePages::LeftToAllocator;
    }
    #[cfg(target_os = "linux")]
    {
        // SAFETY: PR_SET_THP_DISABLE takes one integer argument and touches no memory of ours
        if unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) } == 0 {
            return HugePages::Disabled;
        }
    }
    HugePages::Unchanged
}

/// How long mimalloc keeps freed memory before it hands it back to the kernel, unless
/// `MIMALLOC_PURGE_DELAY` says (mimalloc's own default is 10 ms).
pub const PURGE_DELAY_MS: i64 = 1_000;

/// `mi_option_purge_delay` in mimalloc 3's `mi_option_e` (`mimalloc.h`; libmimalloc-sys's
/// bindings do not name it): the sixteenth option.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps freed memory [`PURGE_DELAY_MS`] before mimalloc hands it back to the kernel, unless
/// `MIMALLOC_PURGE_DELAY` is set; returns the delay in force.
///
/// A poll's batch frees most of what the previous one allocated a few tens of milliseconds
/// earlier: with mimalloc's 10 ms the memory went back to the kernel in between and came back as
/// fresh pages, each faulted in and zeroed (a third of the process's page faults in `deflect
/// bench`: 152 k → 102 k). Five interleaved pairs: pipeline rate +4 %, CPU per record −3 %,
/// better in every pair; `bench-state` peaks within 1 MiB of before (README, Benchmarks).
pub fn delay_allocator_purges() -> i64 {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: writes one option slot of mimalloc's (any value is valid for this option)
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS as _) };
    }
    // SAFETY: reads one option slot
    unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) as i64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_cpu_grows_with_work() {
        let before = process_cpu();
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(30) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        assert!(process_cpu() > before);
    }

    #[test]
    fn freed_memory_is_kept_a_second() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            // mimalloc's default for the option set below: it is the purge delay
            // SAFETY: reads one option slot
            let default = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) } as i64;
            assert!(default == 10 || default == PURGE_DELAY_MS, "{default}");
            assert_eq!(delay_allocator_purges(), PURGE_DELAY_MS);
        }
    }

    #[test]
    fn huge_pages_are_turned_off_for_the_process() {
        if std::env::var_os("MIMALLOC_ALLOW_THP").is_some() {
            assert_eq!(disable_transparent_huge_pages(), HugePages::LeftToAllocator);
            return;
        }
        assert_eq!(disable_transparent_huge_pages(), HugePages::Disabled);
        // SAFETY: PR_GET_THP_DISABLE takes no argument and returns the flag
        assert_eq!(
            unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) },
            1
        );
    }
}
