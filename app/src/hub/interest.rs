//! The instance's room set as its subscriber follows it: a version that
//! grows whenever a room gains its first or loses its last local socket,
//! the newest version the subscriber confirmed (every room of it
//! subscribed, and gap-filled after its SUBSCRIBE), and whether a
//! subscriber is polling at all. The hub changes the version under its own
//! lock, together with the rooms, so a version always names one set.
//!
//! A socket's history read waits for the confirmation of the version that
//! added its room: from then on every chat of the room reaches this
//! instance live, so nothing falls between the read and the subscription.
//! With no subscriber polling, or one that does not confirm in time, the
//! read goes ahead and the subscriber's fill after its SUBSCRIBE covers it
//! (see `Hub::cursors`).

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use wsmesh_common::events::InterestVersion;

/// How long a subscriber counts as polling after its last request ended.
const ATTACHED_AFTER_POLL: Duration = Duration::from_secs(1);

/// Longest a socket's history read waits for its room's subscription.
pub const SUBSCRIBE_WAIT: Duration = Duration::from_secs(2);

/// Longest the app holds a `GET /internal/rooms` while nothing changes.
pub const MAX_POLL_WAIT: Duration = Duration::from_secs(30);

/// How a socket's wait for its room's subscription ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subscription {
    /// The subscriber confirmed the room: every chat from now on arrives live.
    Confirmed,
    /// No subscriber polls, or it did not confirm within `SUBSCRIBE_WAIT`:
    /// the subscriber's fill after its SUBSCRIBE covers this socket's read.
    Unconfirmed,
}

/// Versions of the room set and what the subscriber made of them.
#[derive(Debug)]
pub struct RoomSetVersions {
    /// Drawn at start: versions of another process never match.
    epoch: u64,
    /// The current version; sent (under the hub's lock) on every change,
    /// so a waiting poll wakes.
    version: watch::Sender<u64>,
    /// The newest version the subscriber confirmed; waiting sockets watch it.
    confirmed: watch::Sender<u64>,
    /// Until when a subscriber counts as polling (see `attached`).
    attached_until: Mutex<Option<Instant>>,
}

impl RoomSetVersions {
    pub fn new() -> RoomSetVersions {
        RoomSetVersions {
            epoch: rand::random(),
            version: watch::Sender::new(0),
            confirmed: watch::Sender::new(0),
            attached_until: Mutex::new(None),
        }
    }

    /// The current version.
    pub fn current(&self) -> InterestVersion {
        InterestVersion {
            epoch: self.epoch,
            version: *self.version.borrow(),
        }
    }

    /// The room set changed: the next version (call under the hub's lock).
    pub fn bump(&self) -> u64 {
        let mut next = 0;
        self.version.send_modify(|v| {
            *v += 1;
            next = *v;
        });
        next
    }

    /// Resolves once the version is no longer `seen`.
    pub async fn changed_from(&self, seen: u64) {
        let mut rx = self.version.subscribe();
        // The sender lives as long as `self`, so this only ends on a change.
        let _ = rx.wait_for(|v| *v != seen).await;
    }

    /// The subscriber confirms `version` of `epoch` (a confirmation of
    /// another process' epoch, or beyond the current version, is ignored).
    pub fn confirm(&self, epoch: u64, version: u64) {
        if epoch != self.epoch || version > *self.version.borrow() {
            return;
        }
        self.confirmed.send_if_modified(|c| {
            let newer = version > *c;
            if newer {
                *c = version;
            }
            newer
        });
    }

    /// Whether `version` is confirmed.
    pub fn is_confirmed(&self, version: u64) -> bool {
        *self.confirmed.borrow() >= version
    }

    /// A subscriber's poll starts; it may be held for `wait`.
    pub fn poll_started(&self, wait: Duration) -> PollGuard<'_> {
        self.attach_until(Instant::now() + wait + ATTACHED_AFTER_POLL);
        PollGuard(self)
    }

    fn attach_until(&self, until: Instant) {
        *self.attached_until.lock().unwrap_or_else(PoisonError::into_inner) = Some(until);
    }

    /// Whether a subscriber is polling: a poll is held now or one ended
    /// within `ATTACHED_AFTER_POLL`.
    pub fn attached(&self) -> bool {
        self.attached_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some_and(|until| Instant::now() < until)
    }

    /// Waits until `version` is confirmed, for at most `SUBSCRIBE_WAIT`,
    /// and not at all while no subscriber polls.
    pub async fn wait_confirmed(&self, version: u64) -> Subscription {
        let mut confirmed = self.confirmed.subscribe();
        let deadline = Instant::now() + SUBSCRIBE_WAIT;
        loop {
            if *confirmed.borrow_and_update() >= version {
                return Subscription::Confirmed;
            }
            if !self.attached() {
                return Subscription::Unconfirmed;
            }
            // Wake at least every `ATTACHED_AFTER_POLL` to see a subscriber leave.
            let nap = deadline.min(Instant::now() + ATTACHED_AFTER_POLL);
            match tokio::time::timeout_at(nap, confirmed.changed()).await {
                Ok(_) => {}
                Err(_) if Instant::now() >= deadline => return Subscription::Unconfirmed,
                Err(_) => {}
            }
        }
    }
}

impl Default for RoomSetVersions {
    fn default() -> Self {
        RoomSetVersions::new()
    }
}

/// Marks the end of a poll when dropped (answered, or its connection gone).
#[derive(Debug)]
pub struct PollGuard<'a>(&'a RoomSetVersions);

impl Drop for PollGuard<'_> {
    fn drop(&mut self) {
        self.0.attach_until(Instant::now() + ATTACHED_AFTER_POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_socket_waits_only_while_a_subscriber_polls() {
        let i = RoomSetVersions::new();
        let v = i.bump();
        assert_eq!(i.wait_confirmed(v).await, Subscription::Unconfirmed);
        let poll = i.poll_started(Duration::from_secs(10));
        let started = Instant::now();
        assert_eq!(i.wait_confirmed(v).await, Subscription::Unconfirmed);
        assert_eq!(started.elapsed(), SUBSCRIBE_WAIT, "waited for the subscriber");
        i.confirm(i.current().epoch, v);
        assert_eq!(i.wait_confirmed(v).await, Subscription::Confirmed);
        drop(poll);
        assert!(i.attached());
        tokio::time::sleep(ATTACHED_AFTER_POLL).await;
        assert!(!i.attached());
    }

    #[tokio::test(start_paused = true)]
    async fn a_confirmation_wakes_the_waiting_socket() {
        let i = std::sync::Arc::new(RoomSetVersions::new());
        let v = i.bump();
        let _poll = i.poll_started(Duration::from_secs(10));
        let waiting = tokio::spawn({
            let i = i.clone();
            async move { i.wait_confirmed(v).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        i.confirm(i.current().epoch, v);
        assert_eq!(waiting.await.unwrap(), Subscription::Confirmed);
    }

    #[test]
    fn confirmations_of_another_epoch_or_the_future_are_ignored() {
        let i = RoomSetVersions::new();
        let v = i.bump();
        i.confirm(i.current().epoch.wrapping_add(1), v);
        assert!(!i.is_confirmed(v));
        i.confirm(i.current().epoch, v + 1);
        assert!(!i.is_confirmed(v));
        i.confirm(i.current().epoch, v);
        assert!(i.is_confirmed(v));
        i.confirm(i.current().epoch, 0);
        assert!(i.is_confirmed(v), "confirmations never go back");
    }
}
