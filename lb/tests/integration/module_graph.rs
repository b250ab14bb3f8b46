//! Dependencies inside the lb point one way: listeners → connection context →
//! proxy and tunnels → upstream. This reads `lb/src` as text, builds the graph
//! of which module uses which (`use crate::…`, `crate::…` paths, `super::…`),
//! and fails on any cycle, naming it. Test modules at the bottom of a file are
//! left out: a test may reach anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path (`upstream::server`) → the source text that belongs to it.
fn modules(src: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("lb/src is readable") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("source is readable");
                out.insert(module_name(src, &path), without_test_module(&text));
            }
        }
    }
    out
}

fn module_name(src: &Path, file: &Path) -> String {
    let rel: PathBuf = file.strip_prefix(src).expect("below src").with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
        parts.pop();
    }
    parts.join("::")
}

/// The text before a trailing `#[cfg(test)] mod tests` (or a `mod tests;` file).
fn without_test_module(text: &str) -> String {
    match text.find("#[cfg(test)]\nmod ") {
        Some(at) => text[..at].to_string(),
        None => text.to_string(),
    }
}

/// The modules that `name`'s text refers to, resolved against the known set.
fn uses(name: &str, text: &str, known: &BTreeSet<String>) -> BTreeSet<String> {
    let parent = name.rsplit_once("::").map_or("", |(p, _)| p);
    let mut found = BTreeSet::new();
    for (prefix, base) in [("crate::", ""), ("super::", parent)] {
        for (at, _) in text.match_indices(prefix) {
            let path: String = text[at + prefix.len()..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            // The longest known module the path starts with, else the base
            // module itself (an item defined there).
            let mut target = base.to_string();
            let mut candidate = base.to_string();
            for seg in path.split("::").filter(|s| !s.is_empty()) {
                candidate = if candidate.is_empty() {
                    seg.to_string()
                } else {
                    format!("{candidate}::{seg}")
                };
                if known.contains(&candidate) {
                    target = candidate.clone();
                } else {
                    break;
                }
            }
            if target != name && !name.starts_with(&format!("{target}::")) || target.is_empty() {
                found.insert(target);
            }
        }
    }
    found.remove("");
    found.remove(name);
    found
}

fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(pos) = path.iter().position(|n| n == node) {
            let mut cycle = path[pos..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

#[test]
fn lb_modules_import_each_other_in_one_direction_only() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let sources = modules(&src);
    let known: BTreeSet<String> = sources.keys().cloned().collect();
    assert!(
        known.contains("listener") && known.contains("tunnel"),
        "{known:?}"
    );
    let graph: BTreeMap<String, BTreeSet<String>> = sources
        .iter()
        .map(|(name, text)| (name.clone(), uses(name, text, &known)))
        .collect();
    let edges: usize = graph.values().map(BTreeSet::len).sum();
    assert!(edges > 30, "the graph was not read: {graph:?}");
    assert_eq!(find_cycle(&graph), None, "import cycle in lb/src");
}

#[test]
fn a_cycle_is_found() {
    let known: BTreeSet<String> = ["a", "b", "c"].map(String::from).into();
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", "use crate::b::X;"),
        ("b", "fn f() { crate::c::g() }"),
        ("c", "use crate::a;"),
    ]
    .into_iter()
    .map(|(n, t)| (n.to_string(), uses(n, t, &known)))
    .collect();
    assert_eq!(
        find_cycle(&graph),
        Some(["a", "b", "c", "a"].map(String::from).to_vec())
    );
}
