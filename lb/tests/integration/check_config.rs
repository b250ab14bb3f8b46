//! `lb check-config FILE` (like `haproxy -c`) and `lb gen-cert`.

use std::process::Command;

use crate::support::*;

fn check(path: &std::path::Path) -> (bool, String, String) {
    let out = Command::new(lb_bin())
        .arg("check-config")
        .arg(path)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write(dir: &std::path::Path, text: &str) -> std::path::PathBuf {
    let p = dir.join("lb.toml");
    std::fs::write(&p, text).unwrap();
    p
}

#[tokio::test]
async fn gen_cert_files_make_a_valid_config_and_the_repo_config_names_them() {
    let dir = tempfile::tempdir().unwrap();
    let certs_dir = dir.path().join("certs");
    let out = Command::new(lb_bin())
        .args(["gen-cert", "--dir"])
        .arg(&certs_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    for f in ["dev-ca.pem", "dev-ca.key", "server.pem", "server.key"] {
        assert!(certs_dir.join(f).is_file(), "{f} missing");
    }
    // The shipped local config, with cert paths relative to its directory.
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/local/lb.toml")).unwrap();
    let conf_dir = dir.path().join("configs/local");
    std::fs::create_dir_all(&conf_dir).unwrap();
    let path = write(&conf_dir, &shipped);
    let (ok, stdout, stderr) = check(&path);
    assert!(ok, "{stderr}");
    assert!(stdout.ends_with(": ok\n"), "{stdout}");
}

#[tokio::test]
async fn errors_name_file_line_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::new();
    let app = Backend::start("app1").await;
    let mut opts = LbOpts::new(&[&app], &certs);
    let ports = Ports {
        https: 1,
        http: 2,
        admin: 3,
    };
    let good = toml::to_string(&config_table(&opts, ports)).unwrap();
    let path = write(dir.path(), &good);
    assert!(check(&path).0, "{}", check(&path).2);

    let with = |change: &dyn Fn(&mut toml::Table), opts: &LbOpts| {
        let mut table = config_table(opts, ports);
        change(&mut table);
        toml::to_string(&table).unwrap()
    };
    let missing_backend = with(&|t| t["frontend"][0]["backend"] = "missing".into(), &opts);
    let unknown_balance = with(&|t| t["backend"][0]["balance"] = "random".into(), &opts);
    let unknown_key = with(
        &|t| {
            if let Some(server) = t["backend"][0]["server"][0].as_table_mut() {
                server.insert("bogus_key".into(), 1.into());
            }
        },
        &opts,
    );
    let missing_cert = certs.dir.path().join("nonexistent.pem");
    opts.certs[0].0 = missing_cert;
    let missing_cert = toml::to_string(&config_table(&opts, ports)).unwrap();
    let cases = [
        (missing_backend, "unknown backend \"missing\""),
        (unknown_balance, "unknown variant"),
        (unknown_key, "bogus_key"),
        (missing_cert, "nonexistent.pem"),
    ];
    for (text, reason) in cases {
        let path = write(dir.path(), &text);
        let (ok, _, stderr) = check(&path);
        assert!(!ok, "accepted a broken config ({reason})");
        let prefix = format!("{}:", path.display());
        assert!(stderr.starts_with(&prefix), "no file in {stderr:?}");
        let line = stderr[prefix.len()..].split(':').next().unwrap();
        assert!(line.parse::<usize>().is_ok(), "no line number in {stderr:?}");
        assert!(stderr.contains(reason), "{reason:?} not in {stderr:?}");
    }
}

/// Two frontends and two backends written out in full, so that a check
/// which found the first key of a name would point at the wrong table.
const TWO_OF_EACH: &str = r#"[[frontend]]
name = "a"
listen = "127.0.0.1:1"
backend = "one"
hsts = "max-age=1"

[[frontend]]
name = "b"
listen = "127.0.0.1:2"
backend = "two"
  hsts = "max-age=2"

[[backend]]
name = "one"
error_limit = 1
[backend.check]
interval = "1s"
rise = 2
[[backend.server]]
name = "s1"
addr = "127.0.0.1:9001"

[[backend]]
name = "two"
  error_limit = 1
[backend.check]
  interval = "1s"
  rise = 2
[[backend.server]]
name = "s2"
addr = "127.0.0.1:9002"
"#;

#[test]
fn an_error_in_the_second_backend_or_frontend_names_its_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), TWO_OF_EACH);
    let (ok, _, stderr) = check(&path);
    assert!(ok, "{stderr}");
    let cases = [
        (
            "  rise = 2",
            "  rise = 0",
            "28:3: rise and fall must be at least 1",
        ),
        (
            "  interval = \"1s\"",
            "  interval = \"0s\"",
            "27:3: check interval must not be 0",
        ),
        (
            "  error_limit = 1",
            "  error_limit = 0",
            "25:3: error_limit must be at least 1",
        ),
        (
            "\"max-age=2\"",
            "\"max-age=2\\u0001\"",
            "11:3: hsts is not a valid header value",
        ),
    ];
    for (from, to, expected) in cases {
        let text = TWO_OF_EACH.replace(from, to);
        assert_ne!(text, TWO_OF_EACH, "{from:?}");
        let path = write(dir.path(), &text);
        let (ok, _, stderr) = check(&path);
        assert!(!ok, "accepted {to:?}");
        assert_eq!(stderr, format!("{}:{expected}\n", path.display()));
    }
}

/// A duration as the configs write it ("1s", "250ms").
fn secs(v: &toml::Value) -> f64 {
    let s = v.as_str().expect("duration string");
    match s.strip_suffix("ms") {
        Some(ms) => ms.parse::<f64>().expect("ms") / 1000.0,
        None => s.strip_suffix('s').expect("unit").parse().expect("s"),
    }
}

#[test]
fn shipped_configs_see_an_app_drain_within_its_grace_and_fail_over() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    for dir in ["local", "vagrant"] {
        let read = |file: &str| -> toml::Value {
            let text = std::fs::read_to_string(format!("{root}/configs/{dir}/{file}")).unwrap();
            toml::from_str(&text).unwrap()
        };
        let lb = read("lb.toml");
        let backend = &lb["backend"][0];
        let check = &backend["check"];
        let fall = check["fall"].as_integer().unwrap() as f64;
        // Worst case from the drain's start to marked down: the next check
        // (within an interval), then fall - 1 more at fastinter.
        let seen = secs(&check["interval"]) + (fall - 1.0) * secs(&check["fastinter"]);
        for app in ["app1.toml", "app2.toml"] {
            let grace = secs(&read(app)["drain"]["grace"]);
            assert!(seen < grace, "{dir}: drain seen after {seen}s, grace {grace}s");
        }
        // A draining app (or one over its capacity threshold) answers 503
        // and keeps its WebSockets: the lb must not cut them, only those
        // of an app that stopped answering.
        assert_eq!(
            backend["on_marked_down"].as_str(),
            Some("shutdown-unreachable"),
            "{dir}"
        );
        assert_eq!(backend["on_error"].as_str(), Some("mark-down"), "{dir}");
        let retry_on: Vec<&str> = backend["retry_on"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        assert!(
            retry_on.contains(&"503") && retry_on.contains(&"conn-failure"),
            "{dir}: {retry_on:?}"
        );
    }
}
