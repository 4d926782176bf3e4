//! Property tests: encode → decode in random chunkings gives back the
//! original messages, payloads included, buffered or streamed; arbitrary
//! bytes never panic the decoder, the parser or the session.

#![allow(clippy::unwrap_used)]

use lichen_fcp::replies::{connection_identifier, NodeHello};
use lichen_fcp::{ClientMessage, Decoder, Event, Fields, Limits, Message, Session};
use proptest::prelude::*;

fn arb_message() -> impl Strategy<Value = Message> {
    let name = "[A-Z][A-Za-z]{0,20}";
    let key = "[A-Za-z][A-Za-z0-9.]{0,15}"
        .prop_filter("DataLength is set by the codec", |k| k != "DataLength");
    // Any text without line breaks (the encoder would turn them into spaces).
    let value = "[^\r\n]{0,40}";
    let fields = prop::collection::vec((key, value), 0..12);
    let data = prop::option::of(prop::collection::vec(any::<u8>(), 0..3000));
    (name, fields, data).prop_map(|(name, fields, data)| {
        let fields: Fields = fields.into_iter().collect();
        match data {
            Some(d) => Message::with_data(name, fields, d),
            None => Message {
                name,
                fields,
                data: None,
            },
        }
    })
}

/// Feeds `input` cut at `cuts` and collects messages, reassembling streamed
/// payloads.
fn decode_chunked(limits: Limits, input: &[u8], cuts: &[usize]) -> Vec<Message> {
    let mut d = Decoder::new(limits);
    let mut out = Vec::new();
    let mut streaming: Option<(Message, u64, Vec<u8>)> = None;
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    points.push(0);
    points.push(input.len());
    points.sort_unstable();
    for w in points.windows(2) {
        d.feed(&input[w[0]..w[1]]);
        while let Some(ev) = d.next_event().unwrap() {
            match ev {
                Event::Message(m) => out.push(m),
                Event::Header {
                    message,
                    data_length,
                } => {
                    assert!(streaming.is_none());
                    streaming = Some((message, data_length, Vec::new()));
                }
                Event::Data(chunk) => {
                    assert!(!chunk.is_empty());
                    streaming.as_mut().unwrap().2.extend_from_slice(&chunk)
                }
                Event::DataEnd => {
                    let (mut m, len, data) = streaming.take().unwrap();
                    assert_eq!(len, data.len() as u64);
                    m.data = Some(data);
                    out.push(m);
                }
            }
        }
    }
    d.finish().unwrap();
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn round_trip_in_random_chunks(
        msgs in prop::collection::vec(arb_message(), 1..4),
        cuts in prop::collection::vec(any::<usize>(), 0..20),
        inline in 0u64..4000,
        crlf in any::<bool>(),
    ) {
        let mut wire = Vec::new();
        for m in &msgs {
            let mut one = Vec::new();
            m.write_to(&mut one).unwrap();
            prop_assert_eq!(&one, &m.encode());
            if crlf {
                // Turn header line endings into CRLF; payload stays raw.
                let header_len = one.len() - m.data.as_ref().map_or(0, Vec::len);
                let mut converted = Vec::new();
                for &b in &one[..header_len] {
                    if b == b'\n' { converted.push(b'\r'); }
                    converted.push(b);
                }
                converted.extend_from_slice(&one[header_len..]);
                one = converted;
            }
            wire.extend_from_slice(&one);
        }
        let limits = Limits { inline_data_limit: inline, ..Limits::default() };
        let got = decode_chunked(limits, &wire, &cuts);
        prop_assert_eq!(got, msgs);
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..4000),
        cuts in prop::collection::vec(any::<usize>(), 0..10),
        small in any::<bool>(),
    ) {
        let limits = if small {
            Limits { max_line_bytes: 64, max_fields: 8, max_header_bytes: 512, max_data_length: 1000, inline_data_limit: 100 }
        } else {
            Limits::default()
        };
        let mut d = Decoder::new(limits);
        let mut s = Session::new(NodeHello::lichen(connection_identifier([1; 16]), vec![]));
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        points.push(0);
        points.push(bytes.len());
        points.sort_unstable();
        'outer: for w in points.windows(2) {
            d.feed(&bytes[w[0]..w[1]]);
            loop {
                match d.next_event() {
                    Ok(Some(Event::Message(m))) => { let _ = ClientMessage::parse(&m); let _ = s.handle(&m); }
                    Ok(Some(Event::Header { message, data_length })) => { let _ = s.handle_header(&message, data_length); }
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(e) => {
                        let _ = s.handle_decode_error(&e);
                        if e.is_fatal() { break 'outer; }
                    }
                }
            }
            // Memory bound: a partial line or a small inline payload at most.
            prop_assert!(d.buffered() <= limits.max_line_bytes + 1 + limits.inline_data_limit as usize + (w[1] - w[0]));
        }
        let _ = d.finish();
    }

    #[test]
    fn session_survives_any_field_values(
        name in prop::sample::select(vec![
            "ClientHello", "ClientPut", "ClientGet", "ClientPutComplexDir", "ClientPutDiskDir",
            "GenerateSSK", "TestDDARequest", "TestDDAResponse", "WatchGlobal", "ListPersistentRequests",
            "RemovePersistentRequest", "ModifyPersistentRequest", "GetRequestStatus", "SubscribeUSK",
            "UnsubscribeUSK", "GetNode", "ListPeers", "Disconnect", "Shutdown", "Void",
        ]),
        fields in prop::collection::vec((
            prop::sample::select(vec![
                "Name", "ExpectedVersion", "URI", "Identifier", "Verbosity", "MaxRetries", "PriorityClass",
                "Global", "Persistence", "UploadFrom", "DataLength", "Filename", "TargetURI", "ReturnType",
                "MaxSize", "Files.0.Name", "Files.0.DataLength", "Files.0.UploadFrom", "Files.1.Name",
                "Directory", "WantReadDirectory", "Enabled", "VerbosityMask", "FileHash",
            ]),
            "[-+0-9a-zA-Z@/]{0,12}",
        ), 0..16),
        data in prop::option::of(prop::collection::vec(any::<u8>(), 0..64)),
    ) {
        let m = Message { name: name.to_string(), fields: fields.into_iter().collect(), data };
        let mut s = Session::new(NodeHello::lichen(connection_identifier([1; 16]), vec![]));
        let _ = s.handle(&Message::new("ClientHello").field("Name", "n").field("ExpectedVersion", "2.0"));
        let _ = s.handle(&m);
        let _ = ClientMessage::parse(&m);
    }
}
