//! Redis stream ids (`<ms>-<seq>`), ordered the way Redis orders them.
//!
//! Ids are compared numerically, never as strings: `"9-0" < "10-0"` must hold.

use std::fmt;
use std::str::FromStr;

/// A Redis stream entry id. Ordering is Redis' ordering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct StreamId {
    /// Milliseconds part (server time when the entry was added).
    pub ms: u64,
    /// Sequence within the same millisecond.
    pub seq: u64,
}

/// Why a string is not a stream id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a stream id (expected <ms>-<seq>): {0:?}")]
pub struct BadStreamId(pub String);

impl StreamId {
    /// `0-0`, below every id Redis assigns: the starting point when nothing
    /// has been seen or delivered yet.
    pub const ZERO: StreamId = StreamId { ms: 0, seq: 0 };
}

impl FromStr for StreamId {
    type Err = BadStreamId;

    /// Accepts `ms-seq` and a bare `ms` (meaning `ms-0`), as Redis does.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadStreamId(s.chars().take(64).collect());
        let (ms, seq) = match s.split_once('-') {
            Some((ms, seq)) => (ms, seq),
            None => (s, "0"),
        };
        let digits = |p: &str| !p.is_empty() && p.len() <= 20 && p.bytes().all(|b| b.is_ascii_digit());
        if !digits(ms) || !digits(seq) {
            return Err(bad());
        }
        Ok(StreamId {
            ms: ms.parse().map_err(|_| bad())?,
            seq: seq.parse().map_err(|_| bad())?,
        })
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_numerically_not_lexically() {
        let a: StreamId = "9-5".parse().unwrap();
        let b: StreamId = "10-0".parse().unwrap();
        assert!(a < b);
        assert!("10-1".parse::<StreamId>().unwrap() > b);
    }

    #[test]
    fn bare_ms_means_seq_zero_and_round_trips() {
        let id: StreamId = "1700000000000".parse().unwrap();
        assert_eq!(
            id,
            StreamId {
                ms: 1_700_000_000_000,
                seq: 0
            }
        );
        assert_eq!(id.to_string(), "1700000000000-0");
    }

    #[test]
    fn rejects_garbage() {
        for s in [
            "",
            "-",
            "1-",
            "-1",
            "a-1",
            "1-2-3",
            "1 -2",
            "99999999999999999999999-0",
        ] {
            assert!(s.parse::<StreamId>().is_err(), "{s:?} accepted");
        }
    }
}
