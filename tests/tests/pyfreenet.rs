//! Interop with pyFreenet3 (from PyPI, installed by the script into a
//! temporary venv): key generation, CHK/KSK/SSK round trips up to 20 MB,
//! GetCHKOnly, a clean failure for a missing key, and freesitemgr creating
//! and updating a USK site.
#![allow(clippy::unwrap_used)]

use lichen_tests::NodeProc;
use std::process::Command;

#[test]
fn pyfreenet3_against_a_lichen_node() {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_lichen-it"));
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProc::start(bin, &dir.path().join("n"));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/interop/pyfreenet.sh");
    let out = Command::new("bash")
        .arg(script)
        .arg("127.0.0.1")
        .arg(node.fcp.port().to_string())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    assert!(
        out.status.success(),
        "pyFreenet3 interop failed:\n{text}\n{}\nnode log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        node.log_text()
    );
    assert!(text.contains("ok    CHK 20 MB"), "{text}");
    assert!(
        text.contains("ok    freesitemgr updates the site"),
        "{text}"
    );
}
