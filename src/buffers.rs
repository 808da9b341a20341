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

    fn take_zeroed(&self, len: usize) -> Vec<u8> {
        let mut b = self.take(len);
        // Copied from a zero page, not `resize(len, 0)`: the release profile builds this crate
        // for size, where a fill loop stays a byte-at-a-time loop (a fifth of an upload's CPU)
        // while a copy is always a `memcpy`.
        static ZEROS: [u8; 4096] = [0; 4096];
        while b.len() < len {
            let n = (len - b.len()).min(ZEROS.len());
            b.extend_from_slice(&ZEROS[..n]);
        }
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

/// A zero-filled buffer of `len` bytes.
pub fn take_zeroed(len: usize) -> Vec<u8> {
    POOL.take_zeroed(len)
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
        let b = pool.take_zeroed(512 << 10);
        let ptr = b.as_ptr();
        pool.give(Bytes::from(b));
        let again = pool.take(100);
        assert_eq!(again.as_ptr(), ptr, "the buffer was reused");
        assert!(again.is_empty());
        // A shared buffer is not taken back.
        let shared = Bytes::from(pool.take_zeroed(512 << 10));
        let other = shared.clone();
        pool.give(shared);
        drop(other);
        // The limit holds: of four 512 KiB buffers given back under a 1 MiB limit, the pool
        // keeps what fits (the one `again` above is still out) and drops the rest.
        let four: Vec<Vec<u8>> = (0..4).map(|_| pool.take_zeroed(512 << 10)).collect();
        for b in four {
            pool.give(Bytes::from(b));
        }
        assert!(pool.held() <= 1 << 20, "the pool holds {} bytes, over its 1 MiB limit", pool.held());
        assert!(pool.held() >= 512 << 10, "the pool kept nothing");
        drop(again);
    }

    #[test]
    fn a_reused_buffer_comes_back_zeroed_to_the_length_asked() {
        let pool = Pool::new();
        pool.set_limit(1 << 20);
        let mut b = pool.take_zeroed(300 << 10);
        b.fill(0xa5);
        let ptr = b.as_ptr();
        pool.give(Bytes::from(b));
        // Not a multiple of the zero page, and shorter than the buffer's last use.
        let again = pool.take_zeroed((200 << 10) + 123);
        assert_eq!(again.as_ptr(), ptr, "the buffer was reused");
        assert_eq!(again.len(), (200 << 10) + 123);
        assert!(again.iter().all(|&x| x == 0), "a byte of the last use survived");
    }
}
