//! The seed clients' frames (simple-chat and CloudChat) as the app reads
//! them, and the simple-chat time stamp it writes.
//!
//! - A parsed frame re-serialises and re-parses to the same message or
//!   command; the content checks answer without panic.
//! - The time stamp of any `ts` is `YYYY/MM/DD HH:MM:SS` with fields in
//!   range, and names the same day and second as `ts`.
#![no_main]

use app::config::Limits;
use app::legacy::{utc_time, CloudIn, SimpleIn};
use app::limits::{check_nick, check_send};
use libfuzzer_sys::fuzz_target;
use serde_json::json;

/// Days since 1970-01-01 of a civil date (Howard Hinnant's inverse).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn check_time(ms: u64) {
    let text = utc_time(ms);
    let (date, time) = text.split_once(' ').expect("date and time");
    let date: Vec<i64> = date.split('/').map(|p| p.parse().expect("a number")).collect();
    let time: Vec<u64> = time.split(':').map(|p| p.parse().expect("a number")).collect();
    assert_eq!((date.len(), time.len()), (3, 3), "{text}");
    assert!((1..=12).contains(&date[1]) && (1..=31).contains(&date[2]), "{text}");
    assert!(time[0] < 24 && time[1] < 60 && time[2] < 60, "{text}");
    let secs = ms / 1000;
    assert_eq!(days_from_civil(date[0], date[1], date[2]), (secs / 86_400) as i64, "{ms}: {text}");
    assert_eq!(time[0] * 3600 + time[1] * 60 + time[2], secs % 86_400, "{ms}: {text}");
}

fuzz_target!(|data: &[u8]| {
    if let Some(ms) = data.get(..8) {
        check_time(u64::from_le_bytes(ms.try_into().expect("8 bytes")));
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let limits = Limits::default();
    if let Ok(m) = serde_json::from_str::<SimpleIn>(text) {
        let _ = check_nick(&limits, &m.name).and_then(|()| check_send(&limits, &m.content, None));
        let json = json!({ "name": m.name, "content": m.content }).to_string();
        let again: SimpleIn = serde_json::from_str(&json).expect("its own output parses");
        assert_eq!((again.name, again.content), (m.name, m.content));
    }
    match serde_json::from_str::<CloudIn>(text) {
        Ok(CloudIn::Command { kind, command }) => {
            let json = json!({ "type": kind, "command": command }).to_string();
            let again = serde_json::from_str::<CloudIn>(&json).expect("its own output parses");
            assert!(
                matches!(&again, CloudIn::Command { kind: k, command: c } if *k == kind && *c == command),
                "{json} → {again:?}"
            );
        }
        Ok(CloudIn::Message { body }) => {
            let _ = check_send(&limits, &body, None);
            let json = json!({ "body": body }).to_string();
            let again = serde_json::from_str::<CloudIn>(&json).expect("its own output parses");
            assert!(matches!(&again, CloudIn::Message { body: b } if *b == body), "{json} → {again:?}");
        }
        Err(_) => {}
    }
});
