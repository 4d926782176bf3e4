//! The FCP client commands of the `lichen` binary: `put`, `get`, `genkey`,
//! `putsite`, `status` and `peers`.
//!
//! Each command opens one blocking TCP connection to the node's FCP port,
//! says `ClientHello`, sends its request and reads the replies with
//! [`lichen_fcp::Decoder`]. Uploads are streamed from disk after the message
//! header and downloads are written out chunk by chunk as they arrive, so no
//! command ever holds a whole file in memory. Progress bars (indicatif) go to
//! stderr and are hidden when stderr is not a terminal.

use anyhow::{anyhow, bail, Context, Result};
use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};
use lichen_fcp::{
    parse_bool, Decoder, Event, FetchErrorCode, InsertErrorCode, Limits, Message, ProtocolErrorCode,
};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, IsTerminal, Read, Seek, SeekFrom, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where the node's FCP port is.
#[derive(clap::Args, Debug, Clone)]
pub struct FcpOpts {
    /// FCP address of the node
    #[arg(
        long,
        env = "LICHEN_FCP",
        default_value = "127.0.0.1:9481",
        global = true
    )]
    pub fcp: String,
}

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

/// `lichen putsite`.
#[derive(clap::Args, Debug)]
pub struct PutsiteArgs {
    /// Directory holding the site (hidden files are skipped)
    pub dir: PathBuf,
    /// Insert URI of the site (SSK@…/name or USK@…/name/N)
    #[arg(long)]
    pub key: String,
    /// Default document of the site
    #[arg(long, default_value = "index.html")]
    pub default: String,
}

/// How many redirects (`GetFailed` code 27) `get` follows.
const MAX_REDIRECTS: usize = 5;
/// How long to wait for `NodeHello` before deciding the peer is no node.
const HELLO_TIMEOUT: Duration = Duration::from_secs(15);
/// Chunk size for uploads and socket reads.
const CHUNK: usize = 256 * 1024;

/// Inserts a file (or stdin) and prints its URI.
///
/// # Errors
/// The node cannot be reached, the file cannot be read, or the insert fails.
pub fn put(fcp: &FcpOpts, a: &PutArgs) -> Result<()> {
    with_std_term(|t| put_with(fcp, a, t, &mut io::stdin().lock()))
}

/// Fetches a URI to a file or stdout.
///
/// # Errors
/// The node cannot be reached, the fetch fails, or the output cannot be
/// written (a closed stdout pipe is not an error).
pub fn get(fcp: &FcpOpts, a: &GetArgs) -> Result<()> {
    with_std_term(|t| get_with(fcp, a, t))
}

/// Generates an SSK keypair and prints the insert URI, then the request URI.
///
/// # Errors
/// The node cannot be reached or refuses.
pub fn genkey(fcp: &FcpOpts) -> Result<()> {
    with_std_term(|t| genkey_with(fcp, t))
}

/// Inserts a directory as a freesite and prints its URI.
///
/// # Errors
/// The directory cannot be read, the node cannot be reached, or the insert
/// fails.
pub fn putsite(fcp: &FcpOpts, a: &PutsiteArgs) -> Result<()> {
    with_std_term(|t| putsite_with(fcp, a, t))
}

/// Prints the node's status and its persistent request queue.
///
/// # Errors
/// The node cannot be reached or refuses.
pub fn status(fcp: &FcpOpts) -> Result<()> {
    with_std_term(|t| status_with(fcp, t))
}

// ---------------------------------------------------------------------------
// Terminal plumbing

/// The command's outputs, injectable for tests.
struct Term<'a> {
    out: &'a mut dyn Write,
    err: &'a mut dyn Write,
    /// stdout is a terminal (genkey prints labels then).
    out_tty: bool,
    /// Draw progress bars (stderr is a terminal).
    progress: bool,
}

fn with_std_term(f: impl FnOnce(&mut Term<'_>) -> Result<()>) -> Result<()> {
    let stdout = io::stdout();
    let out_tty = stdout.is_terminal();
    let mut out = BufWriter::with_capacity(CHUNK, stdout.lock());
    let mut err = io::stderr();
    let progress = err.is_terminal();
    let mut t = Term {
        out: &mut out,
        err: &mut err,
        out_tty,
        progress,
    };
    let result = f(&mut t).and_then(|()| flush_out(t.out));
    quiet_pipe(result)
}

/// stdout was closed by the reader (`lichen get … | head`): stop quietly.
#[derive(Debug)]
struct StdoutClosed;

impl std::fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stdout was closed")
    }
}

impl std::error::Error for StdoutClosed {}

fn stdout_error(e: io::Error) -> anyhow::Error {
    if e.kind() == io::ErrorKind::BrokenPipe {
        anyhow::Error::new(StdoutClosed)
    } else {
        anyhow::Error::new(e).context("cannot write to stdout")
    }
}

fn write_out(out: &mut dyn Write, bytes: &[u8]) -> Result<()> {
    out.write_all(bytes).map_err(stdout_error)
}

fn flush_out(out: &mut dyn Write) -> Result<()> {
    out.flush().map_err(stdout_error)
}

fn quiet_pipe(r: Result<()>) -> Result<()> {
    match r {
        Err(e) if e.downcast_ref::<StdoutClosed>().is_some() => Ok(()),
        other => other,
    }
}

fn print_line(t: &mut Term<'_>, line: &str) -> Result<()> {
    write_out(t.out, line.as_bytes())?;
    write_out(t.out, b"\n")?;
    flush_out(t.out)
}

fn note(t: &mut Term<'_>, bar: &Progress, text: &str) {
    let err = &mut *t.err;
    bar.bar.suspend(|| {
        let _ = writeln!(err, "lichen: {text}");
    });
}

// ---------------------------------------------------------------------------
// Progress

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    None,
    Bytes,
    Blocks,
}

struct Progress {
    bar: ProgressBar,
    mode: Mode,
    visible: bool,
}

impl Progress {
    fn new(visible: bool) -> Self {
        Progress {
            bar: ProgressBar::hidden(),
            mode: Mode::None,
            visible,
        }
    }

    /// Replaces the bar by a fresh one for a new phase (a new bar never
    /// draws a frame mixing the old phase's numbers with the new style).
    fn phase(&mut self, mode: Mode, template: &str, message: &'static str, len: u64) {
        self.bar.finish_and_clear();
        let target = if self.visible {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let style = ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        self.bar = ProgressBar::with_draw_target(Some(len), target)
            .with_style(style)
            .with_message(message);
        self.bar.enable_steady_tick(Duration::from_millis(200));
        self.mode = mode;
    }

    /// A byte counter (upload to or download from the node).
    fn bytes(&mut self, message: &'static str, len: u64) {
        self.phase(
            Mode::Bytes,
            "{msg:12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            message,
            len,
        );
    }

    /// Block progress from a `SimpleProgress` message.
    fn blocks(&mut self, message: &'static str, m: &Message) {
        let (done, of) = block_counts(m);
        if self.mode != Mode::Blocks {
            self.phase(
                Mode::Blocks,
                "{msg:12} [{bar:30}] {pos}/{len} blocks {elapsed}",
                message,
                of,
            );
        }
        self.bar.set_length(of);
        self.bar.set_position(done.min(of));
    }

    fn inc(&self, n: u64) {
        self.bar.inc(n);
    }

    fn clear(&self) {
        self.bar.finish_and_clear();
    }
}

/// `(Succeeded, Required or Total)` of a `SimpleProgress`.
fn block_counts(m: &Message) -> (u64, u64) {
    let succeeded = field_u64(m, "Succeeded").unwrap_or(0);
    let required = field_u64(m, "Required")
        .filter(|&r| r > 0)
        .or_else(|| field_u64(m, "Total"))
        .unwrap_or(0);
    (succeeded, required)
}

// ---------------------------------------------------------------------------
// Messages and errors

fn field_u64(m: &Message, key: &str) -> Option<u64> {
    m.get(key).and_then(|v| v.trim().parse().ok())
}

/// `"<words> (code N)[: <extra>]"` for an error reply.
fn describe(m: &Message, words: impl Fn(u32) -> Option<&'static str>) -> String {
    let code = m.get("Code").and_then(|c| c.trim().parse::<u32>().ok());
    let table = code.and_then(&words);
    let text = table
        .map(str::to_string)
        .or_else(|| m.get("ShortCodeDescription").map(str::to_string))
        .or_else(|| m.get("CodeDescription").map(str::to_string))
        .unwrap_or_else(|| "unknown error".to_string());
    let mut s = match (code, m.get("Code")) {
        (Some(c), _) => format!("{text} (code {c})"),
        (None, Some(raw)) => format!("{text} (code {raw})"),
        (None, None) => text.clone(),
    };
    if let Some(extra) = m.get("ExtraDescription") {
        let extra = extra.trim();
        if !extra.is_empty() && extra != text {
            s.push_str(": ");
            s.push_str(extra);
        }
    }
    s
}

fn protocol_error(m: &Message) -> anyhow::Error {
    anyhow!(
        "node refused the request: {}",
        describe(m, |c| ProtocolErrorCode::from_code(c)
            .map(|e| e.short_description()))
    )
}

fn fetch_error(m: &Message) -> anyhow::Error {
    anyhow!(
        "fetch failed: {}",
        describe(m, |c| FetchErrorCode::from_code(c)
            .map(|e| e.short_description()))
    )
}

fn insert_error(m: &Message) -> anyhow::Error {
    let mut e = format!(
        "insert failed: {}",
        describe(m, |c| InsertErrorCode::from_code(c)
            .map(|e| e.short_description()))
    );
    if let Some(uri) = m.get("ExpectedURI").filter(|u| !u.is_empty()) {
        e.push_str(&format!(" (URI {uri})"));
    }
    anyhow!(e)
}

/// Whether `m` concerns request `id`. Replies without an identifier
/// (a ProtocolError about an unparsable message) concern everyone.
fn concerns(m: &Message, id: &str) -> bool {
    m.get("Identifier").is_none_or(|i| i == id)
}

/// Fails on the replies that end any request: ProtocolError,
/// IdentifierCollision.
fn check_refusal(m: &Message, id: &str) -> Result<()> {
    if !concerns(m, id) {
        return Ok(());
    }
    match m.name.as_str() {
        "ProtocolError" => Err(protocol_error(m)),
        "IdentifierCollision" => {
            bail!("node refused the request: identifier {id} is already in use")
        }
        _ => Ok(()),
    }
}

fn new_identifier(kind: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("lichen-cli-{}-{kind}-{nanos:x}-{n}", std::process::id())
}

// ---------------------------------------------------------------------------
// The FCP connection

struct Client {
    stream: TcpStream,
    decoder: Decoder,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    addr: String,
}

impl Client {
    /// Connects and exchanges ClientHello/NodeHello.
    fn connect(addr: &str) -> Result<Self> {
        let unreachable = |e: &dyn std::fmt::Display| {
            anyhow!("cannot reach the Lichen node at {addr} — is `lichen node` running? ({e})")
        };
        let targets: Vec<_> = addr
            .to_socket_addrs()
            .map_err(|e| unreachable(&e))?
            .collect();
        let mut last_err: Option<io::Error> = None;
        let mut stream = None;
        for target in targets {
            match TcpStream::connect_timeout(&target, Duration::from_secs(10)) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last_err = Some(e),
            }
        }
        let Some(stream) = stream else {
            return Err(match last_err {
                Some(e) => unreachable(&e),
                None => unreachable(&"the address resolves to nothing"),
            });
        };
        let _ = stream.set_nodelay(true);
        let mut c = Client {
            stream,
            decoder: Decoder::new(Limits::default()),
            rbuf: vec![0; CHUNK],
            wbuf: vec![0; CHUNK],
            addr: addr.to_string(),
        };
        let hello = Message::new("ClientHello")
            .field("Name", format!("lichen-cli-{}", std::process::id()))
            .field("ExpectedVersion", "2.0");
        c.send(&hello)?;
        c.stream
            .set_read_timeout(Some(HELLO_TIMEOUT))
            .context("cannot set a socket timeout")?;
        loop {
            let m = c.next_message().map_err(|e| {
                e.context(format!(
                    "no NodeHello from {addr} — is that the FCP port of a Lichen node?"
                ))
            })?;
            match m.name.as_str() {
                "NodeHello" => break,
                "ProtocolError" => return Err(protocol_error(&m)),
                _ => {}
            }
        }
        c.stream
            .set_read_timeout(None)
            .context("cannot set a socket timeout")?;
        Ok(c)
    }

    fn lost(&self) -> String {
        format!("lost the connection to the node at {}", self.addr)
    }

    /// Sends a message without payload.
    fn send(&mut self, m: &Message) -> Result<()> {
        let bytes = m.encode_header(None);
        self.send_raw(&bytes)
    }

    /// Sends a header announcing `len` payload bytes; the caller then sends
    /// exactly that many with [`Client::send_file`].
    fn send_header(&mut self, m: &Message, len: u64) -> Result<()> {
        let bytes = m.encode_header(Some(len));
        self.send_raw(&bytes)
    }

    fn send_raw(&mut self, bytes: &[u8]) -> Result<()> {
        match self.stream.write_all(bytes) {
            Ok(()) => Ok(()),
            Err(e) => Err(self.write_failed(e)),
        }
    }

    /// Sends exactly `len` bytes of `src` (a file being uploaded).
    fn send_file(
        &mut self,
        src: &mut dyn Read,
        len: u64,
        what: &Path,
        bar: &Progress,
    ) -> Result<()> {
        let mut left = len;
        while left > 0 {
            let want = left.min(self.wbuf.len() as u64) as usize;
            let n = match src.read(&mut self.wbuf[..want]) {
                Ok(0) => bail!("{} became shorter while it was being sent", what.display()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).with_context(|| format!("cannot read {}", what.display())),
            };
            if let Err(e) = self.stream.write_all(&self.wbuf[..n]) {
                return Err(self.write_failed(e));
            }
            left -= n as u64;
            bar.inc(n as u64);
        }
        Ok(())
    }

    /// A write failed: the node probably closed the connection after a
    /// fatal ProtocolError. Report that error if it can still be read.
    fn write_failed(&mut self, e: io::Error) -> anyhow::Error {
        let _ = self.stream.set_read_timeout(Some(Duration::from_secs(2)));
        for _ in 0..64 {
            match self.next_message() {
                Ok(m) if m.name == "ProtocolError" => return protocol_error(&m),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        anyhow::Error::new(e).context(self.lost())
    }

    /// The next decoded event, reading from the socket as needed.
    fn next_event(&mut self) -> Result<Event> {
        loop {
            match self.decoder.next_event() {
                Ok(Some(ev)) => return Ok(ev),
                Ok(None) => {}
                Err(e) => bail!("garbled reply from the node: {e}"),
            }
            let n = loop {
                match self.stream.read(&mut self.rbuf) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e).context(self.lost()),
                }
            };
            if n == 0 {
                bail!("the node at {} closed the connection", self.addr);
            }
            self.decoder.feed(&self.rbuf[..n]);
        }
    }

    /// The next message; a streamed payload is skipped (`data` is `None`).
    fn next_message(&mut self) -> Result<Message> {
        loop {
            match self.next_event()? {
                Event::Message(m) => return Ok(m),
                Event::Header { message, .. } => {
                    self.skip_payload()?;
                    return Ok(message);
                }
                Event::Data(_) | Event::DataEnd => {}
            }
        }
    }

    fn skip_payload(&mut self) -> Result<()> {
        loop {
            if let Event::DataEnd = self.next_event()? {
                return Ok(());
            }
        }
    }
}

// ---------------------------------------------------------------------------
// put / putsite

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
fn wait_put(c: &mut Client, id: &str, bar: &mut Progress) -> Result<(String, bool)> {
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
    let mut c = Client::connect(&fcp.fcp)?;
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
    let result = wait_put(&mut c, &id, &mut bar);
    bar.clear();
    let (uri, in_network) = result?;
    print_line(t, &uri)?;
    if !in_network && !a.chk_only {
        note(t, &bar, LOCAL_ONLY_NOTE);
    }
    Ok(())
}

/// One file of a site.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SiteFile {
    /// Path inside the site, with `/`.
    name: String,
    path: PathBuf,
    len: u64,
}

/// The files under `dir`, hidden ones skipped, in name order.
fn walk_site(dir: &Path) -> Result<Vec<SiteFile>> {
    let mut files = Vec::new();
    walk_into(dir, "", &mut files)?;
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(files)
}

fn walk_into(dir: &Path, prefix: &str, files: &mut Vec<SiteFile>) -> Result<()> {
    let entries = fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            bail!("{}: file names must be UTF-8", path.display());
        };
        if name.starts_with('.') {
            continue;
        }
        let kind = entry
            .file_type()
            .with_context(|| format!("cannot read {}", path.display()))?;
        let rel = format!("{prefix}{name}");
        if kind.is_dir() {
            walk_into(&path, &format!("{rel}/"), files)?;
        } else {
            // Follows a symlink to a file; a symlink to a directory is
            // skipped (it could loop).
            let meta =
                fs::metadata(&path).with_context(|| format!("cannot read {}", path.display()))?;
            if meta.is_file() {
                files.push(SiteFile {
                    name: rel,
                    path,
                    len: meta.len(),
                });
            }
        }
    }
    Ok(())
}

/// The MIME type for a file name, by extension.
fn guess_mime(name: &str) -> &'static str {
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "html" | "htm" => "text/html",
        "css" => "text/css",
        "js" => "text/javascript",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "svg" => "image/svg+xml",
        "txt" => "text/plain",
        "json" => "application/json",
        "ico" => "image/x-icon",
        "webp" => "image/webp",
        "woff2" => "font/woff2",
        "pdf" => "application/pdf",
        _ => "application/octet-stream",
    }
}

fn putsite_with(fcp: &FcpOpts, a: &PutsiteArgs, t: &mut Term<'_>) -> Result<()> {
    let files = walk_site(&a.dir)?;
    if files.is_empty() {
        bail!("{} holds no files to insert", a.dir.display());
    }
    let mut c = Client::connect(&fcp.fcp)?;
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
            .field(format!("Files.{i}.DataLength"), f.len.to_string())
            .field(
                format!("Files.{i}.Metadata.ContentType"),
                guess_mime(&f.name),
            );
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
    let result = wait_put(&mut c, &id, &mut bar);
    bar.clear();
    let (uri, in_network) = result?;
    print_line(t, &uri)?;
    if !in_network {
        note(t, &bar, LOCAL_ONLY_NOTE);
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// get

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
    let mut c = Client::connect(&fcp.fcp)?;
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
    c: &mut Client,
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
    c: &mut Client,
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

// ---------------------------------------------------------------------------
// genkey

fn genkey_with(fcp: &FcpOpts, t: &mut Term<'_>) -> Result<()> {
    let mut c = Client::connect(&fcp.fcp)?;
    let id = new_identifier("genkey");
    c.send(&Message::new("GenerateSSK").field("Identifier", &id))?;
    loop {
        let m = c.next_message()?;
        check_refusal(&m, &id)?;
        if m.name != "SSKKeypair" || !concerns(&m, &id) {
            continue;
        }
        let insert = m
            .get("InsertURI")
            .ok_or_else(|| anyhow!("the node sent an SSKKeypair without InsertURI"))?;
        let request = m
            .get("RequestURI")
            .ok_or_else(|| anyhow!("the node sent an SSKKeypair without RequestURI"))?;
        let text = if t.out_tty {
            format!("Insert URI:  {insert}\nRequest URI: {request}")
        } else {
            format!("{insert}\n{request}")
        };
        return print_line(t, &text);
    }
}

// ---------------------------------------------------------------------------
// status

/// One persistent request as listed by the node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct RequestRow {
    identifier: String,
    global: bool,
    kind: &'static str,
    state: String,
    progress: Option<(u64, u64)>,
}

/// The persistent requests, in the order the node listed them.
#[derive(Debug, Default)]
struct Queue {
    rows: Vec<RequestRow>,
}

impl Queue {
    fn row(&mut self, m: &Message) -> Option<&mut RequestRow> {
        let id = m.get("Identifier")?;
        let global = parse_bool(m.get("Global"), false);
        let i = match self
            .rows
            .iter()
            .position(|r| r.identifier == id && r.global == global)
        {
            Some(i) => i,
            None => {
                self.rows.push(RequestRow {
                    identifier: id.to_string(),
                    global,
                    kind: "?",
                    state: "running".into(),
                    progress: None,
                });
                self.rows.len() - 1
            }
        };
        self.rows.get_mut(i)
    }

    /// Applies one message of a ListPersistentRequests answer (or of the
    /// global queue being watched).
    fn apply(&mut self, m: &Message) {
        let kind = match m.name.as_str() {
            "PersistentGet" => Some("get"),
            "PersistentPut" => Some("put"),
            "PersistentPutDir" => Some("putdir"),
            _ => None,
        };
        let Some(row) = self.row(m) else { return };
        if let Some(k) = kind {
            row.kind = k;
            return;
        }
        match m.name.as_str() {
            "SimpleProgress" => row.progress = Some(block_counts(m)),
            // An insert made without peers: pushed when peers come.
            "PutSuccessful" if m.get("Lichen.PushFailed").is_some() => {
                row.state = "stored locally; pushing it failed: insert it again".into();
            }
            "PutSuccessful" if m.get("Lichen.InNetwork") == Some("false") => {
                row.state = "stored locally; not yet in the network".into();
            }
            "DataFound" | "AllData" | "PutSuccessful" => row.state = "done".into(),
            "PutFetchable" if row.state == "running" => row.state = "fetchable".into(),
            "GetFailed" => row.state = format!("failed: {}", describe(m, fetch_words)),
            "PutFailed" => row.state = format!("failed: {}", describe(m, insert_words)),
            _ => {}
        }
    }
}

fn fetch_words(c: u32) -> Option<&'static str> {
    FetchErrorCode::from_code(c).map(|e| e.short_description())
}

fn insert_words(c: u32) -> Option<&'static str> {
    InsertErrorCode::from_code(c).map(|e| e.short_description())
}

fn status_with(fcp: &FcpOpts, t: &mut Term<'_>) -> Result<()> {
    let mut c = Client::connect(&fcp.fcp)?;
    let id = new_identifier("status");
    c.send(
        &Message::new("GetNode")
            .field("Identifier", &id)
            .field("WithPrivate", "false")
            .field("WithVolatile", "true")
            .field("GiveOpennetRef", "false"),
    )?;
    let node = loop {
        let m = c.next_message()?;
        check_refusal(&m, &id)?;
        if m.name == "NodeData" {
            break m;
        }
    };
    c.send(
        &Message::new("WatchGlobal")
            .field("Enabled", "true")
            .field("VerbosityMask", "1"),
    )?;
    c.send(&Message::new("ListPersistentRequests"))?;
    let mut queue = Queue::default();
    loop {
        let m = c.next_message()?;
        match m.name.as_str() {
            "EndListPersistentRequests" => break,
            "ProtocolError" => return Err(protocol_error(&m)),
            _ => queue.apply(&m),
        }
    }
    let _ = c.send(&Message::new("Disconnect"));
    let text = render_status(&node, &queue);
    write_out(t.out, text.as_bytes())?;
    flush_out(t.out)
}

fn render_status(node: &Message, queue: &Queue) -> String {
    let or_dash = |k: &str| {
        node.get(k)
            .filter(|v| !v.is_empty())
            .unwrap_or("-")
            .to_string()
    };
    let store = field_u64(node, "volatile.storeBytes")
        .map_or_else(|| "-".to_string(), |b| HumanBytes(b).to_string());
    let peers = node
        .get("volatile.numberOfConnected")
        .or_else(|| node.get("volatile.numberOfConnectedPeers"))
        .unwrap_or("-");
    let mut s = String::new();
    s.push_str(&format!("Node:      {}\n", or_dash("version")));
    s.push_str(&format!("Location:  {}\n", or_dash("location")));
    s.push_str(&format!("Store:     {store}\n"));
    s.push_str(&format!("Peers:     {peers}\n"));
    // The routing core's counters since start (a node with a network).
    let count = |k: &str| field_u64(node, &format!("volatile.lichen.{k}"));
    if let (Some(served), Some(overload), Some(loops), Some(bad)) = (
        count("servedFromStore"),
        count("overloadRejected"),
        count("loopsRejected"),
        count("badBlocks"),
    ) {
        s.push_str(&format!(
            "Routing:   {served} served from the store, {overload} refused as overload, \
             {loops} refused as loops, {bad} bad blocks from peers\n"
        ));
    }
    s.push('\n');
    if queue.rows.is_empty() {
        s.push_str("No persistent requests.\n");
        return s;
    }
    let header = ["IDENTIFIER", "KIND", "STATE", "PROGRESS"];
    let rows: Vec<[String; 4]> = queue
        .rows
        .iter()
        .map(|r| {
            let ident = if r.global {
                format!("{} (global)", r.identifier)
            } else {
                r.identifier.clone()
            };
            let progress = match (r.state.as_str(), r.progress) {
                ("done", _) => "100%".to_string(),
                (_, Some((done, of))) if of > 0 => {
                    format!("{done}/{of} ({}%)", done.min(of) * 100 / of)
                }
                _ => "-".to_string(),
            };
            [ident, r.kind.to_string(), r.state.clone(), progress]
        })
        .collect();
    let mut widths = header.map(str::len);
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut line = |cells: [&str; 4]| {
        let mut l = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                l.push_str(cell);
            } else {
                l.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        s.push_str(l.trim_end());
        s.push('\n');
    };
    line(header);
    for r in &rows {
        line([&r[0], &r[1], &r[2], &r[3]]);
    }
    s
}

// ---------------------------------------------------------------------------
// peers

/// `lichen peers`.
#[derive(clap::Args, Debug)]
pub struct PeersArgs {
    #[command(subcommand)]
    pub action: Option<PeersAction>,
    /// Also show each peer's addresses (they say who your friends are:
    /// mind who can see your screen)
    #[arg(long)]
    pub addresses: bool,
}

/// `lichen peers add|remove`.
#[derive(clap::Subcommand, Debug)]
pub enum PeersAction {
    /// Add a friend from a noderef file (what `lichen noderef` printed on
    /// their node), or `-` for stdin. Friends are remembered and
    /// reconnected; a darknet node talks only to friends.
    Add {
        /// Noderef file, or `-`
        file: String,
    },
    /// Forget a peer: its identity as `lichen peers` shows it, or one of
    /// its addresses.
    Remove {
        /// Identity or address (an identity may begin with `-`: base64
        /// with `~` and `-`)
        #[arg(allow_hyphen_values = true)]
        peer: String,
    },
}

/// `lichen peers` (list), `lichen peers add`, `lichen peers remove`.
pub fn peers(fcp: &FcpOpts, a: &PeersArgs) -> Result<()> {
    with_std_term(|t| match &a.action {
        None => peers_list(fcp, a.addresses, t),
        Some(PeersAction::Add { file }) => peers_add(fcp, file, &mut io::stdin().lock(), t),
        Some(PeersAction::Remove { peer }) => peers_remove(fcp, peer, t),
    })
}

/// Largest noderef file read.
const MAX_NODEREF_FILE: u64 = 64 * 1024;

fn read_noderef(file: &str, stdin: &mut dyn Read) -> Result<String> {
    let mut buf = Vec::new();
    if file == "-" {
        stdin
            .take(MAX_NODEREF_FILE + 1)
            .read_to_end(&mut buf)
            .context("cannot read the noderef from stdin")?;
    } else {
        File::open(file)
            .and_then(|f| f.take(MAX_NODEREF_FILE + 1).read_to_end(&mut buf))
            .with_context(|| format!("cannot read {file}"))?;
    }
    if buf.len() as u64 > MAX_NODEREF_FILE {
        bail!("{file} is larger than {MAX_NODEREF_FILE} bytes: not a noderef");
    }
    let text = String::from_utf8(buf).map_err(|_| anyhow!("{file} is not a noderef (not text)"))?;
    let text = crate::peers::fcp::strip_comments(&text);
    if let Err(e) = lichen_link::NodeRef::parse(&text) {
        bail!("{file} is not a usable noderef: {e}");
    }
    Ok(text)
}

fn peers_add(fcp: &FcpOpts, file: &str, stdin: &mut dyn Read, t: &mut Term<'_>) -> Result<()> {
    let text = read_noderef(file, stdin)?;
    let mut c = Client::connect(&fcp.fcp)?;
    let id = new_identifier("addpeer");
    c.send(
        &Message::new("AddPeer")
            .field("Identifier", &id)
            .field("Trust", "NORMAL")
            .field("Visibility", "NO")
            .field(crate::peers::fcp::NODEREF_FIELD, text),
    )?;
    let peer = loop {
        let m = c.next_message()?;
        check_refusal(&m, &id)?;
        if m.name == "Peer" {
            break m;
        }
    };
    let _ = c.send(&Message::new("Disconnect"));
    let line = format!(
        "added friend {} ({})\n",
        peer.get("identity").unwrap_or("?"),
        match peer.get("volatile.status") {
            Some("CONNECTED") => "connected",
            _ => "connecting; a darknet friend must add this node's noderef too",
        }
    );
    write_out(t.out, line.as_bytes())
}

fn peers_remove(fcp: &FcpOpts, which: &str, t: &mut Term<'_>) -> Result<()> {
    let mut c = Client::connect(&fcp.fcp)?;
    let id = new_identifier("removepeer");
    c.send(
        &Message::new("RemovePeer")
            .field("Identifier", &id)
            .field("NodeIdentifier", which),
    )?;
    loop {
        let m = c.next_message()?;
        check_refusal(&m, &id)?;
        match m.name.as_str() {
            "PeerRemoved" => {
                let _ = c.send(&Message::new("Disconnect"));
                let line = format!("removed peer {}\n", m.get("Identity").unwrap_or(which));
                return write_out(t.out, line.as_bytes());
            }
            "UnknownNodeIdentifier" => bail!("no peer {which} (see `lichen peers`)"),
            _ => {}
        }
    }
}

fn peers_list(fcp: &FcpOpts, addresses: bool, t: &mut Term<'_>) -> Result<()> {
    let mut c = Client::connect(&fcp.fcp)?;
    let id = new_identifier("listpeers");
    c.send(
        &Message::new("ListPeers")
            .field("Identifier", &id)
            .field("WithMetadata", "true")
            .field("WithVolatile", "true"),
    )?;
    let mut peers = Vec::new();
    loop {
        let m = c.next_message()?;
        check_refusal(&m, &id)?;
        match m.name.as_str() {
            "Peer" => peers.push(m),
            "EndListPeers" => break,
            _ => {}
        }
    }
    let _ = c.send(&Message::new("Disconnect"));
    write_out(t.out, render_peers(&peers, addresses).as_bytes())
}

fn render_peers(peers: &[Message], addresses: bool) -> String {
    if peers.is_empty() {
        return "No peers.\n".to_string();
    }
    let mut rows: Vec<Vec<String>> = vec![["IDENTITY", "KIND", "STATUS", "LOCATION"]
        .iter()
        .map(ToString::to_string)
        .collect()];
    if addresses {
        rows[0].push("ADDRESS".into());
    }
    for p in peers {
        let get = |k: &str| {
            p.get(k)
                .filter(|v| !v.is_empty())
                .unwrap_or("-")
                .to_string()
        };
        let kind = if parse_bool(p.get("opennet"), false) {
            "opennet"
        } else {
            "friend"
        };
        let mut row = vec![
            get("identity"),
            kind.to_string(),
            get("volatile.status").to_lowercase(),
            get("location"),
        ];
        if addresses {
            row.push(get("physical.tcp"));
        }
        rows.push(row);
    }
    let cols = rows[0].len();
    let widths: Vec<usize> = (0..cols)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut s = String::new();
    for r in &rows {
        let mut l = String::new();
        for (i, cell) in r.iter().enumerate() {
            l.push_str(&format!("{cell:<w$}  ", w = widths[i]));
        }
        s.push_str(l.trim_end());
        s.push('\n');
    }
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::io::Cursor;
    use std::net::TcpListener;
    use std::thread::{self, JoinHandle};
    use std::time::Instant;

    const WAIT: Duration = Duration::from_secs(10);

    /// The node side of one fake FCP connection.
    struct FakeConn {
        stream: TcpStream,
        decoder: Decoder,
        buf: Vec<u8>,
    }

    impl FakeConn {
        fn event(&mut self) -> Event {
            loop {
                if let Some(ev) = self.decoder.next_event().expect("client sent garbage") {
                    return ev;
                }
                let n = self.stream.read(&mut self.buf).expect("read from client");
                assert!(n > 0, "client closed the connection");
                self.decoder.feed(&self.buf[..n]);
            }
        }

        /// The next message, a streamed payload gathered into `data`.
        fn recv(&mut self) -> Message {
            match self.event() {
                Event::Message(m) => m,
                Event::Header {
                    mut message,
                    data_length,
                } => {
                    let mut data = Vec::with_capacity(data_length as usize);
                    loop {
                        match self.event() {
                            Event::Data(c) => data.extend_from_slice(&c),
                            Event::DataEnd => break,
                            other => panic!("unexpected {other:?}"),
                        }
                    }
                    message.data = Some(data);
                    message
                }
                other => panic!("unexpected {other:?}"),
            }
        }

        fn expect(&mut self, name: &str) -> Message {
            let m = self.recv();
            assert_eq!(m.name, name, "{m:?}");
            m
        }

        fn send(&mut self, m: &Message) {
            m.write_to(&mut self.stream).expect("write to client");
        }

        /// Waits until the client hangs up.
        fn wait_close(&mut self) {
            loop {
                match self.stream.read(&mut self.buf) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        }
    }

    fn msg(name: &str, fields: &[(&str, &str)]) -> Message {
        let mut m = Message::new(name);
        for (k, v) in fields {
            m = m.field(*k, *v);
        }
        m
    }

    /// A fake node on 127.0.0.1:0 serving one connection: it checks the
    /// ClientHello, answers NodeHello, then runs `script`.
    fn fake_node<T: Send + 'static>(
        script: impl FnOnce(&mut FakeConn) -> T + Send + 'static,
    ) -> (FcpOpts, JoinHandle<T>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let handle = thread::spawn(move || {
            listener.set_nonblocking(true).unwrap();
            let deadline = Instant::now() + WAIT;
            let stream = loop {
                match listener.accept() {
                    Ok((s, _)) => break s,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        assert!(Instant::now() < deadline, "no client connected");
                        thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) => panic!("accept: {e}"),
                }
            };
            stream.set_nonblocking(false).unwrap();
            stream.set_read_timeout(Some(WAIT)).unwrap();
            stream.set_write_timeout(Some(WAIT)).unwrap();
            let mut c = FakeConn {
                stream,
                decoder: Decoder::new(Limits::default()),
                buf: vec![0; 64 * 1024],
            };
            let hello = c.expect("ClientHello");
            assert!(hello
                .get("Name")
                .unwrap()
                .starts_with(&format!("lichen-cli-{}", std::process::id())));
            assert_eq!(hello.get("ExpectedVersion"), Some("2.0"));
            c.send(&msg(
                "NodeHello",
                &[
                    ("FCPVersion", "2.0"),
                    ("Node", "Fred"),
                    ("ConnectionIdentifier", "c0ffee"),
                ],
            ));
            script(&mut c)
        });
        (FcpOpts { fcp: addr }, handle)
    }

    struct Captured {
        result: Result<()>,
        out: Vec<u8>,
        err: String,
    }

    fn run(out_tty: bool, f: impl FnOnce(&mut Term<'_>) -> Result<()>) -> Captured {
        let mut out = Vec::new();
        let mut err = Vec::new();
        let mut t = Term {
            out: &mut out,
            err: &mut err,
            out_tty,
            progress: false,
        };
        let result = quiet_pipe(f(&mut t));
        Captured {
            result,
            out,
            err: String::from_utf8(err).unwrap(),
        }
    }

    fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    /// `data` as the `DataChunk`s of `piece` bytes a chunked get gets.
    fn chunks(id: &str, data: &[u8], piece: usize) -> Vec<Message> {
        let mut out = Vec::new();
        for (i, p) in data.chunks(piece).enumerate() {
            let mut f = lichen_fcp::Fields::new();
            f.push("Identifier", id);
            f.push("Offset", (i * piece).to_string());
            if i == 0 {
                f.push("TotalLength", data.len().to_string());
                f.push("Metadata.ContentType", "application/octet-stream");
            }
            out.push(Message::with_data("DataChunk", f, p.to_vec()));
        }
        out
    }

    fn data_found(id: &str, len: usize) -> Message {
        msg(
            "DataFound",
            &[
                ("Identifier", id),
                ("DataLength", &len.to_string()),
                ("Metadata.ContentType", "text/plain"),
            ],
        )
    }

    #[test]
    fn unreachable_node_is_a_clear_error() {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let fcp = FcpOpts {
            fcp: format!("127.0.0.1:{port}"),
        };
        let c = run(false, |t| genkey_with(&fcp, t));
        let e = format!("{:#}", c.result.unwrap_err());
        assert!(
            e.starts_with(&format!(
                "cannot reach the Lichen node at 127.0.0.1:{port} — is `lichen node` running?"
            )),
            "{e}"
        );
    }

    #[test]
    fn protocol_error_instead_of_node_hello() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let fcp = FcpOpts {
            fcp: listener.local_addr().unwrap().to_string(),
        };
        let h = thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.set_read_timeout(Some(WAIT)).unwrap();
            let mut b = [0u8; 256];
            let _ = s.read(&mut b).unwrap();
            msg(
                "ProtocolError",
                &[("Code", "1"), ("Fatal", "true"), ("Global", "false")],
            )
            .write_to(&mut s)
            .unwrap();
        });
        let c = run(false, |t| genkey_with(&fcp, t));
        assert_eq!(
            c.result.unwrap_err().to_string(),
            "node refused the request: ClientHello must be first message (code 1)"
        );
        h.join().unwrap();
    }

    #[test]
    fn genkey_prints_insert_then_request_uri() {
        for tty in [false, true] {
            let (fcp, h) = fake_node(|c| {
                let g = c.expect("GenerateSSK");
                let id = g.get("Identifier").unwrap().to_string();
                c.send(&msg(
                    "SSKKeypair",
                    &[
                        ("InsertURI", "SSK@priv,x,AQECAAE/"),
                        ("RequestURI", "SSK@pub,x,AQACAAE/"),
                        ("Identifier", &id),
                    ],
                ));
            });
            let c = run(tty, |t| genkey_with(&fcp, t));
            h.join().unwrap();
            c.result.unwrap();
            let out = String::from_utf8(c.out).unwrap();
            if tty {
                assert_eq!(
                    out,
                    "Insert URI:  SSK@priv,x,AQECAAE/\nRequest URI: SSK@pub,x,AQACAAE/\n"
                );
            } else {
                assert_eq!(out, "SSK@priv,x,AQECAAE/\nSSK@pub,x,AQACAAE/\n");
            }
        }
    }

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
        let mut c = Client::connect(&fcp.fcp).unwrap();
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
                let _ = m.write_to(&mut c.stream);
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

    #[test]
    fn status_prints_node_and_requests() {
        let (fcp, h) = fake_node(|c| {
            let g = c.expect("GetNode");
            assert_eq!(g.get("WithVolatile"), Some("true"));
            let id = g.get("Identifier").unwrap().to_string();
            c.send(&msg(
                "NodeData",
                &[
                    ("identity", "abc"),
                    ("location", "0.250000"),
                    ("version", "Lichen,0.1.0"),
                    ("volatile.storeBytes", "1048576"),
                    ("volatile.numberOfConnected", "3"),
                    ("Identifier", &id),
                ],
            ));
            let w = c.expect("WatchGlobal");
            assert_eq!(w.get("Enabled"), Some("true"));
            c.expect("ListPersistentRequests");
            let g = [("Global", "true")];
            let with = |name: &str, id: &str, extra: &[(&str, &str)]| {
                let mut m = msg(name, &[("Identifier", id)]);
                for (k, v) in g.iter().chain(extra) {
                    m = m.field(*k, *v);
                }
                m
            };
            c.send(&with("PersistentGet", "get-1", &[("URI", "CHK@a")]));
            c.send(&with(
                "SimpleProgress",
                "get-1",
                &[("Total", "20"), ("Required", "10"), ("Succeeded", "3")],
            ));
            c.send(&with("PersistentPut", "put-1", &[("URI", "CHK@")]));
            c.send(&with("PutSuccessful", "put-1", &[("URI", "CHK@b")]));
            c.send(&with("PersistentGet", "get-2", &[]));
            c.send(&with("GetFailed", "get-2", &[("Code", "13")]));
            c.send(&msg("EndListPersistentRequests", &[]));
        });
        let c = run(false, |t| status_with(&fcp, t));
        h.join().unwrap();
        c.result.unwrap();
        let out = String::from_utf8(c.out).unwrap();
        let expected = "\
Node:      Lichen,0.1.0
Location:  0.250000
Store:     1.00 MiB
Peers:     3

IDENTIFIER      KIND  STATE                             PROGRESS
get-1 (global)  get   running                           3/10 (30%)
put-1 (global)  put   done                              100%
get-2 (global)  get   failed: Data not found (code 13)  -
";
        assert_eq!(out, expected);
    }

    /// What `lichen status` prints for a node answering `GetNode` with
    /// `fields` and holding no persistent requests.
    fn status_of(fields: &'static [(&'static str, &'static str)]) -> String {
        let (fcp, h) = fake_node(move |c| {
            c.expect("GetNode");
            c.send(&msg("NodeData", fields));
            c.expect("WatchGlobal");
            c.expect("ListPersistentRequests");
            c.send(&msg("EndListPersistentRequests", &[]));
        });
        let c = run(false, |t| status_with(&fcp, t));
        h.join().unwrap();
        c.result.unwrap();
        String::from_utf8(c.out).unwrap()
    }

    #[test]
    fn status_with_an_empty_queue() {
        let out = status_of(&[("version", "Lichen,0.1.0")]);
        assert!(out.contains("Location:  -\n"), "{out}");
        assert!(!out.contains("Routing:"), "{out}");
        assert!(out.ends_with("No persistent requests.\n"), "{out}");
    }

    #[test]
    fn status_shows_the_routing_counters() {
        let out = status_of(&[
            ("version", "Lichen,0.1.0"),
            ("volatile.lichen.servedFromStore", "120"),
            ("volatile.lichen.overloadRejected", "3"),
            ("volatile.lichen.loopsRejected", "45"),
            ("volatile.lichen.badBlocks", "0"),
        ]);
        assert!(
            out.contains(
                "Routing:   120 served from the store, 3 refused as overload, \
                 45 refused as loops, 0 bad blocks from peers\n"
            ),
            "{out}"
        );
    }

    /// The argument structs as main.rs uses them (clap checks its
    /// definitions in debug builds when parsing).
    #[test]
    fn clap_definitions_parse() {
        use clap::Parser;
        #[derive(clap::Parser, Debug)]
        struct Cli {
            #[command(subcommand)]
            command: Cmd,
        }
        #[derive(clap::Subcommand, Debug)]
        enum Cmd {
            Put {
                #[command(flatten)]
                fcp: FcpOpts,
                #[command(flatten)]
                args: PutArgs,
            },
            Get {
                #[command(flatten)]
                fcp: FcpOpts,
                #[command(flatten)]
                args: GetArgs,
            },
            Putsite {
                #[command(flatten)]
                fcp: FcpOpts,
                #[command(flatten)]
                args: PutsiteArgs,
            },
            Status {
                #[command(flatten)]
                fcp: FcpOpts,
            },
            Peers {
                #[command(flatten)]
                args: PeersArgs,
            },
        }
        let cli = Cli::try_parse_from([
            "lichen",
            "put",
            "-",
            "--key",
            "KSK@a",
            "--mime",
            "text/plain",
            "--no-compress",
            "--chk-only",
            "--fcp",
            "10.0.0.1:1",
        ])
        .unwrap();
        let Cmd::Put { fcp, args } = cli.command else {
            panic!()
        };
        assert_eq!(fcp.fcp, "10.0.0.1:1");
        assert_eq!(args.file, "-");
        assert_eq!(args.key.as_deref(), Some("KSK@a"));
        assert!(args.no_compress && args.chk_only);
        let cli =
            Cli::try_parse_from(["lichen", "get", "CHK@x", "-o", "f", "--max-size", "9"]).unwrap();
        let Cmd::Get { fcp, args } = cli.command else {
            panic!()
        };
        assert!(!fcp.fcp.is_empty());
        assert_eq!(args.output, Some(PathBuf::from("f")));
        assert_eq!(args.max_size, Some(9));
        let cli = Cli::try_parse_from(["lichen", "putsite", "site", "--key", "USK@k/s/0"]).unwrap();
        let Cmd::Putsite { args, .. } = cli.command else {
            panic!()
        };
        assert_eq!(args.default, "index.html");
        let cli = Cli::try_parse_from(["lichen", "status"]).unwrap();
        assert!(matches!(cli.command, Cmd::Status { .. }));
        // Identities are base64 with `-`: one may begin with it (a CI run
        // failed on `peers remove -dX…` read as an option).
        let cli = Cli::try_parse_from(["lichen", "peers", "remove", "-dXyz"]).unwrap();
        let Cmd::Peers { args } = cli.command else {
            panic!()
        };
        assert!(matches!(args.action, Some(PeersAction::Remove { ref peer }) if peer == "-dXyz"));
    }

    #[test]
    fn mime_guesses() {
        assert_eq!(guess_mime("a/b/index.HTML"), "text/html");
        assert_eq!(guess_mime("x.htm"), "text/html");
        assert_eq!(guess_mime("x.jpeg"), "image/jpeg");
        assert_eq!(guess_mime("x.jpg"), "image/jpeg");
        assert_eq!(guess_mime("f.woff2"), "font/woff2");
        assert_eq!(guess_mime("f.svg"), "image/svg+xml");
        assert_eq!(guess_mime("README"), "application/octet-stream");
        assert_eq!(guess_mime("archive.tar.gz"), "application/octet-stream");
    }

    #[test]
    fn error_words_for_unknown_codes() {
        let m = msg(
            "GetFailed",
            &[("Code", "99"), ("ShortCodeDescription", "Something new")],
        );
        assert_eq!(
            fetch_error(&m).to_string(),
            "fetch failed: Something new (code 99)"
        );
        let m = msg("PutFailed", &[]);
        assert_eq!(insert_error(&m).to_string(), "insert failed: unknown error");
    }

    #[test]
    fn peers_table_hides_addresses_unless_asked() {
        let p = Message::new("Peer")
            .field("identity", "IDENT")
            .field("opennet", "false")
            .field("location", "0.250000")
            .field("physical.tcp", "10.1.2.3:9489")
            .field("volatile.status", "CONNECTED");
        let t = render_peers(std::slice::from_ref(&p), false);
        assert_eq!(t.lines().count(), 2, "{t}");
        assert!(t.contains("IDENT") && t.contains("friend") && t.contains("connected"));
        assert!(!t.contains("10.1.2.3"), "{t}");
        let t = render_peers(&[p], true);
        assert!(t.contains("ADDRESS") && t.contains("10.1.2.3:9489"), "{t}");
        assert_eq!(render_peers(&[], false), "No peers.\n");
    }

    #[test]
    fn noderef_files_are_checked_before_sending() {
        let dir = tempfile::tempdir().unwrap();
        let keys = lichen_link::NodeKeys::from_static_secret([7; 32]);
        let r = lichen_link::NodeRef::new(&keys, vec!["127.0.0.1:9".parse().unwrap()], None);
        let text = r.to_text(&keys);
        let good = dir.path().join("good");
        fs::write(&good, format!("# my friend\n{text}\n")).unwrap();
        assert_eq!(
            read_noderef(good.to_str().unwrap(), &mut io::empty()).unwrap(),
            text
        );
        let mut stdin = Cursor::new(text.clone().into_bytes());
        assert_eq!(read_noderef("-", &mut stdin).unwrap(), text);
        let bad = dir.path().join("bad");
        fs::write(&bad, "lichen-noderef-v1:AAAA").unwrap();
        let e = read_noderef(bad.to_str().unwrap(), &mut io::empty()).unwrap_err();
        assert!(e.to_string().contains("not a usable noderef"), "{e}");
        fs::write(&bad, [0xff, 0xfe]).unwrap();
        assert!(read_noderef(bad.to_str().unwrap(), &mut io::empty()).is_err());
        let missing = dir.path().join("missing");
        let e = read_noderef(missing.to_str().unwrap(), &mut io::empty()).unwrap_err();
        assert!(e.to_string().contains("cannot read"), "{e}");
    }
}
