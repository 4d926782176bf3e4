//! `lichen genkey`: a fresh SSK keypair from the node.

use super::conn::{FcpOpts, Node};
use super::reply::{check_refusal, concerns, new_identifier};
use super::term::{print_line, with_std_term, Term};
use anyhow::{anyhow, Result};
use lichen_fcp::Message;

/// Generates an SSK keypair and prints the insert URI, then the request URI.
///
/// # Errors
/// The node cannot be reached or refuses.
pub fn genkey(fcp: &FcpOpts) -> Result<()> {
    with_std_term(|t| genkey_with(fcp, t))
}

fn genkey_with(fcp: &FcpOpts, t: &mut Term<'_>) -> Result<()> {
    let mut c = Node::connect(&fcp.fcp)?;
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::cli::test_support::*;
    use std::io::Read;
    use std::net::TcpListener;
    use std::thread;

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
}
