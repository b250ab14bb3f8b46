//! How the subscriber learns which rooms to subscribe to: it long-polls the
//! app (`GET /internal/rooms`), which is the source of truth for the rooms
//! it has sockets in, and hands each new set to the feed. The feed answers
//! with the newest set it has in force (every room SUBSCRIBEd, and a room
//! newly subscribed gap-filled after its SUBSCRIBE); the next poll carries
//! that confirmation to the app, whose joining sockets wait for it before
//! they read history.
//!
//! A poll is held by the app only while there is nothing to report either
//! way: while the feed has not confirmed the newest set, polls are answered
//! at once, so a confirmation goes out as soon as the feed gives it.

use std::time::Duration;

use tokio::sync::watch;
use tracing::{debug, warn};
use wsmesh_common::backoff::Backoff;
use wsmesh_common::events::{Interest, InterestVersion, RoomsQuery};

use crate::app_client::AppClient;

/// How long the app may hold a poll while nothing changes.
const POLL_WAIT: Duration = Duration::from_secs(15);
/// How long a poll waits for the feed's confirmation before asking the
/// app again (keeping it aware that a subscriber is there).
const CONFIRM_WAIT: Duration = Duration::from_millis(500);

/// The two ends the feed holds: the app's newest room set, and where it
/// reports the set it has in force.
pub struct FeedSide {
    /// The app's newest room set; `None` until the first answer.
    pub interest: watch::Receiver<Option<Interest>>,
    /// The newest set the feed has in force.
    pub confirmed: watch::Sender<Option<InterestVersion>>,
}

/// Polls the app's room set for the feed.
pub struct Poller {
    /// Own connection to the app: a held poll blocks it.
    app: AppClient,
    /// Where each new set goes.
    interest: watch::Sender<Option<Interest>>,
    /// What the feed has in force.
    confirmed: watch::Receiver<Option<InterestVersion>>,
    /// Delays between polls while the app is down.
    retry: Backoff,
}

impl Poller {
    /// A poller and the feed's ends of it.
    pub fn new(app: AppClient, retry: Backoff) -> (Poller, FeedSide) {
        let (interest, interest_rx) = watch::channel(None);
        let (confirmed_tx, confirmed) = watch::channel(None);
        let poller = Poller {
            app,
            interest,
            confirmed,
            retry,
        };
        let feed = FeedSide {
            interest: interest_rx,
            confirmed: confirmed_tx,
        };
        (poller, feed)
    }

    /// Polls until aborted.
    pub async fn run(mut self) {
        let mut known: Option<InterestVersion> = None;
        loop {
            let confirmed = *self.confirmed.borrow_and_update();
            let query = query(known, confirmed);
            match self.app.rooms(&query).await {
                Ok(interest) => {
                    self.retry.reset();
                    if Some(interest.at) != known {
                        debug!(
                            version = interest.at.version,
                            rooms = interest.rooms.len(),
                            "the app's rooms changed"
                        );
                        known = Some(interest.at);
                        self.interest.send_replace(Some(interest));
                    }
                }
                Err(error) => {
                    let delay = self.retry.next_delay();
                    warn!(%error, retry_in = ?delay, "cannot get the app's rooms");
                    tokio::time::sleep(delay).await;
                    continue;
                }
            }
            if *self.confirmed.borrow() != known {
                // The feed is taking the set in: report it as soon as it has.
                if let Ok(Err(_)) = tokio::time::timeout(CONFIRM_WAIT, self.confirmed.changed()).await {
                    // The feed is gone (the process is stopping): no spinning.
                    tokio::time::sleep(CONFIRM_WAIT).await;
                }
            }
        }
    }
}

/// The next poll: what is known, what of it is confirmed, and a long wait
/// only when there is nothing to confirm.
fn query(known: Option<InterestVersion>, confirmed: Option<InterestVersion>) -> RoomsQuery {
    let confirmed = confirmed.filter(|c| known.is_some_and(|k| k.epoch == c.epoch));
    let settled = known.is_some() && confirmed == known;
    RoomsQuery {
        known,
        confirmed: confirmed.map(|c| c.version),
        wait: if settled { POLL_WAIT } else { Duration::ZERO },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(epoch: u64, version: u64) -> Option<InterestVersion> {
        Some(InterestVersion { epoch, version })
    }

    #[test]
    fn a_poll_is_held_only_once_the_known_set_is_confirmed() {
        let first = query(None, None);
        assert_eq!((first.known, first.wait), (None, Duration::ZERO));
        let pending = query(v(1, 5), v(1, 4));
        assert_eq!((pending.confirmed, pending.wait), (Some(4), Duration::ZERO));
        let settled = query(v(1, 5), v(1, 5));
        assert_eq!((settled.confirmed, settled.wait), (Some(5), POLL_WAIT));
    }

    #[test]
    fn a_confirmation_of_another_app_process_is_not_sent() {
        let q = query(v(2, 1), v(1, 9));
        assert_eq!((q.confirmed, q.wait), (None, Duration::ZERO));
    }
}
