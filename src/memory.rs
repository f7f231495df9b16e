//! Memory that modelgate frees goes back to the system.
//!
//! The binary's allocator is mimalloc (see `main.rs`). It keeps freed pages
//! for reuse until the thread that owns them allocates again, so after a
//! burst (thousands of connections opening and closing) an idle process
//! would keep its peak. Once a second this service asks mimalloc to return
//! what is free: 3,000 idle connections left RSS +286 MB with glibc and
//! +35..40 MB this way.

use std::time::Duration;

/// Called before `main` (see `main.rs`): no transparent huge pages for
/// this process.
/// mimalloc commits its arenas eagerly, and where the kernel backs them
/// with 2 MiB pages (THP `madvise` or `always`) a few bytes used make a
/// whole 2 MiB resident: idle RSS was 43 MB (26 MB of it huge pages)
/// against 22 MB without, and 2,000 open streams 357 MB against 180 MB.
pub fn no_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE only sets a flag on this process.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

pub struct Reclaim;

#[async_trait]
impl BackgroundService for Reclaim {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                // SAFETY: mi_collect only walks mimalloc's own structures;
                // where mimalloc is not the allocator it has nothing to do.
                _ = tick.tick() => unsafe { libmimalloc_sys::mi_collect(true) },
            }
        }
    }
}

/// Return this thread's free pages at once, after a large one-off
/// allocation (a tokenizer's tables) left many behind.
pub fn release_freed() {
    // SAFETY: as in Reclaim.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

/// A client connection closed on this thread: return this thread's free
/// pages. mimalloc keeps freed pages per thread until that thread
/// allocates again, and [`Reclaim`] runs on a thread of its own, so without
/// this a worker that went idle after a burst kept its peak (3,000 idle
/// connections closed: +86 MB kept with two workers; +11 MB with this).
/// About 6k instructions (~2 µs) per closed connection.
pub fn connection_closed() {
    // SAFETY: as in Reclaim.
    unsafe { libmimalloc_sys::mi_collect(false) }
}
