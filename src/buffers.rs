//! A process-wide pool of large upload buffers (blocks; downloads stream to disk).
//!
//! Allocating a fresh 4 MiB buffer per block costs page faults and zeroing, and with
//! glibc either fragments the heap (RSS far above `max_memory`) or, with the fixed mmap
//! threshold `main` sets, maps and unmaps memory per block. Reusing buffers avoids both.
//! The pool never holds more bytes than the memory budget (`set_limit`), and since a
//! buffer only enters the pool after it was in flight, in-flight plus pooled buffers stay
//! within what the budget allowed at its peak.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use bytes::Bytes;

static POOL: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
/// Set by the engine (`max_memory`, whose default is the settings table's) before any
/// buffer comes back; until then nothing is kept.
static LIMIT: AtomicU64 = AtomicU64::new(0);
/// Buffers smaller than this are not worth keeping.
const MIN_KEEP: usize = 64 << 10;

/// Caps the bytes the pool may hold (the engine passes `max_memory`).
pub fn set_limit(bytes: u64) {
    LIMIT.store(bytes, Ordering::Relaxed);
}

fn pop() -> Vec<u8> {
    POOL.lock().unwrap_or_else(|p| p.into_inner()).pop().unwrap_or_default()
}

/// An empty buffer with room for `capacity` bytes.
pub fn take(capacity: usize) -> Vec<u8> {
    let mut b = pop();
    b.clear();
    b.reserve(capacity);
    b
}

/// A zero-filled buffer of `len` bytes.
pub fn take_zeroed(len: usize) -> Vec<u8> {
    let mut b = take(len);
    b.resize(len, 0);
    b
}

/// Gives a buffer back once nothing else holds it (a shared `Bytes` is simply dropped).
pub fn give(data: Bytes) {
    let Ok(m) = data.try_into_mut() else { return };
    let v: Vec<u8> = m.into();
    if v.capacity() < MIN_KEEP {
        return;
    }
    let mut pool = POOL.lock().unwrap_or_else(|p| p.into_inner());
    let held: u64 = pool.iter().map(|b| b.capacity() as u64).sum();
    if held + v.capacity() as u64 <= LIMIT.load(Ordering::Relaxed) {
        pool.push(v);
    }
}

/// Bytes the pool holds now.
#[cfg(test)]
fn held() -> u64 {
    POOL.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|b| b.capacity() as u64).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_and_the_pool_respects_its_limit() {
        let before = LIMIT.load(Ordering::Relaxed);
        set_limit(1 << 20);
        let b = take_zeroed(512 << 10);
        let ptr = b.as_ptr();
        give(Bytes::from(b));
        let again = take(100);
        assert_eq!(again.as_ptr(), ptr, "the buffer was reused");
        assert!(again.is_empty());
        // A shared buffer is not taken back.
        let shared = Bytes::from(take_zeroed(512 << 10));
        let other = shared.clone();
        give(shared);
        drop(other);
        // The limit holds: of four 512 KiB buffers given back under a 1 MiB limit, the pool
        // keeps what fits (the one `again` above is still out) and drops the rest.
        let four: Vec<Vec<u8>> = (0..4).map(|_| take_zeroed(512 << 10)).collect();
        for b in four {
            give(Bytes::from(b));
        }
        assert!(held() <= 1 << 20, "the pool holds {} bytes, over its 1 MiB limit", held());
        assert!(held() >= 512 << 10, "the pool kept nothing");
        drop(again);
        set_limit(before);
    }
}
