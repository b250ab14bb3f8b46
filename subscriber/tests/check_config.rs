//! `subscriber check-config FILE`, run as a real process: the shipped configs
//! pass, a broken one fails with `FILE:LINE:COL: reason`, like `haproxy -c`.

use std::path::Path;
use std::process::{Command, Output};

fn check(file: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_subscriber"))
        .arg("check-config")
        .arg(file)
        .env_remove("WSMESH_REDIS_URL")
        .env_remove("WSMESH_INTERNAL_TOKEN")
        .output()
        .expect("run subscriber")
}

#[test]
fn shipped_local_configs_pass() {
    for name in ["subscriber1.toml", "subscriber2.toml"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../configs/local")
            .join(name);
        let out = check(&path);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn broken_config_fails_naming_file_line_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[app]\ninternal_url = \"http://127.0.0.1:9101\"\ntoken = \"t\"\nretries = 3\n",
    )
    .unwrap();
    let out = check(&path);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(&format!("{}:4:1: ", path.display())),
        "{stderr}"
    );
    assert!(stderr.contains("retries"), "{stderr}");
}

#[test]
fn a_bad_key_in_a_later_table_names_its_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[redis]\nprefix = \"p\"\n\n[app]\ninternal_url = \"http://127.0.0.1:9101\"\ntoken = \"t\"\n\
         \n[queue]\ncapacity = 10\n    batch_max = 11\n",
    )
    .unwrap();
    let out = check(&path);
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "{}:10:5: batch_max must be between 1 and queue.capacity\n",
            path.display()
        )
    );
}

#[test]
fn missing_file_fails() {
    let out = check(Path::new("/nonexistent/subscriber.toml"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}
