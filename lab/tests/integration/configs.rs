//! The committed configs are valid for the binaries that read them, and a
//! broken one is refused with `file:line: reason` (like `haproxy -c`).

use std::process::Command;

use wsmesh_testkit::cluster::binary;
use wsmesh_testkit::configs::configs_dir;

fn check(bin: &str, file: &std::path::Path) -> (bool, String) {
    let out = Command::new(binary(bin).unwrap())
        .arg("check-config")
        .arg(file)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn committed_local_configs_pass_check_config() {
    for (bin, file) in [
        ("app", "app1.toml"),
        ("app", "app2.toml"),
        ("subscriber", "subscriber1.toml"),
        ("subscriber", "subscriber2.toml"),
    ] {
        let (ok, text) = check(bin, &configs_dir().join(file));
        assert!(ok, "{bin} check-config {file}: {text}");
    }
}

#[test]
fn unknown_key_is_refused_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    for (bin, template) in [("app", "app1.toml"), ("subscriber", "subscriber1.toml")] {
        let text = std::fs::read_to_string(configs_dir().join(template)).unwrap();
        let broken = dir.path().join(template);
        let lines = text.lines().count();
        std::fs::write(&broken, format!("{text}\nbogus_key = 1\n")).unwrap();
        let (ok, out) = check(bin, &broken);
        assert!(!ok, "{bin} accepted an unknown key");
        let at = format!("{}:", broken.display());
        assert!(out.contains(&at), "{bin}: {out}");
        assert!(out.contains("bogus_key"), "{bin}: {out}");
        // The key sits inside the file's last table, two lines after its end.
        assert!(out.contains(&format!(":{}:", lines + 2)), "{bin}: {out}");
    }
}
