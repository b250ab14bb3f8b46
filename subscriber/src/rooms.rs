//! Which room channels the subscription holds, and which of them are on
//! their way out. The app says which rooms it has sockets in; a room it
//! no longer names stays subscribed for `redis.unsubscribe_grace`, so a
//! socket that leaves and comes back does not cost an UNSUBSCRIBE, a
//! SUBSCRIBE and a gap fill. Pure bookkeeping: the feed sends the commands.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

/// Where a subscribed room stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hold {
    /// The app has sockets in it.
    Wanted,
    /// The app stopped naming it; unsubscribed at this instant unless it
    /// comes back first.
    Leaving(Instant),
}

/// The rooms subscribed on the current pub/sub connection.
#[derive(Debug)]
pub struct Rooms {
    /// Room → whether it is still wanted.
    held: HashMap<String, Hold>,
    /// `redis.unsubscribe_grace`.
    grace: Duration,
}

impl Rooms {
    pub fn new(grace: Duration) -> Rooms {
        Rooms {
            held: HashMap::new(),
            grace,
        }
    }

    /// A new connection holds nothing.
    pub fn clear(&mut self) {
        self.held.clear();
    }

    /// Whether `room` is subscribed (leaving or not).
    pub fn holds(&self, room: &str) -> bool {
        self.held.contains_key(room)
    }

    /// How many rooms are subscribed (leaving ones included).
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Follows the app's room set: rooms it names are wanted (a leaving
    /// one is kept), the others start leaving. Returns the rooms to
    /// SUBSCRIBE, which `subscribed` must then record.
    pub fn want(&mut self, rooms: &[String], now: Instant) -> Vec<String> {
        let mut new = Vec::new();
        let wanted: std::collections::HashSet<&str> = rooms.iter().map(String::as_str).collect();
        for (room, hold) in &mut self.held {
            match (wanted.contains(room.as_str()), *hold) {
                (true, _) => *hold = Hold::Wanted,
                (false, Hold::Wanted) => *hold = Hold::Leaving(now + self.grace),
                (false, Hold::Leaving(_)) => {}
            }
        }
        for room in rooms {
            if !self.held.contains_key(room) {
                new.push(room.clone());
            }
        }
        new
    }

    /// Records rooms whose SUBSCRIBE Redis acknowledged.
    pub fn subscribed(&mut self, rooms: &[String]) {
        for room in rooms {
            self.held.insert(room.clone(), Hold::Wanted);
        }
    }

    /// When the next leaving room is due; `None` when none is leaving.
    pub fn next_due(&self) -> Option<Instant> {
        self.held
            .values()
            .filter_map(|hold| match hold {
                Hold::Leaving(at) => Some(*at),
                Hold::Wanted => None,
            })
            .min()
    }

    /// Takes out the leaving rooms due at `now`: they are to be UNSUBSCRIBEd.
    pub fn due(&mut self, now: Instant) -> Vec<String> {
        let due: Vec<String> = self
            .held
            .iter()
            .filter(|(_, hold)| matches!(hold, Hold::Leaving(at) if *at <= now))
            .map(|(room, _)| room.clone())
            .collect();
        for room in &due {
            self.held.remove(room);
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(rooms: &[&str]) -> Vec<String> {
        rooms.iter().map(|r| r.to_string()).collect()
    }

    #[test]
    fn new_rooms_are_subscribed_once() {
        let mut r = Rooms::new(Duration::from_secs(30));
        let now = Instant::now();
        let new = r.want(&names(&["a", "b"]), now);
        assert_eq!(new.len(), 2);
        r.subscribed(&new);
        assert_eq!(r.want(&names(&["a", "b"]), now), Vec::<String>::new());
        assert_eq!(r.want(&names(&["a", "b", "c"]), now), names(&["c"]));
        assert_eq!(r.len(), 2, "c is held only once its SUBSCRIBE is acknowledged");
    }

    #[test]
    fn a_room_left_is_unsubscribed_after_the_grace_unless_it_comes_back() {
        let grace = Duration::from_secs(30);
        let mut r = Rooms::new(grace);
        let t0 = Instant::now();
        r.subscribed(&names(&["a", "b"]));
        assert!(r.want(&names(&["b"]), t0).is_empty());
        assert_eq!(r.next_due(), Some(t0 + grace));
        assert!(r.due(t0 + grace / 2).is_empty());
        // a comes back within the grace: nothing to SUBSCRIBE, nothing due.
        assert!(r.want(&names(&["a", "b"]), t0 + grace / 2).is_empty());
        assert_eq!(r.next_due(), None);
        let t1 = t0 + grace;
        r.want(&names(&["b"]), t1);
        // Naming the set again does not push the deadline out.
        r.want(&names(&["b"]), t1 + grace / 2);
        assert_eq!(r.due(t1 + grace), names(&["a"]));
        assert_eq!(r.len(), 1);
        assert_eq!(r.want(&names(&["a", "b"]), t1 + grace), names(&["a"]));
    }

    #[test]
    fn a_new_connection_holds_nothing() {
        let mut r = Rooms::new(Duration::ZERO);
        r.subscribed(&names(&["a"]));
        r.clear();
        assert_eq!(r.want(&names(&["a"]), Instant::now()), names(&["a"]));
    }
}
