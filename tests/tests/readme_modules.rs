//! Each crate's README lists its modules (the README is the crate doc),
//! and `tests/README.md` lists every test file: this keeps both in sync
//! with the code.

use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives in the workspace")
        .to_path_buf()
}

/// The modules `mod NAME;` / `pub mod NAME;` declared at the top of a
/// crate root (not inline `mod NAME { … }`, not `#[cfg(test)]` ones).
fn declared_modules(lib: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(lib).expect("crate root readable");
    let mut out = Vec::new();
    let mut test_only = false;
    for line in text.lines() {
        let l = line.trim();
        if l.starts_with("#[cfg(test)]") {
            test_only = true;
            continue;
        }
        let decl = l
            .strip_prefix("pub mod ")
            .or_else(|| l.strip_prefix("pub(crate) mod "))
            .or_else(|| l.strip_prefix("mod "));
        if let Some(rest) = decl.and_then(|r| r.strip_suffix(';')) {
            if !test_only {
                out.push(rest.trim().to_string());
            }
        }
        if !l.starts_with("#[") {
            test_only = false;
        }
    }
    out
}

fn crates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(workspace()).expect("workspace readable") {
        let dir = e.expect("entry").path();
        if dir.join("Cargo.toml").is_file()
            && dir.join("src/lib.rs").is_file()
            && dir.join("README.md").is_file()
        {
            out.push(dir);
        }
    }
    out.sort();
    out
}

#[test]
fn every_crate_readme_lists_every_module() {
    let mut missing = Vec::new();
    let crates = crates();
    assert!(crates.len() >= 8, "found only {crates:?}");
    for dir in crates {
        let readme = std::fs::read_to_string(dir.join("README.md")).expect("README readable");
        for m in declared_modules(&dir.join("src/lib.rs")) {
            if !readme.contains(&format!("`{m}`")) {
                missing.push(format!("{}: {m}", dir.display()));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "modules missing from their crate README:\n{}",
        missing.join("\n")
    );
}

#[test]
fn the_tests_readme_lists_every_test_file() {
    let dir = workspace().join("tests");
    let readme = std::fs::read_to_string(dir.join("README.md")).expect("README readable");
    let mut missing = Vec::new();
    for e in std::fs::read_dir(dir.join("tests")).expect("tests/tests readable") {
        let p = e.expect("entry").path();
        if p.extension().is_some_and(|x| x == "rs") {
            let name = format!(
                "tests/{}",
                p.file_name().and_then(|n| n.to_str()).unwrap_or_default()
            );
            if !readme.contains(&name) {
                missing.push(name);
            }
        }
    }
    missing.sort();
    assert!(
        missing.is_empty(),
        "test files missing from tests/README.md:\n{}",
        missing.join("\n")
    );
}

#[test]
fn the_parser_sees_declarations_and_skips_test_modules() {
    let dir = std::env::temp_dir().join(format!("lichen-readme-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let lib = dir.join("lib.rs");
    std::fs::write(
        &lib,
        "pub mod a;\nmod b;\npub(crate) mod c;\n#[cfg(test)]\nmod tests;\nmod inline {}\n",
    )
    .expect("write");
    assert_eq!(declared_modules(&lib), ["a", "b", "c"]);
    let _ = std::fs::remove_dir_all(&dir);
}
