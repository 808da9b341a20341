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

/// Buffers smaller than this are not worth keeping.
const MIN_KEEP: usize = 64 << 10;

/// A pool of buffers and its limit. The process has one ([`POOL`], used through the free
/// functions); a test makes its own, untouched by other tests running at the same time.
struct Pool {
    bufs: Mutex<Vec<Vec<u8>>>,
    /// Set by the engine (`max_memory`, whose default is the settings table's) before any
    /// buffer comes back; until then nothing is kept.
    limit: AtomicU64,
}

static POOL: Pool = Pool::new();

impl Pool {
    const fn new() -> Self {
        Pool { bufs: Mutex::new(Vec::new()), limit: AtomicU64::new(0) }
    }

    fn set_limit(&self, bytes: u64) {
        self.limit.store(bytes, Ordering::Relaxed);
    }

    fn take(&self, capacity: usize) -> Vec<u8> {
        let mut b = self.bufs.lock().unwrap_or_else(|p| p.into_inner()).pop().unwrap_or_default();
        b.clear();
        b.reserve(capacity);
        b
    }

    fn give(&self, data: Bytes) {
        let Ok(m) = data.try_into_mut() else { return };
        let v: Vec<u8> = m.into();
        if v.capacity() < MIN_KEEP {
            return;
        }
        let mut pool = self.bufs.lock().unwrap_or_else(|p| p.into_inner());
        let held: u64 = pool.iter().map(|b| b.capacity() as u64).sum();
        if held + v.capacity() as u64 <= self.limit.load(Ordering::Relaxed) {
            pool.push(v);
        }
    }

    /// Bytes the pool holds now.
    #[cfg(test)]
    fn held(&self) -> u64 {
        self.bufs.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|b| b.capacity() as u64).sum()
    }
}

/// Caps the bytes the pool may hold (the engine passes `max_memory`).
pub fn set_limit(bytes: u64) {
    POOL.set_limit(bytes);
}

/// An empty buffer with room for `capacity` bytes.
pub fn take(capacity: usize) -> Vec<u8> {
    POOL.take(capacity)
}

/// Gives a buffer back once nothing else holds it (a shared `Bytes` is simply dropped).
pub fn give(data: Bytes) {
    POOL.give(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_and_the_pool_respects_its_limit() {
        // Its own pool: other tests give and take from the process's pool meanwhile.
        let pool = Pool::new();
        pool.set_limit(1 << 20);
        let b = vec_of(&pool, 512 << 10);
        let ptr = b.as_ptr();
        pool.give(Bytes::from(b));
        let again = pool.take(100);
        assert_eq!(again.as_ptr(), ptr, "the buffer was reused");
        assert!(again.is_empty());
        // A shared buffer is not taken back.
        let shared = Bytes::from(vec_of(&pool, 512 << 10));
        let other = shared.clone();
        pool.give(shared);
        drop(other);
        // The limit holds: of four 512 KiB buffers given back under a 1 MiB limit, the pool
        // keeps what fits (the one `again` above is still out) and drops the rest.
        let four: Vec<Vec<u8>> = (0..4).map(|_| vec_of(&pool, 512 << 10)).collect();
        for b in four {
            pool.give(Bytes::from(b));
        }
        assert!(pool.held() <= 1 << 20, "the pool holds {} bytes, over its 1 MiB limit", pool.held());
        assert!(pool.held() >= 512 << 10, "the pool kept nothing");
        drop(again);
    }

    /// A buffer of `len` bytes from `pool`, as a reader fills one.
    fn vec_of(pool: &Pool, len: usize) -> Vec<u8> {
        let mut b = pool.take(len);
        b.resize(len, 0xa5);
        b
    }

    #[test]
    fn a_reused_buffer_comes_back_empty_with_room_for_what_is_asked() {
        let pool = Pool::new();
        pool.set_limit(1 << 20);
        let b = vec_of(&pool, 300 << 10);
        let ptr = b.as_ptr();
        pool.give(Bytes::from(b));
        // Shorter than the buffer's last use: the same buffer, nothing of that use readable.
        let again = pool.take((200 << 10) + 123);
        assert_eq!(again.as_ptr(), ptr, "the buffer was reused");
        assert!(again.is_empty(), "a byte of the last use is still in the buffer");
        assert!(again.capacity() >= (200 << 10) + 123);
        // Longer than it: room for all of it.
        let big = pool.take(700 << 10);
        assert!(big.capacity() >= 700 << 10);
    }
}
