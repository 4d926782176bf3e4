//! One site folder, two ways in: `lichen putsite` (the CLI uploads the
//! files with ClientPutComplexDir) and FCP `ClientPutDiskDir` (the node
//! reads the folder itself). Both scan the folder and guess MIME types with
//! `lichen_client::folder`, so they must build the same manifest: inserted
//! under `CHK@` (convergent keys) the two sites have the same URI, and
//! every file reads back with the same type from both.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use lichen_fcp::Message;
use lichen_tests::{Fcp, NodeProc};
use std::path::Path;
use std::process::Command;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_lichen-it"))
}

/// A folder with the cases where the two scans used to differ: a type only
/// `mime_guess` knows (the CLI's table said `application/octet-stream`),
/// a file with no extension, a hidden file and folder, and a symbolic link
/// to a file outside (the CLI followed it).
fn make_site(root: &Path, outside: &Path) {
    let w = |name: &str, data: &[u8]| {
        let p = root.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    };
    w(
        "index.html",
        b"<html><body><h1>one folder</h1></body></html>",
    );
    w("style.css", b"h1 { color: green }");
    w("app.js", b"console.log('hi');");
    w("README", b"no extension");
    w("video/clip.mp4", &[0x42; 5000]);
    w("img/Logo.PNG", &[0x89; 40_000]);
    w("sub/page.htm", b"<p>sub</p>");
    w(".hidden", b"secret");
    w(".git/config", b"secret");
    std::fs::write(outside.join("secret.txt"), b"outside").unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(outside.join("secret.txt"), root.join("link.txt")).unwrap();
}

/// `lichen putsite DIR --key CHK@`: the URI it prints.
fn putsite_cli(node: &NodeProc, dir: &Path) -> String {
    let out = Command::new(bin())
        .arg("putsite")
        .arg("--fcp")
        .arg(node.fcp.to_string())
        .arg(dir)
        .args(["--key", "CHK@"])
        .output()
        .expect("run lichen putsite");
    assert!(
        out.status.success(),
        "putsite failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// FCP `ClientPutDiskDir` of `dir` under `CHK@`, after TestDDA allows
/// reading it: the URI of the site.
fn putsite_disk_dir(node: &NodeProc, dir: &Path) -> String {
    let mut c = Fcp::connect(node.fcp, "site-folder");
    // TestDDA: the node names a file it wrote; reading it back proves we
    // may read the folder. The file is written next to the folder.
    let probe = dir.parent().unwrap();
    c.send(
        &Message::new("TestDDARequest")
            .field("Directory", probe.to_str().unwrap())
            .field("WantReadDirectory", "true"),
    );
    let (reply, _) = c.until(&["TestDDAReply"]);
    let content = std::fs::read_to_string(reply.get("ReadFilename").unwrap()).unwrap();
    c.send(
        &Message::new("TestDDAResponse")
            .field("Directory", probe.to_str().unwrap())
            .field("ReadContent", content),
    );
    let (done, _) = c.until(&["TestDDAComplete"]);
    assert_eq!(done.get("ReadDirectoryAllowed"), Some("true"), "{done:?}");
    c.send(
        &Message::new("ClientPutDiskDir")
            .field("Identifier", "disk-dir")
            .field("URI", "CHK@")
            .field("Filename", dir.to_str().unwrap())
            .field("DefaultName", "index.html"),
    );
    let (m, _) = c.until(&["PutSuccessful", "PutFailed", "ProtocolError"]);
    assert_eq!(m.name, "PutSuccessful", "{m:?}");
    m.get("URI").unwrap().to_string()
}

/// `ClientGet` of `uri`: the content type and data, or the failure code.
fn get(c: &mut Fcp, uri: &str) -> Result<(String, Vec<u8>), String> {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let id = format!(
        "get-{}",
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    c.send(
        &Message::new("ClientGet")
            .field("Identifier", id)
            .field("URI", uri)
            .field("ReturnType", "direct")
            .field("MaxRetries", "0"),
    );
    let (m, _) = c.until(&[
        "AllData",
        "GetFailed",
        "ProtocolError",
        "IdentifierCollision",
    ]);
    assert!(m.name == "AllData" || m.name == "GetFailed", "{m:?}");
    if m.name == "GetFailed" {
        return Err(m.get("Code").unwrap_or("?").to_string());
    }
    Ok((
        m.get("Metadata.ContentType").unwrap_or("").to_string(),
        m.data.unwrap_or_default(),
    ))
}

#[test]
fn putsite_and_client_put_disk_dir_make_the_same_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let site = tmp.path().join("site");
    make_site(&site, outside.path());
    let node = NodeProc::start(bin(), &tmp.path().join("node"));

    let by_cli = putsite_cli(&node, &site);
    let by_fcp = putsite_disk_dir(&node, &site);
    assert!(by_cli.starts_with("CHK@"), "{by_cli}");

    let mut c = Fcp::connect(node.fcp, "site-folder-read");
    let files = [
        ("index.html", Some("text/html")),
        ("style.css", Some("text/css")),
        ("app.js", Some("text/javascript")),
        ("README", None),
        ("video/clip.mp4", Some("video/mp4")),
        ("img/Logo.PNG", Some("image/png")),
        ("sub/page.htm", Some("text/html")),
    ];
    for (name, mime) in files {
        let a = get(&mut c, &format!("{by_cli}/{name}")).expect(name);
        let b = get(&mut c, &format!("{by_fcp}/{name}")).expect(name);
        assert_eq!(a, b, "{name} differs between the two sites");
        assert_eq!(a.1, std::fs::read(site.join(name)).unwrap(), "{name}");
        if let Some(mime) = mime {
            assert_eq!(a.0, mime, "{name}");
        }
    }
    for skipped in [".hidden", ".git/config", "link.txt"] {
        assert!(
            get(&mut c, &format!("{by_cli}/{skipped}")).is_err(),
            "{skipped}"
        );
        assert!(
            get(&mut c, &format!("{by_fcp}/{skipped}")).is_err(),
            "{skipped}"
        );
    }
    assert_eq!(by_cli, by_fcp, "the two manifests differ");
}
