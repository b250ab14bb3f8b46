//! The lb's config loader on arbitrary TOML: it answers a config or an
//! error naming the file and a line and column that exist in it, never a
//! panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsmesh_fuzz::{check_config_error, config_file};

fuzz_target!(|data: &[u8]| {
    // A file that is not UTF-8 is refused before it is parsed.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = config_file("lb.toml", text);
    if let Err(error) = lb::config::Config::load(&path).map(|_| ()) {
        check_config_error(&path, text, &error);
    }
});
