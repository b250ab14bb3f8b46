//! Buffers a worker thread shares among everything it drives, each
//! borrowed only within one poll, so whatever waits holds none.

use std::cell::RefCell;
use std::thread::LocalKey;

/// A thread's buffer, declared with `thread_local!`.
pub type ThreadBuffer = RefCell<Box<[u8]>>;

/// `len` zero bytes, to initialise a `thread_local!`.
pub fn new(len: usize) -> ThreadBuffer {
    RefCell::new(vec![0u8; len].into_boxed_slice())
}

/// Runs `f` on the thread's buffer `key`, or on a fresh one of `len`
/// bytes in the (unexpected) case that the thread's is in use further up
/// the stack.
pub fn with<T>(key: &'static LocalKey<ThreadBuffer>, len: usize, f: impl FnOnce(&mut [u8]) -> T) -> T {
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => f(&mut buf),
        Err(_) => f(&mut vec![0u8; len]),
    })
}
