//! `lichen status`: the node's figures and its persistent request queue.

use super::conn::{FcpOpts, Node};
use super::progress::block_counts;
use super::reply::{
    check_refusal, describe, fetch_words, field_u64, insert_words, new_identifier, protocol_error,
};
use super::term::{flush_out, with_std_term, write_out, Term};
use anyhow::Result;
use indicatif::HumanBytes;
use lichen_fcp::{parse_bool, Message};

/// Prints the node's status and its persistent request queue.
///
/// # Errors
/// The node cannot be reached or refuses.
pub fn status(fcp: &FcpOpts) -> Result<()> {
    with_std_term(|t| status_with(fcp, t))
}

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

fn status_with(fcp: &FcpOpts, t: &mut Term<'_>) -> Result<()> {
    let mut c = Node::connect(&fcp.fcp)?;
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
    if let Some(r) = node.get("volatile.lichen.reachability") {
        // With a port mapping, the address peers dial (IP and port).
        let public = node
            .get("volatile.lichen.mappedAddress")
            .or_else(|| node.get("volatile.lichen.publicAddress"));
        let mapping = node.get("volatile.lichen.portMapping");
        let keeps = node.get("volatile.lichen.natKeepsPorts");
        s.push_str(&format!(
            "Reachability: {}\n",
            crate::status::reachability_text(r, public, mapping, keeps)
        ));
    }
    if let (Some(tried), Some(linked)) = (
        field_u64(node, "volatile.lichen.punches"),
        field_u64(node, "volatile.lichen.punched"),
    ) {
        if tried > 0 {
            s.push_str(&format!(
                "Hole punches: {tried} tried, {linked} brought a direct link\n"
            ));
        }
    }
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::cli::test_support::*;

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
    fn status_shows_reachability_and_the_public_address() {
        let out = status_of(&[
            ("version", "Lichen,0.1.0"),
            ("volatile.lichen.reachability", "behind-nat"),
            ("volatile.lichen.publicAddress", "198.51.100.7"),
        ]);
        assert!(
            out.contains(
                "Reachability: behind NAT (not reachable): peers cannot dial this node; \
                 it dials out; public address 198.51.100.7\n"
            ),
            "{out}"
        );
        assert!(!out.contains("Hole punches"), "none tried: {out}");
        let out = status_of(&[
            ("version", "Lichen,0.1.0"),
            ("volatile.lichen.punches", "3"),
            ("volatile.lichen.punched", "2"),
        ]);
        assert!(
            out.contains("Hole punches: 3 tried, 2 brought a direct link\n"),
            "{out}"
        );
        let out = status_of(&[("version", "Lichen,0.1.0")]);
        assert!(!out.contains("Reachability"), "an older node: {out}");
        let out = status_of(&[
            ("version", "Lichen,0.1.0"),
            ("volatile.lichen.reachability", "reachable"),
            ("volatile.lichen.publicAddress", "198.51.100.7"),
            ("volatile.lichen.portMapping", "upnp"),
            ("volatile.lichen.mappedAddress", "198.51.100.7:9489"),
        ]);
        assert!(
            out.contains(
                "Reachability: reachable (behind NAT, port mapped by UPnP); \
                 public address 198.51.100.7:9489\n"
            ),
            "{out}"
        );
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
}
