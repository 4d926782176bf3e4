//! The import rules of this crate, checked on its source (issue 14):
//!
//! - imports only go down the layers listed in [`LAYERS`] (or stay in
//!   one layer);
//! - no cycle between modules (files), inside a layer or a directory
//!   module either: a module split into submodules keeps its helpers
//!   below and its users above.
//!
//! A module's imports are the `crate::`, `super::`, `self::` and child
//! paths in its code (comments and its `#[cfg(test)]` module left out: a
//! test may build a whole node).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, top to bottom, and their top-level modules (`""`: the
/// crate root, `lib.rs`).
const LAYERS: &[(&str, &[&str])] = &[
    ("command line", &["app", "cli", "testnet"]),
    ("runtime", &[""]),
    ("front ends", &["fcp", "gateway", "peers"]),
    ("jobs", &["jobs"]),
    ("operations", &["ops"]),
    (
        "context",
        &[
            "node", "requests", "pushes", "config", "settings", "identity", "status",
        ],
    ),
    ("utilities", &["util", "files", "sealed", "vault"]),
];

/// Known exceptions, each with its reason: none. (The context layer
/// knows the network only through its own traits, `node::Network` and
/// `node::Peers`, which the peer driver implements.)
const ALLOWED: &[(&str, &str)] = &[];

type Module = Vec<String>;

/// Every module of the crate (one per file), by path.
fn modules(src: &Path) -> BTreeMap<Module, PathBuf> {
    fn walk(dir: &Path, prefix: &Module, out: &mut BTreeMap<Module, PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if p.is_dir() {
                let mut m = prefix.clone();
                m.push(name);
                walk(&p, &m, out);
            } else if let Some(stem) = name.strip_suffix(".rs") {
                let mut m = prefix.clone();
                match stem {
                    "mod" => {}
                    "lib" if prefix.is_empty() => {}
                    "main" if prefix.is_empty() => continue, // the binary
                    "layers" if prefix.is_empty() => continue, // this test
                    s => m.push(s.to_string()),
                }
                out.insert(m, p);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(src, &Vec::new(), &mut out);
    out
}

/// The code of a file: comments and the test module removed.
fn code(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with("#[cfg(test)]") {
            break;
        }
        if t.starts_with("//") {
            continue;
        }
        let line = line.split(" //").next().unwrap_or("");
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Expand one `use` tree (`a::{b, c::d}`) into its paths.
fn expand(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        return vec![tree.split(" as ").next().unwrap_or(tree).trim().to_string()];
    };
    let prefix = &tree[..open];
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .filter(|p| !p.trim().is_empty())
        .flat_map(expand)
        .map(|p| {
            if p == "self" {
                prefix.trim_end_matches("::").to_string()
            } else {
                format!("{prefix}{p}")
            }
        })
        .collect()
}

/// The paths a module's code names: its `use` trees expanded, and every
/// other `a::b` path.
fn paths(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = code;
    let mut plain = String::new();
    // `use` statements (possibly over several lines).
    while let Some(i) = rest.find("use ") {
        let before = &rest[..i];
        let boundary = before
            .chars()
            .last()
            .is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
        plain.push_str(before);
        let after = &rest[i + 4..];
        match (boundary, after.find(';')) {
            (true, Some(end)) => {
                out.extend(expand(&after[..end]));
                rest = &after[end + 1..];
            }
            _ => {
                plain.push_str("use ");
                rest = after;
            }
        }
    }
    plain.push_str(rest);
    // Other paths: runs of `ident::ident...`.
    let bytes = plain.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut i = 0;
    while i < bytes.len() {
        if ident(bytes[i]) && (i == 0 || !(ident(bytes[i - 1]) || bytes[i - 1] == b':')) {
            let start = i;
            while i < bytes.len() && (ident(bytes[i]) || bytes[i] == b':') {
                i += 1;
            }
            let p = &plain[start..i];
            if p.contains("::") {
                out.push(p.trim_end_matches(':').to_string());
            }
        } else {
            i += 1;
        }
    }
    out.into_iter()
        .map(|p| p.split("::").map(|s| s.trim().to_string()).collect())
        .collect()
}

/// The module a path names from module `from` (the longest known prefix),
/// if it is a module of this crate.
fn resolve(from: &Module, path: &[String], known: &BTreeMap<Module, PathBuf>) -> Option<Module> {
    let here: Module = from.clone();
    let parent: Module = from[..from.len().saturating_sub(1)].to_vec();
    let (mut base, rest) = match path.first().map(String::as_str) {
        Some("crate") => (Vec::new(), &path[1..]),
        Some("super") => (parent, &path[1..]),
        Some("self") => (here, &path[1..]),
        Some(first) => {
            let mut child = here.clone();
            child.push(first.to_string());
            if known.contains_key(&child) {
                (here, path)
            } else {
                return None;
            }
        }
        None => return None,
    };
    let mut found = known.contains_key(&base).then(|| base.clone());
    for seg in rest {
        base.push(seg.clone());
        if known.contains_key(&base) {
            found = Some(base.clone());
        } else {
            break;
        }
    }
    found
}

/// The import graph: module → modules it names (itself left out).
fn graph() -> BTreeMap<Module, BTreeSet<Module>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let known = modules(&src);
    let mut g = BTreeMap::new();
    for (m, file) in &known {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let mut to = BTreeSet::new();
        for p in paths(&code(&text)) {
            if let Some(t) = resolve(m, &p, &known) {
                if &t != m {
                    to.insert(t);
                }
            }
        }
        g.insert(m.clone(), to);
    }
    g
}

fn layer_of(m: &Module) -> Option<usize> {
    let top = m.first().map_or("", String::as_str);
    LAYERS.iter().position(|(_, ms)| ms.contains(&top))
}

fn allowed(a: &Module, b: &Module) -> bool {
    let (ta, tb) = (
        a.first().map_or("", String::as_str),
        b.first().map_or("", String::as_str),
    );
    ALLOWED.contains(&(ta, tb))
}

#[test]
fn every_module_has_a_layer() {
    for m in graph().keys() {
        assert!(
            layer_of(m).is_some(),
            "module {} is in no layer: add it to LAYERS in layers.rs",
            m.join("::")
        );
    }
}

/// The upward imports of a graph, one line each.
fn upward(g: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<String> {
    let mut bad = Vec::new();
    for (a, tos) in g {
        for b in tos {
            if let (Some(la), Some(lb)) = (layer_of(a), layer_of(b)) {
                if lb < la && !allowed(a, b) {
                    bad.push(format!(
                        "{} ({}) imports {} ({})",
                        a.join("::"),
                        LAYERS[la].0,
                        b.join("::"),
                        LAYERS[lb].0
                    ));
                }
            }
        }
    }
    bad
}

#[test]
fn imports_only_go_down() {
    let bad = upward(&graph());
    assert!(bad.is_empty(), "upward imports:\n{}", bad.join("\n"));
}

#[test]
fn an_upward_import_is_caught() {
    let m = |s: &str| -> Module { s.split("::").map(str::to_string).collect() };
    let g: BTreeMap<Module, BTreeSet<Module>> = [
        (m("ops::put"), [m("fcp::hub"), m("node")].into()),
        (m("fcp::conn"), [m("ops")].into()),
    ]
    .into();
    assert_eq!(
        upward(&g),
        vec!["ops::put (operations) imports fcp::hub (front ends)".to_string()]
    );
}

#[test]
fn no_import_cycle() {
    let g = graph();
    // Depth-first search for a back edge; allowed exceptions left out.
    fn visit(
        m: &Module,
        g: &BTreeMap<Module, BTreeSet<Module>>,
        state: &mut BTreeMap<Module, u8>,
        stack: &mut Vec<Module>,
    ) -> Option<Vec<Module>> {
        state.insert(m.clone(), 1);
        stack.push(m.clone());
        for n in g.get(m).into_iter().flatten() {
            if allowed(m, n) {
                continue;
            }
            match state.get(n).copied().unwrap_or(0) {
                1 => {
                    let at = stack.iter().position(|x| x == n).unwrap_or(0);
                    let mut cycle = stack[at..].to_vec();
                    cycle.push(n.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(n, g, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(m.clone(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for m in g.keys() {
        if state.get(m).copied().unwrap_or(0) == 0 {
            let mut stack = Vec::new();
            if let Some(c) = visit(m, &g, &mut state, &mut stack) {
                let names: Vec<String> = c.iter().map(|m| format!("[{}]", m.join("::"))).collect();
                panic!("import cycle: {}", names.join(" -> "));
            }
        }
    }
}

#[test]
fn the_checker_sees_use_trees_and_paths() {
    let code =
        "use crate::{a::b, c::{self, d}};\nuse super::x as y;\nfn f() { crate::e::g(); h::i(); }\n";
    let p: Vec<String> = paths(code).iter().map(|p| p.join("::")).collect();
    for want in [
        "crate::a::b",
        "crate::c",
        "crate::c::d",
        "super::x",
        "crate::e::g",
        "h::i",
    ] {
        assert!(p.contains(&want.to_string()), "{want} not in {p:?}");
    }
}
