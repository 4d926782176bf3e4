//! Hostile input: every abuse gives a typed error (with the right
//! ProtocolError code) and bounded memory, never a panic.

#![allow(clippy::unwrap_used)]

use lichen_fcp::replies::{connection_identifier, NodeHello};
use lichen_fcp::{Action, DecodeError, Decoder, Event, Limits, ProtocolErrorCode, Session};

fn first_error(limits: Limits, input: &[u8]) -> DecodeError {
    let mut d = Decoder::new(limits);
    d.feed(input);
    loop {
        match d.next_event() {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("no error"),
            Err(e) => return e,
        }
    }
}

#[test]
fn non_numeric_data_length() {
    for bad in ["abc", "-5", "", "12 ", "0x10", "1e9"] {
        let input = format!("ClientPut\nIdentifier=a\nDataLength={bad}\nData\nxxxx");
        let e = first_error(Limits::default(), input.as_bytes());
        assert!(
            matches!(e, DecodeError::BadDataLength { .. }),
            "{bad}: {e:?}"
        );
        assert!(e.is_fatal());
        assert_eq!(e.protocol_code(), ProtocolErrorCode::ErrorParsingNumber);
    }
}

#[test]
fn huge_data_length() {
    let e = first_error(
        Limits::default(),
        b"ClientPut\nDataLength=99999999999999999999999999\nData\n",
    );
    assert!(matches!(
        e,
        DecodeError::DataTooLong {
            length: u64::MAX,
            ..
        }
    ));
    let limits = Limits {
        max_data_length: 1000,
        ..Limits::default()
    };
    let e = first_error(limits, b"ClientPut\nDataLength=1001\nData\n");
    assert!(matches!(
        e,
        DecodeError::DataTooLong {
            length: 1001,
            limit: 1000
        }
    ));
    assert_eq!(e.protocol_code(), ProtocolErrorCode::InvalidField);
}

#[test]
fn data_without_length() {
    let e = first_error(Limits::default(), b"ClientPut\nIdentifier=a\nData\nxx");
    assert!(matches!(e, DecodeError::MissingDataLength { .. }));
    assert_eq!(e.protocol_code(), ProtocolErrorCode::MissingField);
}

#[test]
fn huge_line_is_refused_without_buffering_it() {
    let mut d = Decoder::new(Limits::default());
    let chunk = vec![b'A'; 16 * 1024];
    let mut err = None;
    for _ in 0..64 {
        d.feed(&chunk);
        match d.next_event() {
            Ok(None) => assert!(d.buffered() <= 64 * 1024 + 1),
            Err(e) => {
                err = Some(e);
                break;
            }
            Ok(Some(ev)) => panic!("{ev:?}"),
        }
    }
    assert_eq!(err, Some(DecodeError::LineTooLong { limit: 64 * 1024 }));
    // After a fatal error nothing more is buffered and the error repeats.
    d.feed(&chunk);
    assert_eq!(d.buffered(), 0);
    assert!(d.next_event().is_err());
    // A long field line inside a message too.
    let mut input = b"ClientGet\nURI=".to_vec();
    input.extend(vec![b'x'; 70_000]);
    input.extend_from_slice(b"\nEndMessage\n");
    assert!(matches!(
        first_error(Limits::default(), &input),
        DecodeError::LineTooLong { .. }
    ));
}

#[test]
fn too_many_fields_and_too_big_header() {
    let mut input = b"ClientGet\n".to_vec();
    for i in 0..20_000 {
        input.extend_from_slice(format!("K{i}=v\n").as_bytes());
    }
    input.extend_from_slice(b"EndMessage\n");
    assert!(matches!(
        first_error(Limits::default(), &input),
        DecodeError::TooManyFields { limit: 16384, .. }
    ));
    let limits = Limits {
        max_header_bytes: 10_000,
        ..Limits::default()
    };
    assert!(matches!(
        first_error(limits, &input),
        DecodeError::HeaderTooLarge { limit: 10_000 }
    ));
    // Empty lines and comments count towards the header limit too.
    let mut input = b"ClientGet\n".to_vec();
    input.extend(vec![b'\n'; 20_000]);
    assert!(matches!(
        first_error(limits, &input),
        DecodeError::HeaderTooLarge { .. }
    ));
}

#[test]
fn truncated_input() {
    for input in [
        &b"ClientHello\nName=x\n"[..],
        b"ClientHel",
        b"ClientPut\nDataLength=10\nData\nabc",
    ] {
        let mut d = Decoder::new(Limits::default());
        d.feed(input);
        assert_eq!(d.next_event(), Ok(None));
        assert_eq!(d.finish(), Err(DecodeError::Truncated));
    }
    // A streamed payload cut short.
    let mut d = Decoder::new(Limits {
        inline_data_limit: 0,
        ..Limits::default()
    });
    d.feed(b"ClientPut\nDataLength=10\nData\nabc");
    assert!(matches!(d.next_event(), Ok(Some(Event::Header { .. }))));
    assert!(matches!(d.next_event(), Ok(Some(Event::Data(_)))));
    assert_eq!(d.next_event(), Ok(None));
    assert_eq!(d.finish(), Err(DecodeError::Truncated));
    // Clean end between messages.
    let mut d = Decoder::new(Limits::default());
    d.feed(b"Void\nEndMessage\n\r\n");
    assert!(d.next_event().unwrap().is_some());
    assert_eq!(d.next_event(), Ok(None));
    assert_eq!(d.finish(), Ok(()));
}

#[test]
fn binary_garbage() {
    let garbage: Vec<u8> = (0..50_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut d = Decoder::new(Limits::default());
    d.feed(&garbage);
    let mut n = 0;
    while n < 100_000 {
        match d.next_event() {
            Ok(Some(_)) => n += 1,
            Ok(None) => break,
            Err(e) if e.is_fatal() => break,
            Err(_) => n += 1,
        }
    }
}

#[test]
fn big_upload_streams_with_bounded_memory() {
    // 64 MiB announced, fed in 64 KiB socket reads: the decoder never holds
    // more than one read, and hands every byte out.
    let total: u64 = 64 << 20;
    let mut d = Decoder::new(Limits::default());
    d.feed(format!("ClientPut\nURI=CHK@\nIdentifier=big\nDataLength={total}\nData\n").as_bytes());
    let Some(Event::Header { data_length, .. }) = d.next_event().unwrap() else {
        panic!()
    };
    assert_eq!(data_length, total);
    let chunk = vec![0x5a; 64 * 1024];
    let mut got = 0u64;
    let mut ended = false;
    while !ended {
        if got < total {
            d.feed(&chunk);
        }
        assert!(d.buffered() <= chunk.len());
        while let Some(ev) = d.next_event().unwrap() {
            match ev {
                Event::Data(b) => got += b.len() as u64,
                Event::DataEnd => ended = true,
                other => panic!("{other:?}"),
            }
        }
    }
    assert_eq!(got, total);
    assert!(d.is_idle());
}

#[test]
fn session_maps_decode_errors() {
    let hello = NodeHello::lichen(connection_identifier([9; 16]), vec![]);
    let mut s = Session::new(hello.clone());
    // Before ClientHello: code 1, fatal.
    let Action::Reject { reply, close } =
        s.handle_decode_error(&DecodeError::LineTooLong { limit: 1 })
    else {
        panic!()
    };
    assert_eq!(reply.get("Code"), Some("1"));
    assert!(close);

    let mut s = Session::new(hello);
    let hello_msg = lichen_fcp::Message::new("ClientHello")
        .field("Name", "x")
        .field("ExpectedVersion", "2.0");
    assert!(matches!(s.handle(&hello_msg), Action::Reply(_)));
    let Action::Reject { reply, close } =
        s.handle_decode_error(&DecodeError::BadDataLength { value: "x".into() })
    else {
        panic!()
    };
    assert_eq!(reply.get("Code"), Some("6"));
    assert_eq!(reply.get("Fatal"), Some("true"));
    assert!(close);
    let Action::Reject { reply, close } = s.handle_decode_error(&DecodeError::BadEndMarker {
        name: "GetNode".into(),
        marker: "Bogus".into(),
        identifier: Some("q".into()),
    }) else {
        panic!()
    };
    assert_eq!(reply.get("Code"), Some("3"));
    assert_eq!(reply.get("Identifier"), Some("q"));
    assert!(!close);
    // Unknown message: code 7, connection stays.
    let Action::Reject { reply, close } = s.handle(&lichen_fcp::Message::new("Frobnicate")) else {
        panic!()
    };
    assert_eq!(reply.get("Code"), Some("7"));
    assert!(!close);
    // Payload on a message that takes none.
    let m = lichen_fcp::Message::with_data("GetNode", Default::default(), vec![1, 2, 3]);
    assert!(matches!(s.handle(&m), Action::Reject { close: false, .. }));
    // ClientPut whose DataLength disagrees with what was attached (sent
    // with EndMessage instead of Data).
    let m = lichen_fcp::Message::new("ClientPut")
        .field("URI", "CHK@")
        .field("Identifier", "p")
        .field("DataLength", "5");
    let Action::Reject { reply, .. } = s.handle(&m) else {
        panic!()
    };
    assert_eq!(reply.get("Code"), Some("7"));
}
