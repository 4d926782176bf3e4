//! Message texts exactly as pyFreenet3 (`fcp3/node.py`, `_txMsg`) sends them,
//! field order and Python spellings (`True`, `False`, `None`) included, and
//! the session answers a real client expects.

#![allow(clippy::unwrap_used)]

use lichen_fcp::client::{ClientMessage, ReturnType, UploadFrom};
use lichen_fcp::replies::{connection_identifier, NodeHello};
use lichen_fcp::{
    Action, Decoder, Event, Limits, Message, Persistence, PriorityClass, ProtocolErrorCode, Reply,
    Session,
};

fn decode_one(input: &[u8]) -> Message {
    let mut d = Decoder::new(Limits::default());
    d.feed(input);
    match d.next_event().unwrap() {
        Some(Event::Message(m)) => {
            assert!(d.is_idle(), "left over: {}", d.buffered());
            m
        }
        other => panic!("{other:?}"),
    }
}

fn parse(input: &[u8]) -> ClientMessage {
    ClientMessage::parse(&decode_one(input)).unwrap()
}

const HELLO: &[u8] = b"ClientHello\nName=fcpput-12345\nExpectedVersion=2.0\nEndMessage\n";

const PUT_DIRECT: &[u8] = b"ClientPut\n\
Persistence=connection\n\
Global=false\n\
URI=CHK@\n\
Metadata.ContentType=text/plain\n\
Identifier=id1700000000123456\n\
Verbosity=0\n\
MaxRetries=-1\n\
PriorityClass=3\n\
RealTimeFlag=false\n\
GetCHKOnly=true\n\
DontCompress=false\n\
Codecs=GZIP, BZIP2, LZMA\n\
LocalRequestOnly=False\n\
UploadFrom=direct\n\
TargetFilename=hello.txt\n\
DataLength=12\n\
Data\n\
hello world\n";

#[test]
fn client_put_direct() {
    let ClientMessage::ClientPut(p) = parse(PUT_DIRECT) else {
        panic!()
    };
    assert_eq!(p.uri, "CHK@");
    assert_eq!(p.identifier, "id1700000000123456");
    assert_eq!(p.upload_from, UploadFrom::Direct { data_length: 12 });
    assert!(p.get_chk_only);
    assert!(!p.dont_compress);
    assert!(!p.local_request_only);
    assert_eq!(p.max_retries, -1);
    assert_eq!(p.priority_class, PriorityClass(3));
    assert_eq!(p.persistence, Persistence::Connection);
    assert_eq!(p.content_type.as_deref(), Some("text/plain"));
    assert_eq!(p.target_filename.as_deref(), Some("hello.txt"));
    assert_eq!(p.codecs.as_deref(), Some("GZIP, BZIP2, LZMA"));
    assert_eq!(
        decode_one(PUT_DIRECT).data.as_deref(),
        Some(&b"hello world\n"[..])
    );
}

#[test]
fn client_put_disk_with_file_hash_and_global_forever() {
    let msg = b"ClientPut\nPersistence=forever\nGlobal=true\nURI=SSK@AKTTKG6YwjrHzWo67laRcoPqibyiTdyYufjVg54fBlWr,AwUSJG5ZS-FDZTqnt6skTzhxQe08T-fbKXj8aEHZsXM,AQECAAE/site\nIdentifier=id1\nVerbosity=1\nMaxRetries=-1\nPriorityClass=3\nRealTimeFlag=false\nGetCHKOnly=false\nDontCompress=false\nCodecs=GZIP, BZIP2, LZMA\nLocalRequestOnly=False\nUploadFrom=disk\nFilename=/tmp/up/file.bin\nFileHash=BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\nEndMessage\n";
    let ClientMessage::ClientPut(p) = parse(msg) else {
        panic!()
    };
    assert!(p.global);
    assert_eq!(p.persistence, Persistence::Forever);
    assert!(p.verbosity.simple_progress());
    assert!(!p.verbosity.put_fetchable());
    let UploadFrom::Disk {
        filename,
        file_hash,
    } = &p.upload_from
    else {
        panic!()
    };
    assert_eq!(filename, "/tmp/up/file.bin");
    assert_eq!(
        lichen_fcp::dda::decode_file_hash(file_hash.as_deref().unwrap()),
        Some([7u8; 32])
    );
}

#[test]
fn client_put_redirect_and_ksk() {
    let msg = b"ClientPut\nURI=KSK@my-test\nIdentifier=r1\nUploadFrom=redirect\nTargetURI=CHK@abc,def,AAMC--8/x\nEndMessage\n";
    let ClientMessage::ClientPut(p) = parse(msg) else {
        panic!()
    };
    assert_eq!(p.uri, "KSK@my-test");
    assert_eq!(
        p.upload_from,
        UploadFrom::Redirect {
            target_uri: "CHK@abc,def,AAMC--8/x".into()
        }
    );
}

#[test]
fn client_get_direct_and_disk() {
    let msg = b"ClientGet\nPersistence=connection\nGlobal=false\nVerbosity=0\nReturnType=direct\nIdentifier=id99\nIgnoreDS=false\nDSOnly=false\nURI=CHK@FR~anQPhpw7lZjxl96o1b875tem~5xExPTiSa6K3Wus,yuGOWhpqFY5N9i~N4BjM0Oh6Bk~Kkb7sE4l8GAsdBEs,AAMC--8/sitemap.html\nMaxRetries=-1\nMaxSize=1000000000000\nPriorityClass=2\nRealTimeFlag=false\nEndMessage\n";
    let ClientMessage::ClientGet(g) = parse(msg) else {
        panic!()
    };
    assert_eq!(g.return_type, ReturnType::Direct);
    assert_eq!(g.max_size, Some(1_000_000_000_000));
    assert_eq!(g.max_retries, -1);
    assert!(g.uri.ends_with("/sitemap.html"));
    assert!(g.write_to_client_cache);

    let msg = b"ClientGet\nPersistence=connection\nGlobal=false\nVerbosity=0\nReturnType=disk\nFilename=/tmp/out/x.bin\nIdentifier=id100\nIgnoreDS=false\nDSOnly=false\nURI=KSK@x\nMaxRetries=-1\nMaxSize=1000000000000\nPriorityClass=2\nRealTimeFlag=false\nEndMessage\n";
    let ClientMessage::ClientGet(g) = parse(msg) else {
        panic!()
    };
    assert_eq!(g.return_type, ReturnType::Disk);
    assert_eq!(g.filename.as_deref(), Some("/tmp/out/x.bin"));

    // ReturnType=none (fcpget's "nodata") gets the prefetch default priority.
    let msg = b"ClientGet\nReturnType=none\nIdentifier=n\nURI=KSK@x\nEndMessage\n";
    let ClientMessage::ClientGet(g) = parse(msg) else {
        panic!()
    };
    assert_eq!(g.priority_class, PriorityClass::PREFETCH);

    // WriteToClientCache: on by default, persistent gets too (they resume
    // from the client cache); off when asked.
    let msg = b"ClientGet\nPersistence=forever\nIdentifier=p\nURI=KSK@x\nEndMessage\n";
    let ClientMessage::ClientGet(g) = parse(msg) else {
        panic!()
    };
    assert!(g.write_to_client_cache);
    let msg = b"ClientGet\nWriteToClientCache=false\nIdentifier=q\nURI=KSK@x\nEndMessage\n";
    let ClientMessage::ClientGet(g) = parse(msg) else {
        panic!()
    };
    assert!(!g.write_to_client_cache);
}

#[test]
fn genkey_testdda_watchglobal_list_remove() {
    assert!(matches!(
        parse(b"GenerateSSK\nIdentifier=id5\nEndMessage\n"),
        ClientMessage::GenerateSsk(g) if g.identifier.as_deref() == Some("id5")
    ));
    assert!(matches!(
        parse(b"TestDDARequest\nDirectory=/tmp/out\nWantWriteDirectory=True\nIdentifier=__global\nEndMessage\n"),
        ClientMessage::TestDdaRequest(r) if r.want_write && !r.want_read && r.directory == "/tmp/out"
    ));
    assert!(matches!(
        parse(b"TestDDAResponse\nDirectory=/tmp/out\nReadFilename=/tmp/out/r\nReadContent=abc\nIdentifier=__global\nEndMessage\n"),
        ClientMessage::TestDdaResponse(r) if r.read_content.as_deref() == Some("abc")
    ));
    // pyFreenet's listenGlobal sends Identifier=None.
    assert!(matches!(
        parse(b"WatchGlobal\nEnabled=true\nIdentifier=None\nEndMessage\n"),
        ClientMessage::WatchGlobal(w) if w.enabled
    ));
    assert!(matches!(
        parse(b"ListPersistentRequests\nIdentifier=__global\nEndMessage\n"),
        ClientMessage::ListPersistentRequests(l) if l.identifier.as_deref() == Some("__global")
    ));
    assert!(matches!(
        parse(b"RemovePersistentRequest\nIdentifier=id7\nGlobal=True\nEndMessage\n"),
        ClientMessage::RemovePersistentRequest(r) if r.global && r.identifier == "id7"
    ));
    assert!(matches!(
        parse(b"GetRequestStatus\nIdentifier=id7\nPersistence=forever\nGlobal=false\nEndMessage\n"),
        ClientMessage::GetRequestStatus(r) if !r.global
    ));
    assert!(matches!(
        parse(b"SubscribeUSK\nURI=USK@a,b,AQACAAE/site/3\nDontPoll=false\nIdentifier=u1\nEndMessage\n"),
        ClientMessage::SubscribeUsk(s) if s.priority_class == PriorityClass::BULK_SPLITFILE
    ));
    assert!(matches!(
        parse(b"GetNode\nWithPrivate=false\nWithVolatile=True\nIdentifier=n1\nEndMessage\n"),
        ClientMessage::GetNode(g) if g.with_volatile && !g.with_private
    ));
    assert!(matches!(
        parse(b"ListPeers\nWithMetadata=true\nWithVolatile=false\nIdentifier=p1\nEndMessage\n"),
        ClientMessage::ListPeers(l) if l.with_metadata
    ));
}

#[test]
fn put_complex_dir_as_freesitemgr_sends_it() {
    // putdir() in non-filebyfile mode: files uploaded from disk.
    let msg = b"ClientPutComplexDir\nIdentifier=id42\nVerbosity=0\nMaxRetries=3\nPriorityClass=4\nURI=USK@priv,crypto,AQECAAE/mysite/0\nCodecs=GZIP, BZIP2, LZMA\nPersistence=connection\nGlobal=false\nDefaultName=index.html\nFiles.0.Name=index.html\nFiles.0.UploadFrom=disk\nFiles.0.Filename=/home/u/site/index.html\nFiles.1.Name=img/logo.png\nFiles.1.UploadFrom=disk\nFiles.1.Filename=/home/u/site/img/logo.png\nEndMessage\n";
    let ClientMessage::ClientPutComplexDir(d) = parse(msg) else {
        panic!()
    };
    assert_eq!(d.options.default_name.as_deref(), Some("index.html"));
    assert_eq!(d.files.len(), 2);
    assert_eq!(d.files[1].name, "img/logo.png");
    assert_eq!(d.data_length, 0);

    // Direct files: data concatenated in index order after Data, with no
    // top-level DataLength (as fred's own docs show).
    let msg = b"ClientPutComplexDir\nIdentifier=id43\nURI=CHK@\nFiles.0.Name=a.txt\nFiles.0.UploadFrom=direct\nFiles.0.DataLength=3\nFiles.1.Name=b\nFiles.1.UploadFrom=redirect\nFiles.1.TargetURI=CHK@x\nFiles.2.Name=c.html\nFiles.2.DataLength=4\nFiles.2.Metadata.ContentType=text/html\nData\nAAA<p/>";
    let m = decode_one(msg);
    assert_eq!(m.data.as_deref(), Some(&b"AAA<p/>"[..]));
    let ClientMessage::ClientPutComplexDir(d) = ClientMessage::parse(&m).unwrap() else {
        panic!()
    };
    assert_eq!(d.files[2].data_offset, 3);
    assert_eq!(d.files[2].content_type.as_deref(), Some("text/html"));
    assert_eq!(d.data_length, 7);
}

#[test]
fn errors_carry_fred_codes() {
    let code = |input: &[u8]| ClientMessage::parse(&decode_one(input)).unwrap_err().code;
    assert_eq!(
        code(b"ClientHello\nName=x\nEndMessage\n"),
        ProtocolErrorCode::MissingField
    );
    assert_eq!(
        code(b"ClientPut\nURI=CHK@\nEndMessage\n"),
        ProtocolErrorCode::MissingField
    );
    assert_eq!(
        code(b"ClientPut\nURI=CHK@\nIdentifier=a\nDataLength=x\nEndMessage\n"),
        ProtocolErrorCode::ErrorParsingNumber
    );
    assert_eq!(
        code(b"ClientPut\nURI=CHK@\nIdentifier=a\nUploadFrom=ftp\nEndMessage\n"),
        ProtocolErrorCode::InvalidField
    );
    assert_eq!(
        code(b"ClientGet\nURI=CHK@\nIdentifier=a\nPriorityClass=9\nEndMessage\n"),
        ProtocolErrorCode::InvalidField
    );
    assert_eq!(
        code(b"ClientGet\nURI=CHK@\nIdentifier=a\nPersistence=sometimes\nEndMessage\n"),
        ProtocolErrorCode::ErrorParsingNumber
    );
    assert_eq!(
        code(b"ClientGet\nURI=CHK@\nIdentifier=a\nGlobal=true\nEndMessage\n"),
        ProtocolErrorCode::NotSupported
    );
    assert_eq!(
        code(b"ClientGet\nURI=CHK@\nIdentifier=a\nReturnType=disk\nEndMessage\n"),
        ProtocolErrorCode::MissingField
    );
    // Chunked data goes to the asking connection only.
    assert_eq!(
        code(b"ClientGet\nURI=CHK@\nIdentifier=a\nReturnType=chunked\nPersistence=forever\nEndMessage\n"),
        ProtocolErrorCode::InvalidField
    );
    assert!(ClientMessage::parse(&decode_one(
        b"ClientGet\nURI=CHK@\nIdentifier=a\nReturnType=chunked\nEndMessage\n"
    ))
    .is_ok());
    assert_eq!(
        code(b"TestDDARequest\nDirectory=/x\nEndMessage\n"),
        ProtocolErrorCode::InvalidMessage
    );
    assert_eq!(
        code(b"FooBar\nEndMessage\n"),
        ProtocolErrorCode::InvalidMessage
    );
    // Unknown fields are ignored.
    assert!(ClientMessage::parse(&decode_one(b"GetNode\nSomeFutureField=1\nEndMessage\n")).is_ok());
    let e = ClientMessage::parse(&decode_one(
        b"ClientPut\nURI=CHK@\nIdentifier=a\nGlobal=true\nPersistence=forever\nUploadFrom=ftp\nEndMessage\n",
    ))
    .unwrap_err();
    assert_eq!(e.identifier.as_deref(), Some("a"));
    assert!(e.global);
    let reply = e.to_reply().to_message();
    assert_eq!(reply.get("Code"), Some("8"));
    assert_eq!(reply.get("Identifier"), Some("a"));
}

fn session() -> Session {
    Session::new(NodeHello::lichen(
        connection_identifier([0x42; 16]),
        vec![("ZSTD".into(), 0)],
    ))
}

#[test]
fn session_hello_then_requests() {
    let mut s = session();
    let Action::Reply(hello) = s.handle(&decode_one(HELLO)) else {
        panic!()
    };
    assert_eq!(hello.name, "NodeHello");
    assert_eq!(hello.get("FCPVersion"), Some("2.0"));
    assert_eq!(hello.get("CompressionCodecs"), Some("1 - ZSTD(0)"));
    let cid = hello.get("ConnectionIdentifier").unwrap();
    assert!(cid.parse::<u128>().is_err(), "must not be numeric");
    assert_eq!(s.client_name(), Some("fcpput-12345"));

    assert!(matches!(
        s.handle(&decode_one(PUT_DIRECT)),
        Action::Execute(ClientMessage::ClientPut(_))
    ));
    // Same identifier again: IdentifierCollision, connection stays open.
    let Action::Reject { reply, close } = s.handle(&decode_one(PUT_DIRECT)) else {
        panic!()
    };
    assert_eq!(reply.name, "IdentifierCollision");
    assert_eq!(reply.get("Identifier"), Some("id1700000000123456"));
    assert!(!close);
    // Same identifier on the global queue does not collide.
    let global = b"ClientGet\nURI=KSK@a\nIdentifier=id1700000000123456\nGlobal=true\nPersistence=reboot\nEndMessage\n";
    assert!(matches!(s.handle(&decode_one(global)), Action::Execute(_)));
    // Released after completion: may be reused.
    assert!(s.release("id1700000000123456", false));
    assert!(matches!(
        s.handle(&decode_one(PUT_DIRECT)),
        Action::Execute(_)
    ));

    // Late ClientHello: code 2, not fatal.
    let Action::Reject { reply, close } = s.handle(&decode_one(HELLO)) else {
        panic!()
    };
    assert_eq!(reply.get("Code"), Some("2"));
    assert!(!close);

    // WatchGlobal flags.
    assert_eq!(s.watching_global(), None);
    s.handle(&decode_one(
        b"WatchGlobal\nEnabled=true\nVerbosityMask=1\nEndMessage\n",
    ));
    assert_eq!(s.watching_global().map(|v| v.0), Some(1));
    s.handle(&decode_one(b"WatchGlobal\nEnabled=false\nEndMessage\n"));
    assert_eq!(s.watching_global(), None);

    // Void is ignored.
    assert_eq!(s.handle(&decode_one(b"Void\nEndMessage\n")), Action::Ignore);
}

#[test]
fn session_requires_hello_first() {
    let mut s = session();
    let Action::Reject { reply, close } = s.handle(&decode_one(PUT_DIRECT)) else {
        panic!()
    };
    assert_eq!(reply.name, "ProtocolError");
    assert_eq!(reply.get("Code"), Some("1"));
    assert_eq!(reply.get("Fatal"), Some("true"));
    assert!(close);
    // A malformed ClientHello first is the same error.
    let mut s = session();
    let Action::Reject { reply, close } =
        s.handle(&decode_one(b"ClientHello\nName=x\nEndMessage\n"))
    else {
        panic!()
    };
    assert_eq!(reply.get("Code"), Some("1"));
    assert!(close);
}

#[test]
fn session_testdda_flow() {
    use lichen_fcp::dda::DdaChallenge;
    use std::path::Path;
    let mut s = session();
    s.handle(&decode_one(HELLO));
    // A response without a request is refused.
    assert!(matches!(
        s.handle(&decode_one(
            b"TestDDAResponse\nDirectory=/tmp/d\nReadContent=x\nEndMessage\n"
        )),
        Action::Reject { close: false, .. }
    ));
    let req = b"TestDDARequest\nDirectory=/tmp/d\nWantReadDirectory=true\nWantWriteDirectory=true\nEndMessage\n";
    assert!(matches!(s.handle(&decode_one(req)), Action::Execute(_)));
    let reply = s.dda_challenge(DdaChallenge {
        directory: "/tmp/d".into(),
        read: Some(("/tmp/d/r1".into(), "tokenR".into())),
        write: Some(("/tmp/d/w1".into(), "tokenW".into())),
    });
    assert_eq!(reply.name, "TestDDAReply");
    assert_eq!(reply.get("ReadFilename"), Some("/tmp/d/r1"));
    assert_eq!(reply.get("ContentToWrite"), Some("tokenW"));
    assert!(matches!(
        s.handle(&decode_one(
            b"TestDDAResponse\nDirectory=/tmp/d\nReadContent=tokenR\nEndMessage\n"
        )),
        Action::Execute(_)
    ));
    let done = s
        .dda_complete(
            "/tmp/d",
            Path::new("/tmp/d"),
            Some("tokenR"),
            Some("tokenW\n"),
        )
        .unwrap();
    assert_eq!(done.get("ReadDirectoryAllowed"), Some("true"));
    assert_eq!(done.get("WriteDirectoryAllowed"), Some("true"));
    assert!(s.dda_allows(Path::new("/tmp/d/file.bin"), false));
    assert!(s.dda_allows(Path::new("/tmp/d/sub/out"), true));
    assert!(!s.dda_allows(Path::new("/etc/passwd"), false));
    assert!(!s.dda_allows(Path::new("/tmp/d/../../etc/passwd"), false));
    // What was proven for exactly that directory (the node reaches files
    // only through the handle of a directory that itself passed).
    let a = s.dda_access(Path::new("/tmp/d"));
    assert!(a.read && a.write);
    assert_eq!(s.dda_access(Path::new("/tmp/d/sub")), Default::default());
    // Another directory under the same path: nothing carries over.
    s.dda_forget(Path::new("/tmp/d"));
    assert_eq!(s.dda_access(Path::new("/tmp/d")), Default::default());
    assert!(!s.dda_allows(Path::new("/tmp/d/file.bin"), false));
}
