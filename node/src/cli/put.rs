//! `lichen put`: one file or stdin, streamed to the node.

use super::conn::{FcpOpts, Node};
use super::progress::Progress;
use super::reply::{check_refusal, insert_error, new_identifier};
use super::term::{note, print_line, with_std_term, Term};
use anyhow::{anyhow, bail, Context, Result};
use lichen_fcp::{parse_bool, Message};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::PathBuf;

/// `lichen put`.
#[derive(clap::Args, Debug)]
pub struct PutArgs {
    /// File to insert, or `-` for stdin
    pub file: String,
    /// Insert URI (SSK@…, KSK@…, USK@…); default CHK@
    #[arg(long)]
    pub key: Option<String>,
    /// MIME type stored in the metadata
    #[arg(long)]
    pub mime: Option<String>,
    /// Do not compress the data
    #[arg(long)]
    pub no_compress: bool,
    /// Only compute and print the CHK; insert nothing
    #[arg(long)]
    pub chk_only: bool,
}

/// Inserts a file (or stdin) and prints its URI.
///
/// # Errors
/// The node cannot be reached, the file cannot be read, or the insert fails.
pub fn put(fcp: &FcpOpts, a: &PutArgs) -> Result<()> {
    with_std_term(|t| put_with(fcp, a, t, &mut io::stdin().lock()))
}

/// A temporary file removed when dropped.
struct TempFile {
    path: PathBuf,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Copies stdin to a private temporary file to learn its length.
fn spool(stdin: &mut dyn Read) -> Result<(File, u64, TempFile)> {
    let path = std::env::temp_dir().join(format!(
        "lichen-put-{}-{}.tmp",
        std::process::id(),
        new_identifier("spool")
    ));
    let mut opts = OpenOptions::new();
    opts.read(true).write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut file = opts
        .open(&path)
        .with_context(|| format!("cannot create a temporary file {}", path.display()))?;
    let guard = TempFile { path };
    let len = io::copy(stdin, &mut file).with_context(|| {
        format!(
            "cannot copy stdin to the temporary file {}",
            guard.path.display()
        )
    })?;
    file.seek(SeekFrom::Start(0))
        .context("cannot rewind the temporary file")?;
    Ok((file, len, guard))
}

/// Reads the replies to a put until PutSuccessful; returns `(URI, in
/// network)`.
fn wait_put(c: &mut Node, id: &str, bar: &mut Progress) -> Result<(String, bool)> {
    let mut generated: Option<String> = None;
    loop {
        let m = c.next_message()?;
        check_refusal(&m, id)?;
        if m.get("Identifier") != Some(id) {
            continue;
        }
        match m.name.as_str() {
            "URIGenerated" => generated = m.get("URI").map(str::to_string),
            "SimpleProgress" => bar.blocks("inserting", &m),
            "PutSuccessful" => {
                let uri = m
                    .get("URI")
                    .map(str::to_string)
                    .or(generated)
                    .ok_or_else(|| anyhow!("the node reported success but sent no URI"))?;
                let in_network = parse_bool(m.get("Lichen.InNetwork"), true);
                return Ok((uri, in_network));
            }
            "PutFailed" => return Err(insert_error(&m)),
            _ => {}
        }
    }
}

const LOCAL_ONLY_NOTE: &str =
    "stored locally; the node has no peers yet, it will push the insert to the network when it has peers";

fn put_with(fcp: &FcpOpts, a: &PutArgs, t: &mut Term<'_>, stdin: &mut dyn Read) -> Result<()> {
    let from_file = if a.file == "-" {
        None
    } else {
        let path = PathBuf::from(&a.file);
        let file = File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
        let meta = file
            .metadata()
            .with_context(|| format!("cannot read {}", path.display()))?;
        if meta.is_dir() {
            bail!(
                "{} is a directory (use `lichen putsite` for a site)",
                path.display()
            );
        }
        Some((file, meta.len(), path))
    };
    let mut c = Node::connect(&fcp.fcp)?;
    let (mut file, len, path, _guard) = match from_file {
        Some((f, len, path)) => (f, len, path, None),
        None => {
            let (f, len, guard) = spool(stdin)?;
            (f, len, PathBuf::from("stdin"), Some(guard))
        }
    };
    let id = new_identifier("put");
    let mut msg = Message::new("ClientPut")
        .field("URI", a.key.as_deref().unwrap_or("CHK@"))
        .field("Identifier", &id)
        .field("Verbosity", "1")
        .field("UploadFrom", "direct");
    if let Some(mime) = &a.mime {
        msg = msg.field("Metadata.ContentType", mime);
    }
    if a.no_compress {
        msg = msg.field("DontCompress", "true");
    }
    if a.chk_only {
        msg = msg.field("GetCHKOnly", "true");
    }
    let mut bar = Progress::new(t.progress);
    bar.bytes("uploading", len);
    c.send_header(&msg, len)?;
    c.send_file(&mut file, len, &path, &bar)?;
    finish_put(&mut c, &id, bar, t, a.chk_only)
}

/// Waits for the put `id` to end and prints its URI, with a note when the
/// node could only store it locally (never for `chk_only`, which stores
/// nothing).
pub(super) fn finish_put(
    c: &mut Node,
    id: &str,
    mut bar: Progress,
    t: &mut Term<'_>,
    chk_only: bool,
) -> Result<()> {
    let result = wait_put(c, id, &mut bar);
    bar.clear();
    let (uri, in_network) = result?;
    print_line(t, &uri)?;
    if !in_network && !chk_only {
        note(t, &bar, LOCAL_ONLY_NOTE);
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::cli::test_support::*;
    use std::io::Cursor;

    #[test]
    fn put_file_sends_clientput_and_prints_uri() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hello.txt");
        fs::write(&path, b"hello world").unwrap();
        let (fcp, h) = fake_node(|c| {
            let p = c.expect("ClientPut");
            assert_eq!(p.get("URI"), Some("CHK@"));
            assert_eq!(p.get("UploadFrom"), Some("direct"));
            assert_eq!(p.get("Verbosity"), Some("1"));
            assert_eq!(p.get("DataLength"), Some("11"));
            assert_eq!(p.get("Metadata.ContentType"), Some("text/plain"));
            assert_eq!(p.get("DontCompress"), Some("true"));
            assert_eq!(p.get("GetCHKOnly"), None);
            assert_eq!(p.get("TargetFilename"), None);
            assert_eq!(p.data.as_deref(), Some(&b"hello world"[..]));
            let id = p.get("Identifier").unwrap().to_string();
            assert!(id.starts_with("lichen-cli-"));
            c.send(&msg(
                "URIGenerated",
                &[("URI", "CHK@abc,def,AAMC--8/"), ("Identifier", &id)],
            ));
            // Another request's messages are ignored.
            c.send(&msg(
                "PutFailed",
                &[("Identifier", "someone-else"), ("Code", "9")],
            ));
            c.send(&msg(
                "SimpleProgress",
                &[
                    ("Identifier", &id),
                    ("Total", "1"),
                    ("Required", "1"),
                    ("Succeeded", "1"),
                ],
            ));
            c.send(&msg(
                "PutSuccessful",
                &[
                    ("Identifier", &id),
                    ("Global", "false"),
                    ("URI", "CHK@abc,def,AAMC--8/"),
                    ("Lichen.InNetwork", "false"),
                ],
            ));
        });
        let args = PutArgs {
            file: path.to_string_lossy().into_owned(),
            key: None,
            mime: Some("text/plain".into()),
            no_compress: true,
            chk_only: false,
        };
        let c = run(false, |t| put_with(&fcp, &args, t, &mut io::empty()));
        h.join().unwrap();
        c.result.unwrap();
        assert_eq!(String::from_utf8(c.out).unwrap(), "CHK@abc,def,AAMC--8/\n");
        assert!(c.err.contains(LOCAL_ONLY_NOTE), "{}", c.err);
    }

    #[test]
    fn put_stdin_streams_a_big_upload() {
        let data = pseudo_random(3 * 1024 * 1024 + 17, 7);
        let expected = data.clone();
        let (fcp, h) = fake_node(move |c| {
            let p = c.expect("ClientPut");
            assert_eq!(p.get("URI"), Some("KSK@big"));
            assert_eq!(p.get("GetCHKOnly"), Some("true"));
            assert_eq!(
                p.get("DataLength"),
                Some(expected.len().to_string().as_str())
            );
            assert!(p.data.as_deref() == Some(&expected[..]), "payload differs");
            let id = p.get("Identifier").unwrap().to_string();
            c.send(&msg(
                "URIGenerated",
                &[("URI", "CHK@gen/"), ("Identifier", &id)],
            ));
            c.send(&msg(
                "PutSuccessful",
                &[
                    ("Identifier", &id),
                    ("URI", "CHK@gen/"),
                    ("Lichen.InNetwork", "false"),
                ],
            ));
        });
        let args = PutArgs {
            file: "-".into(),
            key: Some("KSK@big".into()),
            mime: None,
            no_compress: false,
            chk_only: true,
        };
        let mut stdin = Cursor::new(data);
        let c = run(false, |t| put_with(&fcp, &args, t, &mut stdin));
        h.join().unwrap();
        c.result.unwrap();
        assert_eq!(String::from_utf8(c.out).unwrap(), "CHK@gen/\n");
        // GetCHKOnly inserts nothing: no "stored locally" note.
        assert_eq!(c.err, "");
    }

    #[test]
    fn spooled_stdin_is_deleted() {
        let mut stdin = Cursor::new(b"abc".to_vec());
        let (mut f, len, guard) = spool(&mut stdin).unwrap();
        let path = guard.path.clone();
        assert_eq!(len, 3);
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        assert_eq!(s, "abc");
        assert!(path.exists());
        drop(guard);
        assert!(!path.exists());
    }

    fn put_answered_with(reply: Message) -> anyhow::Error {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"x").unwrap();
        let (fcp, h) = fake_node(move |c| {
            let p = c.expect("ClientPut");
            let mut reply = reply;
            reply.fields.set("Identifier", p.get("Identifier").unwrap());
            c.send(&reply);
        });
        let args = PutArgs {
            file: path.to_string_lossy().into_owned(),
            key: Some("KSK@x".into()),
            mime: None,
            no_compress: false,
            chk_only: false,
        };
        let c = run(false, |t| put_with(&fcp, &args, t, &mut io::empty()));
        h.join().unwrap();
        assert!(c.out.is_empty());
        c.result.unwrap_err()
    }

    #[test]
    fn put_failed_names_the_code() {
        let e = put_answered_with(msg(
            "PutFailed",
            &[
                ("Identifier", "?"),
                ("Code", "9"),
                (
                    "CodeDescription",
                    "Insert collided with different, pre-existing data at the same key",
                ),
                ("ShortCodeDescription", "Collided with existing data"),
                ("Fatal", "true"),
            ],
        ));
        assert_eq!(
            e.to_string(),
            "insert failed: Collided with existing data (code 9)"
        );
    }

    #[test]
    fn protocol_error_names_the_code() {
        let e = put_answered_with(msg(
            "ProtocolError",
            &[
                ("Identifier", "?"),
                ("Code", "5"),
                ("CodeDescription", "Missing field"),
                ("ExtraDescription", "No URI"),
                ("Fatal", "false"),
            ],
        ));
        assert_eq!(
            e.to_string(),
            "node refused the request: Missing field (code 5): No URI"
        );
        let e = put_answered_with(msg("IdentifierCollision", &[("Identifier", "?")]));
        assert!(e
            .to_string()
            .starts_with("node refused the request: identifier"));
    }

    #[test]
    fn put_of_a_missing_file_fails_before_connecting() {
        let fcp = FcpOpts {
            fcp: "127.0.0.1:1".into(),
        };
        let args = PutArgs {
            file: "/nonexistent/lichen/file".into(),
            key: None,
            mime: None,
            no_compress: false,
            chk_only: false,
        };
        let c = run(false, |t| put_with(&fcp, &args, t, &mut io::empty()));
        assert!(c
            .result
            .unwrap_err()
            .to_string()
            .starts_with("cannot open /nonexistent/lichen/file"));
    }
}
