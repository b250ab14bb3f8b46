//! The `app` command line: `check-config` exit codes and `FILE:LINE:COL:
//! reason` output, and a clear refusal of a bad invocation.

use std::process::Command;

fn app() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_app"));
    c.env_remove("WSMESH_INTERNAL_TOKEN")
        .env_remove("WSMESH_REDIS_URL");
    c
}

fn write(dir: &tempfile::TempDir, text: &str) -> std::path::PathBuf {
    let path = dir.path().join("app.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

#[test]
fn check_config_accepts_the_shipped_local_configs() {
    for f in ["app1.toml", "app2.toml"] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../configs/local")
            .join(f);
        let out = app().arg("check-config").arg(&path).output().expect("runs");
        assert!(
            out.status.success(),
            "{f}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn check_config_names_file_line_and_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(
        &dir,
        "instance = \"x\"\n[listen]\npublic = \"127.0.0.1:1\"\ninternal = \"127.0.0.1:2\"\n\
         [internal]\ntoken = \"t\"\n[limits]\ncapacity_threshold = 0\n",
    );
    let out = app().arg("check-config").arg(&path).output().expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:8:1: capacity_threshold", path.display())),
        "{err}"
    );

    let path = write(&dir, "instance = \"x\"\nlisten = 3\n");
    let out = app().arg("check-config").arg(&path).output().expect("runs");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(":2:"),
        "line of the bad key"
    );
}

#[test]
fn check_config_names_the_line_and_column_of_a_key_in_a_later_table() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(
        &dir,
        "instance = \"x\"\n[listen]\npublic = \"127.0.0.1:1\"\ninternal = \"127.0.0.1:2\"\n\
         [internal]\ntoken = \"t\"\n[limits]\nhistory_limit = 5\n[drain]\ngrace = \"1s\"\n\
         [health]\n    subscriber_max_age = \"0s\"\n",
    );
    let out = app().arg("check-config").arg(&path).output().expect("runs");
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "{}:12:5: subscriber_max_age must be more than 0\n",
            path.display()
        )
    );
}

#[test]
fn env_token_satisfies_the_token_requirement() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(
        &dir,
        "instance = \"x\"\n[listen]\npublic = \"127.0.0.1:1\"\ninternal = \"127.0.0.1:2\"\n",
    );
    let out = app().arg("check-config").arg(&path).output().expect("runs");
    assert!(!out.status.success(), "no token anywhere");
    let out = app()
        .arg("check-config")
        .arg(&path)
        .env("WSMESH_INTERNAL_TOKEN", "from-env")
        .output()
        .expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn running_without_a_config_is_a_usage_error() {
    let out = app().output().expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage"));
}
