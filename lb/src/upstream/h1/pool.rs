//! Idle keep-alive connections of one server, kept per connection worker:
//! a connection's socket is registered with the worker that opened it, so a
//! request from another worker would wake that worker on every read.

use std::sync::Mutex;

use super::ServerConn;
use crate::workers;

/// A server's idle connections.
#[derive(Debug)]
pub struct Pool {
    /// Connections per worker slot, oldest first.
    idle: Box<[Mutex<Vec<ServerConn>>]>,
    /// Most connections kept per slot.
    max_idle: usize,
}

impl Pool {
    pub fn new(max_idle: usize) -> Pool {
        Pool {
            idle: (0..workers::slots()).map(|_| Mutex::new(Vec::new())).collect(),
            max_idle,
        }
    }

    /// This thread's idle connections.
    fn here(&self) -> std::sync::MutexGuard<'_, Vec<ServerConn>> {
        let slot = workers::slot().min(self.idle.len() - 1);
        self.idle[slot].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The most recently used idle connection that is still usable; ones
    /// the server closed (or sent something on) are dropped.
    pub fn take(&self) -> Option<ServerConn> {
        let mut idle = self.here();
        while let Some(mut conn) = idle.pop() {
            if conn.is_idle_usable() {
                return Some(conn);
            }
        }
        None
    }

    /// Keeps a connection whose response was read to its end.
    pub fn put(&self, mut conn: ServerConn) {
        if self.max_idle == 0 {
            return;
        }
        conn.reused = true;
        let mut idle = self.here();
        if idle.len() >= self.max_idle {
            idle.remove(0);
        }
        idle.push(conn);
    }

    /// Drops every idle connection (the server was marked down).
    pub fn clear(&self) {
        for slot in &*self.idle {
            slot.lock().unwrap_or_else(|p| p.into_inner()).clear();
        }
    }
}
