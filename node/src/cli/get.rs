//! `lichen get`: a fetch written to a file or stdout as it is decoded,
//! following redirects.

use super::conn::{FcpOpts, Node};
use super::progress::Progress;
use super::reply::{check_refusal, fetch_error, field_u64, new_identifier};
use super::term::{flush_out, with_std_term, write_out, Term};
use anyhow::{anyhow, bail, Context, Result};
use lichen_fcp::blocking::CHUNK;
use lichen_fcp::{Event, Message};
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// `lichen get`.
#[derive(clap::Args, Debug)]
pub struct GetArgs {
    /// URI to fetch
    pub uri: String,
    /// Write to this file instead of stdout
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Fail if the data is bigger than this many bytes
    #[arg(long)]
    pub max_size: Option<u64>,
    /// Don't keep the fetched blocks in the node's client cache (a second
    /// fetch, or a retry after a failure, then starts over)
    #[arg(long)]
    pub no_cache: bool,
}

/// How many redirects (`GetFailed` code 27) `get` follows.
const MAX_REDIRECTS: usize = 5;

/// Fetches a URI to a file or stdout.
///
/// # Errors
/// The node cannot be reached, the fetch fails, or the output cannot be
/// written (a closed stdout pipe is not an error).
pub fn get(fcp: &FcpOpts, a: &GetArgs) -> Result<()> {
    with_std_term(|t| get_with(fcp, a, t))
}

/// Where fetched data goes.
enum Sink<'a> {
    Stdout(&'a mut dyn Write),
    /// `-o FILE`: written to `part`, renamed to `path` when complete.
    File {
        path: PathBuf,
        part: PathBuf,
        file: Option<BufWriter<File>>,
    },
}

impl<'a> Sink<'a> {
    fn new(output: Option<&Path>, out: &'a mut dyn Write) -> Sink<'a> {
        match output {
            Some(p) if p != Path::new("-") => {
                let mut part = p.as_os_str().to_owned();
                part.push(".part");
                Sink::File {
                    path: p.to_path_buf(),
                    part: PathBuf::from(part),
                    file: None,
                }
            }
            _ => Sink::Stdout(out),
        }
    }

    /// Starts a fresh download (a redirect may have started one before).
    fn begin(&mut self) -> Result<()> {
        if let Sink::File { part, file, .. } = self {
            let f = File::create(&*part)
                .with_context(|| format!("cannot create {}", part.display()))?;
            *file = Some(BufWriter::with_capacity(CHUNK, f));
        }
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        match self {
            Sink::Stdout(out) => write_out(*out, bytes),
            Sink::File { part, file, .. } => {
                let Some(f) = file.as_mut() else {
                    bail!("internal error: data before the download started");
                };
                f.write_all(bytes)
                    .with_context(|| format!("cannot write {}", part.display()))
            }
        }
    }

    fn finish(&mut self) -> Result<()> {
        match self {
            Sink::Stdout(out) => flush_out(*out),
            Sink::File { path, part, file } => {
                let Some(f) = file.take() else {
                    bail!("internal error: no download to finish");
                };
                let f = f
                    .into_inner()
                    .map_err(|e| anyhow::Error::new(e.into_error()))
                    .with_context(|| format!("cannot write {}", part.display()))?;
                f.sync_all()
                    .with_context(|| format!("cannot write {}", part.display()))?;
                drop(f);
                fs::rename(&*part, &*path).with_context(|| {
                    format!("cannot rename {} to {}", part.display(), path.display())
                })
            }
        }
    }

    /// Removes a partial download after a failure.
    fn abandon(&mut self) {
        if let Sink::File { part, file, .. } = self {
            if file.take().is_some() {
                let _ = fs::remove_file(&*part);
            }
        }
    }
}

enum GetOutcome {
    Done,
    Redirect(String),
}

fn get_with(fcp: &FcpOpts, a: &GetArgs, t: &mut Term<'_>) -> Result<()> {
    let mut c = Node::connect(&fcp.fcp)?;
    let mut bar = Progress::new(t.progress);
    let mut uri = a.uri.clone();
    let mut redirects = 0;
    let out: &mut dyn Write = &mut *t.out;
    let mut sink = Sink::new(a.output.as_deref(), out);
    let result = loop {
        let id = new_identifier("get");
        let mut msg = Message::new("ClientGet")
            .field("URI", &uri)
            .field("Identifier", &id)
            .field("ReturnType", "chunked")
            .field("Verbosity", "1")
            .field("MaxRetries", "0");
        if let Some(max) = a.max_size {
            msg = msg.field("MaxSize", max.to_string());
        }
        if a.no_cache {
            msg = msg.field("WriteToClientCache", "false");
        }
        if let Err(e) = c.send(&msg) {
            break Err(e);
        }
        match receive_get(&mut c, &id, &mut bar, &mut sink) {
            Ok(GetOutcome::Done) => break Ok(()),
            Ok(GetOutcome::Redirect(next)) => {
                redirects += 1;
                if redirects > MAX_REDIRECTS {
                    break Err(anyhow!(
                        "fetch failed: more than {MAX_REDIRECTS} redirects (the last one to {next})"
                    ));
                }
                let err = &mut *t.err;
                bar.bar.suspend(|| {
                    let _ = writeln!(err, "lichen: {uri} has moved to {next}; fetching that");
                });
                uri = next;
            }
            Err(e) => break Err(e),
        }
    };
    bar.clear();
    if result.is_err() {
        sink.abandon();
    }
    result
}

/// Reads the replies to one `ReturnType=chunked` ClientGet, writing the
/// data to `sink`: it comes in `DataChunk`s as the node decodes it, and
/// `DataFound` ends it.
fn receive_get(
    c: &mut Node,
    id: &str,
    bar: &mut Progress,
    sink: &mut Sink<'_>,
) -> Result<GetOutcome> {
    // Bytes of `DataChunk`s written so far.
    let mut received: u64 = 0;
    loop {
        let (m, streamed) = match c.next_event()? {
            Event::Message(m) => (m, None),
            Event::Header {
                message,
                data_length,
            } => (message, Some(data_length)),
            Event::Data(_) | Event::DataEnd => continue,
        };
        check_refusal(&m, id)?;
        if m.get("Identifier") != Some(id) {
            if streamed.is_some() {
                c.skip_payload()?;
            }
            continue;
        }
        match m.name.as_str() {
            // Once data comes the bar counts bytes: it arrives as the fetch
            // decodes it, so it shows the fetch's progress too.
            "SimpleProgress" if received == 0 => bar.blocks("fetching", &m),
            "DataChunk" => {
                if field_u64(&m, "Offset") != Some(received) {
                    bail!(
                        "garbled reply from the node: a DataChunk at offset {} after {received} bytes",
                        m.get("Offset").unwrap_or("(none)")
                    );
                }
                if received == 0 {
                    sink.begin()?;
                    if let Some(total) = field_u64(&m, "TotalLength") {
                        bar.bytes("downloading", total);
                    }
                }
                received += receive_data(c, &m, streamed, bar, sink)?;
            }
            "DataFound" => {
                if field_u64(&m, "DataLength") != Some(received) {
                    bail!(
                        "the node found {} bytes but sent {received} (is it older than ReturnType=chunked?)",
                        m.get("DataLength").unwrap_or("(none)")
                    );
                }
                if received == 0 {
                    sink.begin()?;
                }
                sink.finish()?;
                return Ok(GetOutcome::Done);
            }
            "GetFailed" => {
                if streamed.is_some() {
                    c.skip_payload()?;
                }
                if m.get("Code").map(str::trim) == Some("27") {
                    if let Some(next) = m.get("RedirectURI").filter(|u| !u.is_empty()) {
                        return Ok(GetOutcome::Redirect(next.to_string()));
                    }
                }
                return Err(fetch_error(&m));
            }
            _ => {
                if streamed.is_some() {
                    c.skip_payload()?;
                }
            }
        }
    }
}

/// Writes the data of the `DataChunk` `m` to `sink`: streamed after its
/// header, or already attached. Returns the bytes written.
fn receive_data(
    c: &mut Node,
    m: &Message,
    streamed: Option<u64>,
    bar: &mut Progress,
    sink: &mut Sink<'_>,
) -> Result<u64> {
    let Some(len) = streamed else {
        let data = m.data.as_deref().unwrap_or_default();
        sink.write(data)?;
        bar.inc(data.len() as u64);
        return Ok(data.len() as u64);
    };
    loop {
        match c.next_event()? {
            Event::Data(chunk) => {
                sink.write(&chunk)?;
                bar.inc(chunk.len() as u64);
            }
            Event::DataEnd => return Ok(len),
            Event::Message(_) | Event::Header { .. } => {
                bail!("garbled reply from the node: a message inside a DataChunk")
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::cli::progress::Mode;
    use crate::cli::term::quiet_pipe;
    use crate::cli::test_support::*;
    use std::io;

    #[test]
    fn get_to_stdout() {
        let (fcp, h) = fake_node(|c| {
            let g = c.expect("ClientGet");
            assert_eq!(g.get("URI"), Some("KSK@hello"));
            assert_eq!(g.get("ReturnType"), Some("chunked"));
            assert_eq!(g.get("Verbosity"), Some("1"));
            assert_eq!(g.get("MaxRetries"), Some("0"));
            assert_eq!(g.get("MaxSize"), Some("1000"));
            assert_eq!(g.get("WriteToClientCache"), None);
            let id = g.get("Identifier").unwrap().to_string();
            c.send(&msg(
                "SimpleProgress",
                &[
                    ("Identifier", &id),
                    ("Total", "4"),
                    ("Required", "2"),
                    ("Succeeded", "1"),
                ],
            ));
            let mut pieces = chunks(&id, b"hello", 3).into_iter();
            c.send(&pieces.next().unwrap());
            // Data of another request is skipped.
            for m in chunks("other", &pseudo_random(2 << 20, 3), 1 << 20) {
                c.send(&m);
            }
            c.send(&pieces.next().unwrap());
            c.send(&data_found(&id, 5));
        });
        let args = GetArgs {
            uri: "KSK@hello".into(),
            output: None,
            max_size: Some(1000),
            no_cache: false,
        };
        let c = run(false, |t| get_with(&fcp, &args, t));
        h.join().unwrap();
        c.result.unwrap();
        assert_eq!(c.out, b"hello");
        assert_eq!(c.err, "");
    }

    #[test]
    fn get_big_file_streams_to_output_file() {
        let data = pseudo_random(5 * 1024 * 1024 + 3, 11);
        let sent = data.clone();
        let (fcp, h) = fake_node(move |c| {
            let g = c.expect("ClientGet");
            // --no-cache
            assert_eq!(g.get("WriteToClientCache"), Some("false"));
            let id = g.get("Identifier").unwrap().to_string();
            for m in chunks(&id, &sent, 1 << 20) {
                c.send(&m);
            }
            c.send(&data_found(&id, sent.len()));
        });
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("big.bin");
        let args = GetArgs {
            uri: "CHK@big".into(),
            output: Some(out.clone()),
            max_size: None,
            no_cache: true,
        };
        let c = run(false, |t| get_with(&fcp, &args, t));
        h.join().unwrap();
        c.result.unwrap();
        assert!(c.out.is_empty());
        assert!(fs::read(&out).unwrap() == data, "file differs");
        assert!(!dir.path().join("big.bin.part").exists());
    }

    #[test]
    fn get_follows_a_permanent_redirect() {
        let (fcp, h) = fake_node(|c| {
            let g = c.expect("ClientGet");
            assert_eq!(g.get("URI"), Some("USK@k/site/1"));
            let id = g.get("Identifier").unwrap().to_string();
            c.send(&msg(
                "GetFailed",
                &[
                    ("Code", "27"),
                    ("ShortCodeDescription", "New URI"),
                    ("Identifier", &id),
                    ("Fatal", "true"),
                    ("RedirectURI", "USK@k/site/4"),
                ],
            ));
            let g2 = c.expect("ClientGet");
            assert_eq!(g2.get("URI"), Some("USK@k/site/4"));
            assert_eq!(g2.get("ReturnType"), Some("chunked"));
            let id2 = g2.get("Identifier").unwrap().to_string();
            assert_ne!(id, id2);
            c.send(&chunks(&id2, b"edition 4", 100)[0]);
            c.send(&data_found(&id2, 9));
        });
        let args = GetArgs {
            uri: "USK@k/site/1".into(),
            output: None,
            max_size: None,
            no_cache: false,
        };
        let c = run(false, |t| get_with(&fcp, &args, t));
        h.join().unwrap();
        c.result.unwrap();
        assert_eq!(c.out, b"edition 4");
        assert!(
            c.err.contains("USK@k/site/1 has moved to USK@k/site/4"),
            "{}",
            c.err
        );
    }

    #[test]
    fn get_gives_up_after_five_redirects() {
        let (fcp, h) = fake_node(|c| {
            for i in 0..=MAX_REDIRECTS {
                let g = c.expect("ClientGet");
                let id = g.get("Identifier").unwrap().to_string();
                let next = format!("USK@k/site/{}", i + 2);
                c.send(&msg(
                    "GetFailed",
                    &[("Code", "27"), ("Identifier", &id), ("RedirectURI", &next)],
                ));
            }
            c.wait_close();
        });
        let args = GetArgs {
            uri: "USK@k/site/1".into(),
            output: None,
            max_size: None,
            no_cache: false,
        };
        let c = run(false, |t| get_with(&fcp, &args, t));
        let e = c.result.unwrap_err().to_string();
        h.join().unwrap();
        assert!(e.starts_with("fetch failed: more than 5 redirects"), "{e}");
    }

    /// A fetch that fails after some of its data came: the error, and the
    /// partial file is gone.
    #[test]
    fn get_failure_after_chunks_leaves_no_file() {
        let (fcp, h) = fake_node(|c| {
            let g = c.expect("ClientGet");
            let id = g.get("Identifier").unwrap().to_string();
            for m in chunks(&id, &pseudo_random(3 << 20, 5), 1 << 20)
                .into_iter()
                .take(2)
            {
                c.send(&m);
            }
            c.send(&msg(
                "GetFailed",
                &[
                    ("Code", "28"),
                    ("CodeDescription", "All data not found"),
                    ("Identifier", &id),
                ],
            ));
        });
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("half.bin");
        let args = GetArgs {
            uri: "CHK@half".into(),
            output: Some(out.clone()),
            max_size: None,
            no_cache: false,
        };
        let c = run(false, |t| get_with(&fcp, &args, t));
        h.join().unwrap();
        let e = c.result.unwrap_err().to_string();
        assert!(
            e.starts_with("fetch failed: Not enough data found (code 28)"),
            "{e}"
        );
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    /// Block progress until the first data, then bytes: a `SimpleProgress`
    /// between two pieces does not turn the bar back into a block count.
    #[test]
    fn get_progress_counts_bytes_once_data_comes() {
        let (fcp, h) = fake_node(|c| {
            let g = c.expect("ClientGet");
            let id = g.get("Identifier").unwrap().to_string();
            let progress = msg(
                "SimpleProgress",
                &[
                    ("Identifier", &id),
                    ("Total", "9"),
                    ("Required", "6"),
                    ("Succeeded", "2"),
                ],
            );
            c.send(&progress);
            let mut pieces = chunks(&id, &[7; 3000], 1000).into_iter();
            c.send(&pieces.next().unwrap());
            c.send(&progress);
            for p in pieces {
                c.send(&p);
            }
            c.send(&data_found(&id, 3000));
        });
        let mut c = Node::connect(&fcp.fcp).unwrap();
        c.send(
            &Message::new("ClientGet")
                .field("Identifier", "g")
                .field("URI", "CHK@x"),
        )
        .unwrap();
        // The fake node answers the identifier it was sent.
        let mut bar = Progress::new(false);
        let mut out = Vec::new();
        let mut sink = Sink::new(None, &mut out);
        let done = receive_get(&mut c, "g", &mut bar, &mut sink).unwrap();
        h.join().unwrap();
        assert!(matches!(done, GetOutcome::Done));
        assert_eq!(bar.mode, Mode::Bytes);
        assert_eq!(bar.bar.position(), 3000);
        assert_eq!(bar.bar.length(), Some(3000));
        assert_eq!(out, vec![7; 3000]);
    }

    /// Chunks out of order, or a `DataFound` whose length is not what came
    /// (a node that does not know `ReturnType=chunked`), are errors, not
    /// a wrong file.
    #[test]
    fn get_refuses_gaps_and_short_data() {
        type Replies = fn(&str) -> Vec<Message>;
        let cases: [(&str, Replies); 3] = [
            (
                "garbled reply from the node: a DataChunk at offset 4 after 0 bytes",
                |id| vec![chunks(id, b"abcdefgh", 4).remove(1)],
            ),
            ("the node found 8 bytes but sent 4", |id| {
                vec![chunks(id, b"abcdefgh", 4).remove(0), data_found(id, 8)]
            }),
            ("the node found 5 bytes but sent 0", |id| {
                vec![data_found(id, 5)]
            }),
        ];
        for (want, replies) in cases {
            let (fcp, h) = fake_node(move |c| {
                let g = c.expect("ClientGet");
                let id = g.get("Identifier").unwrap().to_string();
                for m in replies(&id) {
                    c.send(&m);
                }
                c.wait_close();
            });
            let dir = tempfile::tempdir().unwrap();
            let args = GetArgs {
                uri: "CHK@x".into(),
                output: Some(dir.path().join("x.bin")),
                max_size: None,
                no_cache: false,
            };
            let c = run(false, |t| get_with(&fcp, &args, t));
            let e = c.result.unwrap_err().to_string();
            h.join().unwrap();
            assert!(e.starts_with(want), "{e}");
            assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
        }
    }

    #[test]
    fn get_failure_names_the_code_and_leaves_no_file() {
        let (fcp, h) = fake_node(|c| {
            let g = c.expect("ClientGet");
            let id = g.get("Identifier").unwrap().to_string();
            c.send(&msg(
                "GetFailed",
                &[
                    ("Code", "13"),
                    ("CodeDescription", "Data not found"),
                    ("ExtraDescription", "not in the store"),
                    ("Fatal", "false"),
                    ("ShortCodeDescription", "Data not found"),
                    ("Identifier", &id),
                ],
            ));
        });
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("missing.bin");
        let args = GetArgs {
            uri: "CHK@nothing".into(),
            output: Some(out.clone()),
            max_size: None,
            no_cache: false,
        };
        let c = run(false, |t| get_with(&fcp, &args, t));
        h.join().unwrap();
        assert_eq!(
            c.result.unwrap_err().to_string(),
            "fetch failed: Data not found (code 13): not in the store"
        );
        assert!(!out.exists());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn broken_pipe_on_stdout_is_not_an_error() {
        struct ClosedPipe;
        impl Write for ClosedPipe {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let (fcp, h) = fake_node(|c| {
            let g = c.expect("ClientGet");
            let id = g.get("Identifier").unwrap().to_string();
            // The client stops reading; ignore write errors.
            for m in chunks(&id, &pseudo_random(2 << 20, 5), 1 << 20) {
                let _ = c.try_send(&m);
            }
        });
        let args = GetArgs {
            uri: "CHK@x".into(),
            output: None,
            max_size: None,
            no_cache: false,
        };
        let mut out = ClosedPipe;
        let mut err = Vec::new();
        let mut t = Term {
            out: &mut out,
            err: &mut err,
            out_tty: false,
            progress: false,
        };
        quiet_pipe(get_with(&fcp, &args, &mut t)).unwrap();
        h.join().unwrap();
        assert!(err.is_empty());
    }
}
