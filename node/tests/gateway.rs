//! The HTTP gateway against a real node in-process: a site inserted with
//! `engine::put_site`, read back over plain HTTP/1.1 (a tiny raw client),
//! with the filter, the headers, bad input and USK redirects checked.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use lichen_crypto::ssk::SskPrivate;
use lichen_crypto::{FreenetUri, KeyUri};
use lichen_node::config::Config;
use lichen_node::gateway;
use lichen_node::node::Node;
use lichen_node::ops::{self as engine, PutData, PutSpec, SiteFile};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A 2x2 red PNG.
pub const PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x02, 0x08, 0x02, 0x00, 0x00, 0x00, 0xfd, 0xd4, 0x9a,
    0x73, 0x00, 0x00, 0x00, 0x14, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0xf8, 0xcf, 0xc0, 0xc0,
    0xf0, 0x9f, 0x81, 0x81, 0x81, 0x01, 0x00, 0x12, 0x06, 0x02, 0xfe, 0xa5, 0x60, 0x6d, 0x04, 0x00,
    0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(nl) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let line = std::str::from_utf8(&b[..nl]).unwrap();
        let n = usize::from_str_radix(line.split(';').next().unwrap().trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[nl + 2..nl + 2 + n]);
        b = &b[nl + 2 + n + 2..];
    }
}

async fn raw(addr: SocketAddr, request: &[u8]) -> Resp {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut buf))
        .await
        .expect("response in time")
        .unwrap();
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header");
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = buf[end + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    Resp {
        status,
        headers,
        body,
    }
}

async fn get_with(addr: SocketAddr, path: &str, extra: &str) -> Resp {
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n{extra}\r\n",
        addr.port()
    );
    raw(addr, req.as_bytes()).await
}

async fn get(addr: SocketAddr, path: &str) -> Resp {
    get_with(addr, path, "").await
}

/// A node with its gateway on loopback port 0.
async fn start(dir: &Path, opts: gateway::Options) -> (Arc<Node>, SocketAddr) {
    let mut config = Config {
        data_dir: Some(dir.to_path_buf()),
        ..Config::default()
    };
    config.fcp.listen = "127.0.0.1:0".parse().unwrap();
    config.gateway.listen = "127.0.0.1:0".parse().unwrap();
    config.store.store_bytes = 64 << 20;
    config.store.cache_bytes = 64 << 20;
    config.store.client_cache_bytes = 256 << 20;
    let node = Node::open(config).unwrap();
    let addr = gateway::start_with(&node, opts).await.unwrap().unwrap();
    (node, addr)
}

fn usk_insert_uri() -> String {
    let k = SskPrivate::generate(&mut rand::rngs::OsRng);
    let ins = FreenetUri::new(KeyUri::Ssk {
        key: lichen_crypto::uri::SskKey::Private(k),
        docname: String::new(),
    })
    .to_string();
    // "SSK@…/" → "USK@…/site/0"
    format!("USK@{}site/0", &ins["SSK@".len()..])
}

fn file(dir: &Path, name: &str, data: &[u8]) -> SiteFile {
    let p = dir.join(name.replace('/', "_"));
    std::fs::write(&p, data).unwrap();
    SiteFile {
        name: name.into(),
        data: PutData::File {
            path: p,
            offset: 0,
            len: data.len() as u64,
        },
        mime: None,
    }
}

const INDEX: &str = r#"<!DOCTYPE html><html><head><title>Test site</title>
<link rel="stylesheet" href="style.css">
<link rel="stylesheet" href="http://evil.example/outside.css">
<meta http-equiv="refresh" content="0;url=http://evil.example/">
<base href="http://evil.example/">
<script>fetch('http://evil.example/x')</script>
</head><body onload="alert(1)">
<h1>Hello Lichen</h1>
<p style="background:url(http://evil.example/bg.png)">A paragraph.</p>
<img src="logo.png" alt="logo" width="64" height="64">
<img src="http://evil.example/track.png">
<a href="sub/page.html">Sub page</a>
<a href="https://www.example.org/">Outside</a>
<a href="javascript:alert(1)">js</a>
<iframe src="http://evil.example/frame"></iframe>
</body></html>"#;

async fn insert_site(node: &Arc<Node>, dir: &Path, uri: &str, version: &str) -> String {
    let files = vec![
        file(dir, "index.html", INDEX.replace("Hello Lichen", version).as_bytes()),
        file(
            dir,
            "style.css",
            b"h1 { color: #0a0 } body { background: url(http://evil.example/a.png) } p { background: url(logo.png) }",
        ),
        file(dir, "logo.png", PNG),
        file(dir, "sub/page.html", b"<html><body><p>The sub page</p><a href=\"../index.html\">back</a></body></html>"),
        file(dir, "evil.svg", b"<svg xmlns=\"http://www.w3.org/2000/svg\" onload=\"alert(1)\"><script>alert(1)</script></svg>"),
        file(dir, "fake.png", b"<html><script>alert(1)</script></html>"),
        file(dir, "app.js", b"alert(1)"),
        file(dir, "notes.txt", b"plain text <script>alert(1)</script>"),
    ];
    engine::put_site(
        node,
        uri,
        files,
        Some("index.html".into()),
        &|_| {},
        &|_| {},
    )
    .await
    .unwrap()
}

fn assert_security_headers(r: &Resp) {
    let csp = r.header("content-security-policy").expect("CSP");
    assert!(csp.contains("script-src 'none'"), "{csp}");
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(r.header("referrer-policy"), Some("no-referrer"));
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn site_through_the_gateway() {
    let tmp = tempfile::tempdir().unwrap();
    let (node, addr) = start(&tmp.path().join("node"), gateway::Options::default()).await;
    let files = tmp.path().join("files");
    std::fs::create_dir_all(&files).unwrap();
    let uri = insert_site(&node, &files, &usk_insert_uri(), "Hello Lichen").await;
    assert!(uri.starts_with("USK@"), "{uri}");

    // Without the trailing slash: redirected to the directory.
    let r = get(addr, &format!("/{uri}")).await;
    assert_eq!(r.status, 301);
    let loc = r.header("location").unwrap().to_owned();
    assert!(loc.ends_with('/'), "{loc}");
    assert_security_headers(&r);

    // The default document, filtered.
    let r = get(addr, &loc).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_security_headers(&r);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    let page = r.text();
    assert!(page.contains("Hello Lichen"), "{page}");
    assert!(page.contains("href=\"style.css\""), "{page}");
    assert!(page.contains("src=\"logo.png\""), "{page}");
    assert!(page.contains("href=\"sub/page.html\""), "{page}");
    assert!(
        page.contains("/external-link?url=https%3A%2F%2Fwww%2Eexample%2Eorg%2F"),
        "{page}"
    );
    for bad in [
        "<script",
        "onload",
        "javascript:",
        "http://evil",
        "<iframe",
        "<base",
        "<meta http-equiv",
        "refresh",
    ] {
        assert!(!page.to_ascii_lowercase().contains(bad), "{bad} in {page}");
    }

    // CSS, filtered.
    let r = get(addr, &format!("{loc}style.css")).await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/css"));
    let css = r.text();
    assert!(
        css.contains("color: #0a0") && css.contains("url(\"logo.png\")"),
        "{css}"
    );
    assert!(!css.contains("evil"), "{css}");

    // The image, byte for byte, and a range of it.
    let r = get(addr, &format!("{loc}logo.png")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("image/png"));
    assert_eq!(r.body, PNG);
    assert_security_headers(&r);
    let r = get_with(addr, &format!("{loc}logo.png"), "Range: bytes=1-3\r\n").await;
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &PNG[1..4]);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes 1-3/{}", PNG.len()).as_str())
    );
    let r = get_with(addr, &format!("{loc}logo.png"), "Range: bytes=5000-\r\n").await;
    assert_eq!(r.status, 416);

    // The subpage.
    let r = get(addr, &format!("{loc}sub/page.html")).await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("The sub page"));

    // Types the filter cannot check: a warning, then a download.
    for name in ["evil.svg", "fake.png", "app.js"] {
        let r = get(addr, &format!("{loc}{name}")).await;
        assert_eq!(r.status, 200, "{name}");
        assert!(
            r.header("content-type").unwrap().starts_with("text/html"),
            "{name}"
        );
        let t = r.text();
        assert!(t.contains("?forcedownload"), "{name}: {t}");
        assert!(!t.contains("alert(1)"), "{name}: {t}");
    }
    let r = get(addr, &format!("{loc}evil.svg?forcedownload")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    assert!(r
        .header("content-disposition")
        .unwrap()
        .starts_with("attachment"));
    assert_security_headers(&r);

    // Plain text stays plain text.
    let r = get(addr, &format!("{loc}notes.txt")).await;
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));

    // max-size.
    let r = get(addr, &format!("{loc}logo.png?max-size=10")).await;
    assert_eq!(r.status, 413);
    let r = get(addr, &format!("{loc}logo.png?max-size=abc")).await;
    assert_eq!(r.status, 400);

    // Not in the manifest.
    let r = get(addr, &format!("{loc}missing.html")).await;
    assert_eq!(r.status, 404);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));

    // A path going on past a file: the requester's fault, a 400.
    let r = get(addr, &format!("{loc}notes.txt/a/b")).await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("Bad key or path"), "{}", r.text());

    // /?key= redirects to the key.
    let r = get(addr, &format!("/?key={}", uri.replace('@', "%40"))).await;
    assert_eq!(r.status, 303);
    assert!(r.header("location").unwrap().starts_with("/USK@"));
    let r = get(addr, "/?key=http%3A%2F%2F127.0.0.1%3A8888%2FKSK%40hello").await;
    assert_eq!(r.header("location"), Some("/KSK@hello/"));

    // The warning page for outside links.
    let r = get(addr, "/external-link?url=https%3A%2F%2Fwww.example.org%2F").await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("outside"));
    let r = get(addr, "/external-link?url=javascript%3Aalert(1)").await;
    assert_eq!(r.status, 400);

    node.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_short_4xx_pages() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = gateway::Options {
        header_timeout: Duration::from_secs(1),
        ..gateway::Options::default()
    };
    let (node, addr) = start(tmp.path(), opts).await;
    let chk = "CHK@AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA,AAMC--8";
    for (path, want) in [
        ("/nothing-here", 404),
        ("/XYZ@abc/def", 404),
        ("/CHK@garbage/x", 400),
        ("/CHK@/", 400),
        ("/SSK@/", 400),
        ("/USK@abc/site/notanumber/", 400),
        (&format!("/{chk}/a/../b") as &str, 400),
        (&format!("/{chk}/a%2fb"), 400),
        (&format!("/{chk}/a%5Cb"), 400),
        (&format!("/{chk}/%2e%2e/x"), 400),
        (&format!("/{chk}/a%00b"), 400),
        (&format!("/{chk}/file"), 404),
        (&format!("/CHK@{}/x", "A".repeat(3000)), 400),
        (&format!("/CHK@{}/x", "A".repeat(5000)), 414),
        ("/?key=not-a-key", 400),
        ("/?key=%FF%FE", 400),
    ] {
        let r = get(addr, path).await;
        assert_eq!(r.status, want, "{path}: {}", r.text());
        if r.status != 414 {
            assert!(
                r.header("content-type")
                    .unwrap_or("")
                    .starts_with("text/html"),
                "{path}"
            );
            assert!(r.body.len() < 4096, "{path}");
        }
        assert_security_headers(&r);
    }

    // Wrong Host (DNS rebinding): refused.
    let r = raw(
        addr,
        b"GET / HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 403);
    // No Host at all.
    let r = raw(addr, b"GET / HTTP/1.0\r\n\r\n").await;
    assert_eq!(r.status, 403);
    // Methods other than GET on keys.
    let r = raw(
        addr,
        format!("DELETE /{chk}/file HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await;
    assert_eq!(r.status, 405);

    // A header flood: refused, the server lives on.
    let mut req = String::from("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for i in 0..500 {
        req.push_str(&format!("X-Flood-{i}: {}\r\n", "a".repeat(100)));
    }
    req.push_str("Connection: close\r\n\r\n");
    let mut s = TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(req.as_bytes()).await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    let head = String::from_utf8_lossy(&buf);
    assert!(buf.is_empty() || head.starts_with("HTTP/1.1 431"), "{head}");

    // A slow client that never finishes its headers is cut off.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    assert!(r.is_ok(), "the slow connection was not closed");

    // Still serving.
    let r = get(addr, "/").await;
    assert_eq!(r.status, 200);
    node.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn home_page_and_upload() {
    let tmp = tempfile::tempdir().unwrap();
    let (node, addr) = start(tmp.path(), gateway::Options::default()).await;
    let r = get(addr, "/").await;
    assert_eq!(r.status, 200);
    assert_security_headers(&r);
    let home = r.text();
    assert!(
        home.contains("Open a key") && home.contains("Location") && home.contains("client cache"),
        "{home}"
    );
    // No peer has dialed it back yet (or it has no network at all).
    assert!(
        home.contains("<th>Reachability</th><td>unknown (no peer has dialed back yet)</td>")
            || home.contains("<th>Reachability</th><td>no network</td>"),
        "{home}"
    );
    assert!(!home.contains("<script"));
    assert!(!home.contains("id=\"alerts\""), "{home}");
    let token = form_token(&home);

    let upload = |token: String, extra: &'static str| {
        let boundary = "XyZ0123";
        let body = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n{token}\r\n\
             --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"../hello.txt\"\r\nContent-Type: text/plain\r\n\r\nhello from the form\r\n\
             --{boundary}--\r\n"
        );
        format!(
            "POST /upload HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n{extra}Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\n\r\n{body}",
            addr.port(),
            body.len()
        )
    };
    // Wrong token, cross-site origin, cross-site fetch metadata: refused.
    let r = raw(addr, upload("0".repeat(64), "").as_bytes()).await;
    assert_eq!(r.status, 403);
    let r = raw(
        addr,
        upload(token.clone(), "Origin: http://evil.example\r\n").as_bytes(),
    )
    .await;
    assert_eq!(r.status, 403);
    let r = raw(
        addr,
        upload(token.clone(), "Sec-Fetch-Site: cross-site\r\n").as_bytes(),
    )
    .await;
    assert_eq!(r.status, 403);
    // The real thing.
    let origin: &'static str = Box::leak(
        format!(
            "Origin: http://127.0.0.1:{}\r\nSec-Fetch-Site: same-origin\r\n",
            addr.port()
        )
        .into_boxed_str(),
    );
    let r = raw(addr, upload(token, origin).as_bytes()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let page = r.text();
    let chk = page
        .split("href=\"/")
        .nth(2)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    assert!(
        chk.starts_with("CHK@") && chk.ends_with("/hello.txt"),
        "{chk}"
    );
    let r = get(addr, &format!("/{chk}")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "hello from the form");
    // Listed on the home page, and (without peers) among the alerts as an
    // insert waiting to be pushed into the network.
    let home = get(addr, "/").await.text();
    assert!(home.contains(&chk));
    assert!(
        home.contains("1 insert made without peers is waiting to be pushed"),
        "{home}"
    );
    node.shutdown.cancel();
}

/// The token of the first form on `page`.
fn form_token(page: &str) -> String {
    page.split("name=\"csrf\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned()
}

/// A urlencoded form POST of `body` to `path`, with `extra` headers.
fn form_post(addr: SocketAddr, path: &str, body: &str, extra: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n{extra}\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        addr.port(),
        body.len()
    )
}

/// The headers a browser sends with a form of the gateway's own page.
fn same_origin(addr: SocketAddr) -> String {
    format!(
        "Origin: http://127.0.0.1:{}\r\nSec-Fetch-Site: same-origin\r\n",
        addr.port()
    )
}

/// The first-run page: offered on the home page while the node has no
/// config file; its three choices (from another site: refused; not one
/// of those offered: refused) are written there, the upload limit in
/// effect at once; then the home page offers it no more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_run_choices_are_saved_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (node, addr) = start(tmp.path(), gateway::Options::default()).await;
    let home = get(addr, "/").await.text();
    assert!(home.contains("href=\"/first-run\""), "{home}");
    let r = get(addr, "/first-run").await;
    assert_eq!(r.status, 200);
    assert_security_headers(&r);
    let token = form_token(&r.text());
    let good = format!("csrf={token}&disk=5&upload=256&network=friends");
    let r = raw(
        addr,
        form_post(addr, "/first-run", &good, "Sec-Fetch-Site: cross-site\r\n").as_bytes(),
    )
    .await;
    assert_eq!(r.status, 403);
    for bad in [
        format!("csrf={token}&disk=3&upload=256&network=friends"),
        format!("csrf={token}&disk=5&upload=1&network=friends"),
        format!("csrf={token}&disk=5&upload=256&network=everyone"),
        format!("csrf={token}&disk=5&upload=256"),
    ] {
        let r = raw(
            addr,
            form_post(addr, "/first-run", &bad, &same_origin(addr)).as_bytes(),
        )
        .await;
        assert_eq!(r.status, 400, "{bad}");
    }
    let file = tmp.path().join(lichen_node::settings::FILE_NAME);
    assert!(!file.exists());
    let r = raw(
        addr,
        form_post(addr, "/first-run", &good, &same_origin(addr)).as_bytes(),
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(node.bandwidth().upload.rate(), 256 << 10);
    let saved = Config::load(&file).unwrap();
    assert_eq!(saved.store.store_bytes + saved.store.cache_bytes, 5 << 30);
    assert!(saved.store.store_bytes > saved.store.cache_bytes);
    assert!(!saved.network.opennet);
    let home = get(addr, "/").await.text();
    assert!(!home.contains("href=\"/first-run\""), "{home}");
    node.shutdown.cancel();
}

/// The peers page of a node without a network says so; its forms are
/// refused from another site or without the token, and otherwise answer
/// with what the node said (a bad invitation or noderef: 400 with the
/// reason; no network: 400).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_page_forms_are_checked_and_answer_with_reasons() {
    let tmp = tempfile::tempdir().unwrap();
    let (node, addr) = start(tmp.path(), gateway::Options::default()).await;
    let r = get(addr, "/peers").await;
    assert_eq!(r.status, 200);
    assert_security_headers(&r);
    let page = r.text();
    assert!(page.contains("without a network"), "{page}");
    let token = form_token(&page);
    let upload_token = form_token(&get(addr, "/").await.text());
    let post = |path: &str, body: &str, extra: &str| form_post(addr, path, body, extra);
    for path in ["/peers/add", "/peers/invite", "/peers/remove"] {
        for bad in [
            "csrf=0&text=x&identity=x".to_owned(),
            format!("csrf={upload_token}&text=x"),
        ] {
            let r = raw(addr, post(path, &bad, &same_origin(addr)).as_bytes()).await;
            assert_eq!(r.status, 403, "{path} {bad}");
        }
        let body = format!("csrf={token}&text=x&identity=x");
        let r = raw(
            addr,
            post(path, &body, "Sec-Fetch-Site: cross-site\r\n").as_bytes(),
        )
        .await;
        assert_eq!(r.status, 403, "{path}");
    }
    let answer = |path: &'static str, body: String| {
        let req = post(path, &body, &same_origin(addr));
        async move { raw(addr, req.as_bytes()).await }
    };
    let r = answer("/peers/add", format!("csrf={token}&text=not+a+noderef")).await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("Error parsing ref"), "{}", r.text());
    let r = answer(
        "/peers/add",
        format!("csrf={token}&text=lichen-invite%3Axyz"),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    let r = answer("/peers/invite", format!("csrf={token}")).await;
    assert_eq!(r.status, 400, "{}", r.text());
    let r = answer("/peers/remove", format!("csrf={token}&identity=abc")).await;
    assert_eq!(r.status, 400, "{}", r.text());
    node.shutdown.cancel();
}

/// The settings form (`/settings`): shown with the node's settings; a
/// change posted from another site, or without the form's token, is
/// refused and changes nothing; one from the page is written into the
/// config file, and a bandwidth limit is in effect at once (the home page
/// shows the links' limit); a bad value is refused with its reason and
/// changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_change_only_from_the_settings_page() {
    let tmp = tempfile::tempdir().unwrap();
    let (node, addr) = start(tmp.path(), gateway::Options::default()).await;
    let r = get(addr, "/settings").await;
    assert_eq!(r.status, 200);
    assert_security_headers(&r);
    let page = r.text();
    assert!(!page.contains("<script"));
    assert!(
        page.contains(
            "name=\"node.outputBandwidthLimit\" id=\"node.outputBandwidthLimit\" value=\"0\""
        ),
        "{page}"
    );
    let token = form_token(&page);
    let post = |body: &str, extra: &str| form_post(addr, "/settings", body, extra);
    let same = same_origin(addr);
    let file = tmp.path().join(lichen_node::settings::FILE_NAME);
    let change = format!("csrf={token}&node.outputBandwidthLimit=64KiB&node.opennet.enabled=true");
    let wrong = format!("csrf={}&node.outputBandwidthLimit=64KiB", "0".repeat(64));
    for (body, extra) in [
        (wrong.as_str(), same.as_str()),
        ("node.outputBandwidthLimit=64KiB", same.as_str()),
        (change.as_str(), "Origin: http://evil.example\r\n"),
        (change.as_str(), "Sec-Fetch-Site: cross-site\r\n"),
        (change.as_str(), "Sec-Fetch-Site: same-site\r\n"),
        (change.as_str(), "Referer: http://evil.example/page\r\n"),
    ] {
        let r = raw(addr, post(body, extra).as_bytes()).await;
        assert_eq!(r.status, 403, "{body} {extra}");
        assert_eq!(node.bandwidth().upload.rate(), 0);
        assert!(!file.exists());
    }
    let r = raw(addr, post(&change, &same).as_bytes()).await;
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(r.header("location"), Some("/settings?saved"));
    assert_eq!(node.bandwidth().upload.rate(), 64 << 10);
    // Only what changed is written (opennet was already on).
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("upload_limit = 65536"), "{text}");
    assert!(!text.contains("opennet"), "{text}");
    assert!(get(addr, "/").await.text().contains("upload 64 KiB/s"));
    let page = get(addr, "/settings?saved").await.text();
    assert!(page.contains("Saved in the config file"), "{page}");
    assert!(page.contains("value=\"65536\""), "{page}");

    let bad = format!("csrf={token}&node.inputBandwidthLimit=1MiB&node.storeSize=tiny");
    let r = raw(addr, post(&bad, &same).as_bytes()).await;
    assert_eq!(r.status, 400);
    let page = r.text();
    assert!(
        page.contains("Nothing was changed") && page.contains("node.storeSize"),
        "{page}"
    );
    assert_eq!(node.bandwidth().download.rate(), 0);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
    node.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usk_old_edition_redirects_to_the_new_one() {
    let tmp = tempfile::tempdir().unwrap();
    let (node, addr) = start(&tmp.path().join("node"), gateway::Options::default()).await;
    let files = tmp.path().join("files");
    std::fs::create_dir_all(&files).unwrap();
    let ins = usk_insert_uri();
    let e0 = insert_site(&node, &files, &ins, "Edition zero").await;
    assert!(e0.ends_with("/site/0"), "{e0}");
    // Seen once at edition 0 (the gateway remembers it).
    let r = get(addr, &format!("/{e0}/")).await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("Edition zero"));
    let e1 = insert_site(&node, &files, &ins, "Edition one").await;
    assert!(e1.ends_with("/site/1"), "{e1}");
    let r = get(addr, &format!("/{e0}/sub/page.html?x=1")).await;
    assert_eq!(r.status, 301, "{}", r.text());
    let loc = r.header("location").unwrap().to_owned();
    assert!(loc.contains("/site/1/sub/page.html?x=1"), "{loc}");
    let r = get(addr, &format!("/{e1}/")).await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("Edition one"));
    // Edition 0 of the top-level page also redirects, now from memory.
    let r = get(addr, &format!("/{e0}/")).await;
    assert_eq!(r.status, 301);
    assert!(r.header("location").unwrap().ends_with("/site/1/"));
    node.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usk_look_ahead_finds_a_newer_edition_in_the_background() {
    let tmp = tempfile::tempdir().unwrap();
    let (node, addr) = start(&tmp.path().join("node"), gateway::Options::default()).await;
    let files = tmp.path().join("files");
    std::fs::create_dir_all(&files).unwrap();
    let ins = usk_insert_uri();
    let e0 = insert_site(&node, &files, &ins, "Edition zero").await;
    let r = get(addr, &format!("/{e0}/")).await;
    assert_eq!(r.status, 200);
    let e1 = insert_site(&node, &files, &ins, "Edition one").await;
    assert!(e1.ends_with("/site/1"), "{e1}");
    // Edition 0's page is still held by the gateway, so it is served as
    // is; serving it starts a background look-ahead that finds edition 1.
    let mut redirected = false;
    for _ in 0..50 {
        let r = get(addr, &format!("/{e0}/")).await;
        if r.status == 301 {
            assert!(r.header("location").unwrap().ends_with("/site/1/"));
            redirected = true;
            break;
        }
        assert_eq!(r.status, 200);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(redirected, "the look-ahead never found edition 1");
    node.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_page_then_large_file_with_ranges() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = gateway::Options {
        progress_after: Duration::ZERO,
        ..gateway::Options::default()
    };
    let (node, addr) = start(&tmp.path().join("node"), opts).await;
    let data: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let p = tmp.path().join("big.bin");
    std::fs::write(&p, &data).unwrap();
    let spec = PutSpec {
        uri: "CHK@".into(),
        data: PutData::File {
            path: p,
            offset: 0,
            len: data.len() as u64,
        },
        mime: None,
        dont_compress: false,
        chk_only: false,
        target_filename: Some("big.bin".into()),
    };
    let uri = engine::put(&node, spec, &|_| {}, &|_| {}).await.unwrap();
    // With no wait at all, a page request gets the progress page first.
    let r = get_with(addr, &format!("/{uri}"), "Sec-Fetch-Dest: document\r\n").await;
    assert_eq!(r.status, 200);
    let t = r.text();
    assert!(t.contains("http-equiv=\"refresh\""), "{t}");
    // Reloading ends on the document (an unknown type: the warning page).
    let mut done = false;
    for _ in 0..100 {
        let r = get_with(addr, &format!("/{uri}"), "Sec-Fetch-Dest: document\r\n").await;
        if r.text().contains("forcedownload") {
            done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(done, "the fetch never finished");
    let r = get(addr, &format!("/{uri}?forcedownload")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), data.len());
    assert!(r.body == data);
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    let r = get_with(
        addr,
        &format!("/{uri}?forcedownload"),
        "Range: bytes=1000000-1000099\r\n",
    )
    .await;
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &data[1_000_000..1_000_100]);
    let r = get_with(
        addr,
        &format!("/{uri}?forcedownload"),
        "Range: bytes=-10\r\n",
    )
    .await;
    assert_eq!(r.body, &data[data.len() - 10..]);
    // The fetched document waits in tmp/ sealed: no 64-byte piece of it
    // is on the disk in the clear.
    let mut waiting = 0;
    for e in std::fs::read_dir(node.tmp_dir()).unwrap() {
        let b = std::fs::read(e.unwrap().path()).unwrap();
        waiting += 1;
        assert!(
            b.chunks(64).zip(data.chunks(64)).all(|(a, d)| a != d),
            "plaintext in a gateway temporary file"
        );
    }
    assert!(waiting >= 1, "the result file is kept for a while");
    node.shutdown.cancel();
}

/// A figure from the home page's node table (`<th>name</th><td>N</td>`).
async fn home_figure(addr: SocketAddr, name: &str) -> u64 {
    let home = get(addr, "/").await.text();
    home.split(&format!("<th>{name}</th><td>"))
        .nth(1)
        .and_then(|s| s.split('<').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {name} on the home page: {home}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_requests_from_other_sites_start_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (node, addr) = start(&tmp.path().join("node"), gateway::Options::default()).await;
    let p = tmp.path().join("doc.txt");
    std::fs::write(&p, b"a document for this site only").unwrap();
    let spec = PutSpec {
        uri: "CHK@".into(),
        data: PutData::File {
            path: p,
            offset: 0,
            len: 29,
        },
        mime: Some("text/plain".into()),
        dont_compress: false,
        chk_only: false,
        target_filename: Some("doc.txt".into()),
    };
    let uri = engine::put(&node, spec, &|_| {}, &|_| {}).await.unwrap();
    let path = format!("/{uri}");
    let dir = path.trim_end_matches("/doc.txt").to_owned();
    assert!(dir.len() < path.len(), "{path}");
    let started = "Gateway fetches started";
    let refused = "Key requests from other sites refused";
    assert_eq!(home_figure(addr, started).await, 0);

    let own = format!("http://127.0.0.1:{}", addr.port());
    let other_port = format!("http://127.0.0.1:{}", addr.port() + 1);
    let cases: Vec<(&str, String, String)> = vec![
        (
            "GET",
            path.clone(),
            "Sec-Fetch-Site: cross-site\r\nSec-Fetch-Dest: image\r\n".into(),
        ),
        (
            "GET",
            path.clone(),
            "Sec-Fetch-Site: same-site\r\nSec-Fetch-Dest: document\r\n".into(),
        ),
        (
            "HEAD",
            path.clone(),
            "Sec-Fetch-Site: cross-site\r\n".into(),
        ),
        (
            "GET",
            format!("{path}?max-size=9"),
            "Sec-Fetch-Site: cross-site\r\nSec-Fetch-Dest: script\r\n".into(),
        ),
        // No fetch metadata (a browser on a plain-http address): Origin or Referer.
        (
            "GET",
            path.clone(),
            "Origin: http://evil.example\r\n".into(),
        ),
        ("GET", path.clone(), "Origin: null\r\n".into()),
        (
            "GET",
            path.clone(),
            format!("Referer: {other_port}/evil.html\r\n"),
        ),
        (
            "GET",
            path.clone(),
            format!("Sec-Fetch-Site: same-origin\r\nOrigin: {other_port}\r\n"),
        ),
        // A directory without its slash: refused too, not redirected
        // (nothing the node knows shows through).
        ("GET", dir.clone(), "Sec-Fetch-Site: cross-site\r\n".into()),
    ];
    for (i, (method, target, extra)) in cases.iter().enumerate() {
        let req = format!(
            "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n{extra}\r\n",
            addr.port()
        );
        let r = raw(addr, req.as_bytes()).await;
        assert_eq!(r.status, 403, "{method} {extra}: {}", r.text());
        assert_security_headers(&r);
        if *method == "GET" {
            let page = r.text();
            assert!(page.contains("Opened from another site"), "{page}");
            // The confirmation link: the same address, on this origin.
            assert!(page.contains(&format!("<a href=\"{target}\">")), "{page}");
            assert!(!page.contains("a document for this site only"));
        }
        assert_eq!(
            home_figure(addr, started).await,
            0,
            "case {i} started a fetch"
        );
        assert_eq!(home_figure(addr, refused).await, i as u64 + 1);
    }

    // The gateway's own pages (same-origin), the address typed by the user
    // (none), and clients without the headers are served.
    let r = get_with(
        addr,
        &path,
        &format!("Sec-Fetch-Site: same-origin\r\nSec-Fetch-Dest: document\r\nOrigin: {own}\r\nReferer: {own}/\r\n"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "a document for this site only");
    assert_eq!(home_figure(addr, started).await, 1);
    let r = get_with(
        addr,
        &path,
        "Sec-Fetch-Site: none\r\nSec-Fetch-Dest: document\r\n",
    )
    .await;
    assert_eq!(r.status, 200);
    let r = get(addr, &path).await;
    assert_eq!(r.status, 200);
    let r = get_with(addr, &dir, "Sec-Fetch-Site: same-origin\r\n").await;
    assert_eq!(r.status, 301);
    assert_eq!(home_figure(addr, refused).await, cases.len() as u64);
    node.shutdown.cancel();
}
