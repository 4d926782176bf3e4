//! `lichen putsite`: a folder inserted as a freesite.

use super::conn::{FcpOpts, Node};
use super::progress::Progress;
use super::put::finish_put;
use super::reply::new_identifier;
use super::term::{note, with_std_term, Term};
use anyhow::{bail, Context, Result};
use lichen_client::folder;
use lichen_fcp::Message;
use std::fs::File;
use std::path::PathBuf;

/// `lichen putsite`.
#[derive(clap::Args, Debug)]
pub struct PutsiteArgs {
    /// Directory holding the site (hidden files and symbolic links are
    /// skipped)
    pub dir: PathBuf,
    /// Insert URI of the site (SSK@…/name or USK@…/name/N)
    #[arg(long)]
    pub key: String,
    /// Default document of the site
    #[arg(long, default_value = "index.html")]
    pub default: String,
}

/// Inserts a directory as a freesite and prints its URI.
///
/// # Errors
/// The directory cannot be read, the node cannot be reached, or the insert
/// fails.
pub fn putsite(fcp: &FcpOpts, a: &PutsiteArgs) -> Result<()> {
    with_std_term(|t| putsite_with(fcp, a, t))
}

fn putsite_with(fcp: &FcpOpts, a: &PutsiteArgs, t: &mut Term<'_>) -> Result<()> {
    let files = folder::scan(&a.dir, false)?;
    if files.is_empty() {
        bail!("{} holds no files to insert", a.dir.display());
    }
    let mut c = Node::connect(&fcp.fcp)?;
    let id = new_identifier("putsite");
    let mut msg = Message::new("ClientPutComplexDir")
        .field("URI", &a.key)
        .field("Identifier", &id)
        .field("Verbosity", "1")
        .field("DefaultName", &a.default);
    let mut total: u64 = 0;
    for (i, f) in files.iter().enumerate() {
        msg = msg
            .field(format!("Files.{i}.Name"), &f.name)
            .field(format!("Files.{i}.UploadFrom"), "direct")
            .field(format!("Files.{i}.DataLength"), f.len.to_string());
        if let Some(mime) = f.mime {
            msg = msg.field(format!("Files.{i}.Metadata.ContentType"), mime);
        }
        total = total.saturating_add(f.len);
    }
    let mut bar = Progress::new(t.progress);
    if !files.iter().any(|f| f.name == a.default) {
        note(
            t,
            &bar,
            &format!(
                "{} has no {}: the site will have no default document",
                a.dir.display(),
                a.default
            ),
        );
    }
    bar.bytes("uploading", total);
    c.send_header(&msg, total)?;
    for f in &files {
        let mut file =
            File::open(&f.path).with_context(|| format!("cannot open {}", f.path.display()))?;
        c.send_file(&mut file, f.len, &f.path, &bar)?;
    }
    finish_put(&mut c, &id, bar, t, false)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::cli::test_support::*;
    use std::fs;

    #[test]
    fn putsite_sends_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::write(root.join("index.html"), b"<h1>hi</h1>").unwrap();
        fs::write(root.join("style.css"), b"h1{}").unwrap();
        fs::write(root.join(".hidden"), b"secret").unwrap();
        fs::create_dir(root.join(".git")).unwrap();
        fs::write(root.join(".git/config"), b"secret").unwrap();
        fs::create_dir(root.join("img")).unwrap();
        let png = pseudo_random(1_500_000, 9);
        fs::write(root.join("img/Logo.PNG"), &png).unwrap();
        fs::write(root.join("data.bin"), b"").unwrap();
        let mut expected = Vec::new();
        expected.extend_from_slice(b"");
        expected.extend_from_slice(&png);
        expected.extend_from_slice(b"<h1>hi</h1>");
        expected.extend_from_slice(b"h1{}");
        let (fcp, h) = fake_node(move |c| {
            let p = c.expect("ClientPutComplexDir");
            assert_eq!(p.get("URI"), Some("USK@priv/site/0"));
            assert_eq!(p.get("DefaultName"), Some("index.html"));
            assert_eq!(p.get("Verbosity"), Some("1"));
            let files = [
                ("data.bin", "0", "application/octet-stream"),
                ("img/Logo.PNG", "1500000", "image/png"),
                ("index.html", "11", "text/html"),
                ("style.css", "4", "text/css"),
            ];
            for (i, (name, len, mime)) in files.iter().enumerate() {
                assert_eq!(p.get(&format!("Files.{i}.Name")), Some(*name));
                assert_eq!(p.get(&format!("Files.{i}.UploadFrom")), Some("direct"));
                assert_eq!(p.get(&format!("Files.{i}.DataLength")), Some(*len));
                assert_eq!(
                    p.get(&format!("Files.{i}.Metadata.ContentType")),
                    Some(*mime)
                );
            }
            assert_eq!(p.get("Files.4.Name"), None);
            assert!(p.data.as_deref() == Some(&expected[..]), "payload differs");
            let id = p.get("Identifier").unwrap().to_string();
            c.send(&msg(
                "URIGenerated",
                &[("URI", "USK@pub/site/0"), ("Identifier", &id)],
            ));
            c.send(&msg(
                "PutSuccessful",
                &[("Identifier", &id), ("URI", "USK@pub/site/0")],
            ));
        });
        let args = PutsiteArgs {
            dir: root.to_path_buf(),
            key: "USK@priv/site/0".into(),
            default: "index.html".into(),
        };
        let c = run(false, |t| putsite_with(&fcp, &args, t));
        h.join().unwrap();
        c.result.unwrap();
        assert_eq!(String::from_utf8(c.out).unwrap(), "USK@pub/site/0\n");
        assert_eq!(c.err, "");
    }

    #[test]
    fn putsite_of_an_empty_directory_fails() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(".only-hidden"), b"x").unwrap();
        let fcp = FcpOpts {
            fcp: "127.0.0.1:1".into(),
        };
        let args = PutsiteArgs {
            dir: dir.path().to_path_buf(),
            key: "SSK@x/site".into(),
            default: "index.html".into(),
        };
        let c = run(false, |t| putsite_with(&fcp, &args, t));
        assert!(c.result.unwrap_err().to_string().contains("holds no files"));
    }
}
