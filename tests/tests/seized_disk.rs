//! A seized disk reveals nothing of what the node's user did (issue 17,
//! `docs/store.md` "Sealed at rest").
//!
//! A node inserts and fetches a CHK document, an SSK document and a site
//! (forever-persistent requests with their uploads and results, pushes of
//! inserts made without peers, the client cache), with and without a
//! passphrase, and is stopped. Then every file in its data directory (and
//! every file name) is searched for:
//! - any 64-byte window of the documents;
//! - every URI, and every key in it, as the URI writes it (Freenet's
//!   base64), in hex (both cases) and as raw bytes; the same for the
//!   routing key of every block of the CHK document (re-encoded here with
//!   the same client library: convergent keys, same URI);
//! - the file names, identifiers and document names used;
//! - the node's own secrets (link key, store secret, vault key), which
//!   would let anyone with the disk recompute the store's index.
//!
//! None may be found. With a passphrase, the node then refuses to start
//! without it (or with a wrong one) and changes nothing, and with it lists
//! every persistent request and its result again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use lichen_crypto::b64;
use lichen_fcp::Message;
use lichen_tests::{free_port, random_bytes, Fcp, NodeProc};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_lichen-it"))
}

const PASS: &str = "a passphrase only the owner knows";
const CHK_NAME: &str = "seized-secret-name.bin";
const SSK_NAME: &str = "seized-ssk-document";
const SITE_NAME: &str = "seized-site-name";
const PAGE_NAME: &str = "seized-secret-page.html";

/// What the search looks for.
#[derive(Default)]
struct Needles {
    /// Byte strings (at least 8 bytes), with what they are.
    strings: Vec<(Vec<u8>, String)>,
    /// Documents: any 64-byte window is a hit.
    docs: Vec<(Vec<u8>, String)>,
}

impl Needles {
    fn text(&mut self, s: &str, what: &str) {
        assert!(s.len() >= 8, "needle too short: {s}");
        self.strings.push((s.as_bytes().to_vec(), what.to_string()));
    }

    /// A 32-byte key in every encoding.
    fn key(&mut self, k: &[u8], what: &str) {
        self.strings.push((k.to_vec(), format!("{what} (raw)")));
        let hex: String = k.iter().map(|b| format!("{b:02x}")).collect();
        self.text(&hex, &format!("{what} (hex)"));
        self.text(&hex.to_uppercase(), &format!("{what} (HEX)"));
        self.text(&b64::encode(k), &format!("{what} (base64)"));
    }

    /// A URI and every key in it.
    fn uri(&mut self, uri: &str, what: &str) {
        self.text(uri, what);
        let after = uri.split_once('@').map_or(uri, |(_, a)| a);
        for part in after.split(['/', ',']) {
            if let Some(k) = b64::decode(part).filter(|k| k.len() == 32) {
                self.key(&k, &format!("key of {what}"));
            }
        }
    }

    /// Every hit in `data`: 8-byte prefixes indexed once, then confirmed.
    fn hits(&self, data: &[u8]) -> Vec<String> {
        let mut index: HashMap<[u8; 8], Vec<(usize, usize)>> = HashMap::new();
        for (i, (s, _)) in self.strings.iter().enumerate() {
            index
                .entry(s[..8].try_into().unwrap())
                .or_default()
                .push((i, usize::MAX));
        }
        for (d, (doc, _)) in self.docs.iter().enumerate() {
            for at in 0..=doc.len() - 64 {
                index
                    .entry(doc[at..at + 8].try_into().unwrap())
                    .or_default()
                    .push((d, at));
            }
        }
        let mut found = Vec::new();
        for pos in 0..data.len().saturating_sub(7) {
            let Some(cands) = index.get(&data[pos..pos + 8]) else {
                continue;
            };
            for &(i, at) in cands {
                let (needle, what) = if at == usize::MAX {
                    let (s, w) = &self.strings[i];
                    (&s[..], w)
                } else {
                    let (d, w) = &self.docs[i];
                    (&d[at..at + 64], w)
                };
                if data[pos..].starts_with(needle) {
                    found.push(format!("{what} at offset {pos}"));
                }
            }
            if found.len() > 20 {
                break;
            }
        }
        found
    }
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if e.file_type().unwrap().is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// Search the whole data directory; panics with every hit.
fn search(data: &Path, needles: &Needles) {
    // The search itself finds what it looks for.
    let (doc, _) = &needles.docs[0];
    let mut plant = vec![0u8; 100];
    plant.extend_from_slice(&doc[1000..1064]);
    assert_eq!(needles.hits(&plant).len(), 1);
    for (s, what) in &needles.strings {
        let mut plant = b"xxxx".to_vec();
        plant.extend_from_slice(s);
        assert!(
            !needles.hits(&plant).is_empty(),
            "{what} not found in a plant"
        );
    }
    let mut files = Vec::new();
    files_under(data, &mut files);
    assert!(files.len() > 5, "nothing on disk? {files:?}");
    let mut bad = Vec::new();
    let mut bytes = 0usize;
    for f in &files {
        let name = f.strip_prefix(data).unwrap().to_string_lossy().into_owned();
        for h in needles.hits(name.as_bytes()) {
            bad.push(format!("file name {name}: {h}"));
        }
        let content = std::fs::read(f).unwrap();
        bytes += content.len();
        for h in needles.hits(&content) {
            bad.push(format!("{name}: {h}"));
        }
    }
    assert!(
        bytes > 200_000,
        "the data directory holds only {bytes} bytes"
    );
    assert!(bad.is_empty(), "found on disk:\n{}", bad.join("\n"));
}

/// The routing keys of every block of `data` inserted as a CHK under
/// `name`, and the URI they make (must be the node's).
fn chk_blocks(data: &[u8], name: &str) -> (String, Vec<[u8; 32]>) {
    let mem = lichen_client::MemoryBlocks::new();
    let opts = lichen_client::InsertOptions {
        filename: Some(name.to_string()),
        jitter: std::time::Duration::ZERO,
        ..lichen_client::InsertOptions::default()
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let r = rt
        .block_on(lichen_client::insert(&mem, data, &opts))
        .unwrap();
    let keys = mem.keys().into_iter().map(|(_, k)| k.0).collect();
    (r.uri.to_string(), keys)
}

fn get_forever(c: &mut Fcp, uri: &str, id: &str) -> Vec<u8> {
    c.send(
        &Message::new("ClientGet")
            .field("URI", uri)
            .field("Identifier", id)
            .field("Persistence", "forever")
            .field("Global", "true")
            .field("ReturnType", "direct"),
    );
    let (m, _) = c.until(&["AllData", "GetFailed"]);
    assert_eq!(m.name, "AllData", "{id}: {m:?}");
    m.data.unwrap_or_default()
}

fn put_site(node: &NodeProc, site: &Path, key: &str) -> String {
    let out = Command::new(bin())
        .arg("putsite")
        .arg("--fcp")
        .arg(node.fcp.to_string())
        .arg(site)
        .args(["--key", key])
        .output()
        .expect("run lichen putsite");
    assert!(
        out.status.success(),
        "putsite: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Use the node as a user would, then stop it; what to search for.
#[allow(clippy::too_many_lines)]
fn use_node(node: &mut NodeProc, scratch: &Path) -> Needles {
    let mut n = Needles::default();
    let mut c = Fcp::connect(node.fcp, "seized-disk-client");
    c.send(&Message::new("WatchGlobal").field("Enabled", "true"));

    // A CHK document (a splitfile of several blocks).
    let chk_doc = random_bytes(150_000, 17);
    let (done, _) = c.put_direct(
        "CHK@",
        "seized-put-chk",
        &chk_doc,
        &[
            ("Persistence", "forever"),
            ("Global", "true"),
            ("TargetFilename", CHK_NAME),
        ],
    );
    assert_eq!(done.name, "PutSuccessful", "{done:?}");
    let chk_uri = done.get("URI").unwrap().to_string();
    let (same, blocks) = chk_blocks(&chk_doc, CHK_NAME);
    assert_eq!(same, chk_uri, "the re-encoding must match the node's");
    assert!(blocks.len() > 5);
    for (i, k) in blocks.iter().enumerate() {
        n.key(k, &format!("routing key of CHK block {i}"));
    }
    n.uri(&chk_uri, "the CHK URI");

    // An SSK document.
    c.send(&Message::new("GenerateSSK").field("Identifier", "seized-gen"));
    let (kp, _) = c.until(&["SSKKeypair"]);
    let ins = kp.get("InsertURI").unwrap().to_string();
    let req = kp.get("RequestURI").unwrap().to_string();
    n.uri(&ins, "the SSK insert URI");
    n.uri(&req, "the SSK request URI");
    let ssk_doc = random_bytes(40_000, 18);
    let (done, _) = c.put_direct(
        &format!("{ins}{SSK_NAME}"),
        "seized-put-ssk",
        &ssk_doc,
        &[("Persistence", "forever"), ("Global", "true")],
    );
    assert_eq!(done.name, "PutSuccessful", "{done:?}");
    let ssk_uri = done.get("URI").unwrap().to_string();
    n.uri(&ssk_uri, "the SSK document URI");

    // A site under a USK (the CLI uploads it with ClientPutComplexDir).
    c.send(&Message::new("GenerateSSK").field("Identifier", "seized-gen2"));
    let (kp, _) = c.until(&["SSKKeypair"]);
    let site_ins = kp.get("InsertURI").unwrap().to_string();
    n.uri(&site_ins, "the site's insert URI");
    n.uri(kp.get("RequestURI").unwrap(), "the site's request URI");
    let site = scratch.join("site");
    std::fs::create_dir_all(&site).unwrap();
    let page = random_bytes(30_000, 19);
    let index = format!("<html><body><a href=\"{PAGE_NAME}\">the page</a></body></html>");
    std::fs::write(site.join("index.html"), &index).unwrap();
    std::fs::write(site.join(PAGE_NAME), &page).unwrap();
    let usk_ins = site_ins.replacen("SSK@", "USK@", 1);
    let site_uri = put_site(node, &site, &format!("{usk_ins}{SITE_NAME}/0"));
    n.uri(&site_uri, "the site URI");

    // Fetch everything back, persistently (results kept on disk).
    assert_eq!(get_forever(&mut c, &chk_uri, "seized-get-chk"), chk_doc);
    assert_eq!(get_forever(&mut c, &ssk_uri, "seized-get-ssk"), ssk_doc);
    let page_uri = format!("{}/{PAGE_NAME}", site_uri.trim_end_matches('/'));
    assert_eq!(get_forever(&mut c, &page_uri, "seized-get-page"), page);
    n.uri(&page_uri, "the page URI");
    drop(c);

    for (name, what) in [
        (CHK_NAME, "the CHK file name"),
        (SSK_NAME, "the SSK document name"),
        (SITE_NAME, "the site name"),
        (PAGE_NAME, "the page's file name"),
        ("seized-put-chk", "an identifier"),
        ("seized-get-page", "an identifier"),
        ("seized-disk-client", "the client name"),
    ] {
        n.text(name, what);
    }
    n.docs
        .push((chk_doc, "a window of the CHK document".into()));
    n.docs
        .push((ssk_doc, "a window of the SSK document".into()));
    n.docs.push((page, "a window of the site's page".into()));
    assert!(node.terminate(), "the node did not stop on SIGTERM");
    n
}

fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    files_under(dir, &mut files);
    files.sort();
    files
        .into_iter()
        .map(|f| {
            let b = std::fs::read(&f).unwrap();
            (f, b)
        })
        .collect()
}

/// `lichen node` on `data`; its exit status and output if it stops by
/// itself within 20 s.
fn start_expecting_refusal(data: &Path, env: &[(&str, &str)]) -> String {
    let out = Command::new(bin())
        .args(["node", "--data-dir"])
        .arg(data)
        .args(["--fcp-port", &free_port().to_string()])
        .args(["--gateway-port", &free_port().to_string()])
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .env_remove("LICHEN_PASSPHRASE")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "the node started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn seized(passphrase: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    let env: Vec<(&str, &str)> = passphrase
        .map(|p| ("LICHEN_PASSPHRASE", p))
        .into_iter()
        .collect();
    let mut node = NodeProc::start_with_env(bin(), &data, free_port(), free_port(), None, &env);
    let mut needles = use_node(&mut node, dir.path());
    let pass = passphrase.and_then(|p| lichen_node::vault::Passphrase::new(p.to_string()));
    let secrets = lichen_node::identity::secrets_for_tests(&data, pass.as_ref()).unwrap();
    for (s, what) in secrets
        .iter()
        .zip(["link key", "store secret", "vault key"])
    {
        needles.key(s, &format!("the node's {what}"));
    }
    search(&data, &needles);

    let Some(p) = passphrase else { return };
    // Without the passphrase, or with a wrong one: a clear refusal, and
    // not one byte of the data directory changes.
    let before = snapshot(&data);
    let err = start_expecting_refusal(&data, &[]);
    assert!(err.contains("sealed under a passphrase"), "{err}");
    let err = start_expecting_refusal(&data, &[("LICHEN_PASSPHRASE", "wrong")]);
    assert!(err.contains("wrong passphrase"), "{err}");
    assert!(
        snapshot(&data) == before,
        "a refused start changed the disk"
    );

    // With it: the persistent requests and their results are back.
    let node = NodeProc::start_with_env(
        bin(),
        &data,
        free_port(),
        free_port(),
        None,
        &[("LICHEN_PASSPHRASE", p)],
    );
    let mut c = Fcp::connect(node.fcp, "seized-disk-client");
    c.send(&Message::new("WatchGlobal").field("Enabled", "true"));
    c.send(&Message::new("ListPersistentRequests"));
    let (_, listed) = c.until(&["EndListPersistentRequests"]);
    for id in [
        "seized-put-chk",
        "seized-put-ssk",
        "seized-get-chk",
        "seized-get-page",
    ] {
        assert!(
            listed.iter().any(|m| m.get("Identifier") == Some(id)),
            "{id} not listed after the restart"
        );
    }
    c.send(
        &Message::new("GetRequestStatus")
            .field("Identifier", "seized-get-ssk")
            .field("Global", "true"),
    );
    let (m, _) = c.until(&["AllData"]);
    assert_eq!(
        m.data.unwrap(),
        needles.docs[1].0,
        "the result survived, sealed"
    );
}

#[test]
fn a_seized_disk_reveals_nothing_without_a_passphrase() {
    seized(None);
}

#[test]
fn a_seized_disk_reveals_nothing_with_a_passphrase_and_needs_it_to_start() {
    seized(Some(PASS));
}

fn ds_only_get(c: &mut Fcp, uri: &str, id: &str) -> String {
    c.send(
        &Message::new("ClientGet")
            .field("URI", uri)
            .field("Identifier", id)
            .field("DSOnly", "true")
            .field("ReturnType", "none"),
    );
    c.until(&["DataFound", "GetFailed"]).0.name
}

fn wipe(data: &Path) -> std::process::Output {
    Command::new(bin())
        .args(["wipe", "--data-dir"])
        .arg(data)
        .env_remove("LICHEN_PASSPHRASE")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

/// `lichen wipe` empties the client cache and removes every persistent
/// request (and refuses while the node runs).
#[test]
fn wipe_removes_the_client_cache_and_every_request() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    let mut node = NodeProc::start(bin(), &data);
    let mut c = Fcp::connect(node.fcp, "wipe-test");
    c.send(&Message::new("WatchGlobal").field("Enabled", "true"));
    let doc = random_bytes(100_000, 21);
    let (done, _) = c.put_direct(
        "CHK@",
        "wipe-put",
        &doc,
        &[("Persistence", "forever"), ("Global", "true")],
    );
    assert_eq!(done.name, "PutSuccessful", "{done:?}");
    let uri = done.get("URI").unwrap().to_string();
    assert_eq!(get_forever(&mut c, &uri, "wipe-get"), doc);
    assert_eq!(ds_only_get(&mut c, &uri, "wipe-ds-1"), "DataFound");
    drop(c);

    let running = wipe(&data);
    assert!(!running.status.success(), "wipe ran beside a running node");
    assert!(node.terminate());
    let out = wipe(&data);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("2 persistent request(s)"), "{text}");
    assert!(!text.contains(" 0 block(s)"), "{text}");

    let node = NodeProc::start(bin(), &data);
    let mut c = Fcp::connect(node.fcp, "wipe-test");
    c.send(&Message::new("WatchGlobal").field("Enabled", "true"));
    c.send(&Message::new("ListPersistentRequests"));
    let (_, listed) = c.until(&["EndListPersistentRequests"]);
    assert!(
        !listed.iter().any(|m| m.get("Identifier").is_some()),
        "{listed:?}"
    );
    assert_eq!(ds_only_get(&mut c, &uri, "wipe-ds-2"), "GetFailed");
}
