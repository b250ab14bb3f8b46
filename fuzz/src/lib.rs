//! What the fuzz targets share: a runtime for code that arms tokio timers,
//! reproducible ways to cut a stream into reads, and the checks every
//! config loader's answer must pass.

use std::path::{Path, PathBuf};

use wsmesh_common::config::ConfigError;

/// Runs `f` inside a current-thread runtime with timers (kept per thread),
/// for code that creates a `tokio::time::Sleep`.
pub fn in_runtime<T>(f: impl FnOnce() -> T) -> T {
    thread_local! {
        static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a current-thread runtime");
    }
    RUNTIME.with(|rt| {
        let _entered = rt.enter();
        f()
    })
}

/// `data` cut into reads of 1 to 16 bytes, the cut points drawn from `data`
/// itself, so a failing input replays the same cuts.
pub fn pieces(data: &[u8]) -> Vec<&[u8]> {
    // FNV-1a of the input seeds a xorshift generator.
    let mut state = data
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
        | 1;
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let n = ((state % 16) as usize + 1).min(rest.len());
        let (piece, tail) = rest.split_at(n);
        out.push(piece);
        rest = tail;
    }
    out
}

/// Writes `text` to `name` in a directory of this process and returns the
/// path, for loaders that take a file.
pub fn config_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wsmesh-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temp directory");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("the config file written");
    path
}

/// A refused config names the file, and a line and column that exist in it.
pub fn check_config_error(path: &Path, text: &str, error: &ConfigError) {
    assert_eq!(error.file, path, "{error}");
    let shown = error.to_string();
    assert!(shown.starts_with(&path.display().to_string()), "{shown}");
    assert!(!error.reason.trim().is_empty(), "{shown}");
    if let Some((line, col)) = error.position {
        let lines = text.split('\n').count();
        assert!(line >= 1 && line <= lines, "line {line} of {lines}: {shown}");
        let width = text.split('\n').nth(line - 1).map_or(0, |l| l.chars().count());
        assert!(col >= 1 && col <= width + 1, "column {col} of {width}: {shown}");
    }
}
