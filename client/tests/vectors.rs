//! Metadata test vectors (also in docs/metadata.md): a format change
//! breaks this test.
#![allow(clippy::unwrap_used)]

use lichen_client::metadata::{Hash, Inline, Manifest, Metadata, Redirect, Segment, Splitfile};

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn vectors() -> Vec<(&'static str, Metadata)> {
    let redirect = Metadata::Redirect(Redirect {
        target: "KSK@a".into(),
        mime: Some("text/plain".into()),
        size: None,
        sha256: None,
    });
    let inline = Metadata::Inline(Inline {
        mime: None,
        codec: 0,
        size: 2,
        data: b"hi".to_vec(),
        sha256: None,
    });
    let split = Metadata::Splitfile(Splitfile {
        size: 40000,
        compressed_size: 40000,
        codec: 0,
        mime: None,
        sha256: Hash([0xaa; 32]),
        metadata: false,
        segments: vec![Segment {
            data: 2,
            check: 2,
            keys: vec![0x11; 4 * 64],
        }],
    });
    let mut man = Manifest {
        default: Some("index.html".into()),
        ..Manifest::default()
    };
    man.entries.insert("index.html".into(), inline.clone());
    let manifest = Metadata::Manifest(man);
    vec![
        ("redirect", redirect),
        ("inline", inline),
        ("splitfile", split),
        ("manifest", manifest),
    ]
}

const EXPECTED: &[(&str, &str)] = &[
    (
        "redirect",
        "8201a1687265646972656374a266746172676574654b534b4061646d696d656a746578742f706c61696e",
    ),
    (
        "inline",
        "8201a166696e6c696e65a365636f646563006473697a65026464617461426869",
    ),
    (
        "manifest",
        "8201a1686d616e6966657374a26764656661756c746a696e6465782e68746d6c67656e7472696573a16a696e6465782e68746d6ca166696e6c696e65a365636f646563006473697a65026464617461426869",
    ),
    (
        "splitfile",
        "8201a16973706c697466696c65a56473697a65199c406f636f6d707265737365645f73697a65199c4065636f64656300667368613235365820aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa687365676d656e747381a364646174610265636865636b02646b65797359010011111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111",
    ),
];

#[test]
fn metadata_vectors() {
    for (name, m) in vectors() {
        let bytes = m.to_bytes();
        println!("{name}: {}", hex(&bytes));
        assert_eq!(Metadata::from_bytes(&bytes).unwrap(), m);
        let (_, want) = EXPECTED.iter().find(|(n, _)| *n == name).unwrap();
        assert_eq!(&hex(&bytes), want, "{name}");
    }
}
