//! `lichen peers`: list, add and remove the node's peers.

use super::conn::{FcpOpts, Node};
use super::reply::{check_refusal, new_identifier};
use super::term::{with_std_term, write_out, Term};
use anyhow::{anyhow, bail, Context, Result};
use lichen_fcp::{parse_bool, Message};
use std::fs::File;
use std::io::{self, Read};

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
    /// Add a friend from an invitation (what `lichen invite` printed on
    /// their node: `lichen-invite:…`), or from a noderef file (what
    /// `lichen noderef` printed), or `-` for a noderef on stdin. Friends
    /// are remembered and reconnected; a darknet node talks only to
    /// friends.
    Add {
        /// Invitation, noderef file, or `-`
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
        Some(PeersAction::Add { file }) if file.trim_start().starts_with(INVITATION_PREFIX) => {
            peers_redeem(fcp, file, t)
        }
        Some(PeersAction::Add { file }) => peers_add(fcp, file, &mut io::stdin().lock(), t),
        Some(PeersAction::Remove { peer }) => peers_remove(fcp, peer, t),
    })
}

/// Largest noderef file read.
const MAX_NODEREF_FILE: u64 = 64 * 1024;

const INVITATION_PREFIX: &str = lichen_link::invitation::PREFIX;

/// `lichen invite`.
#[derive(clap::Args, Debug)]
pub struct InviteArgs {
    /// How long the invitation can be used, in hours (1 to 720)
    #[arg(long, default_value_t = crate::peers::fcp::DEFAULT_INVITATION_HOURS,
          value_parser = clap::value_parser!(u64).range(1..=720))]
    pub hours: u64,
}

/// `lichen invite`: print a one-time invitation for a friend.
pub fn invite(fcp: &FcpOpts, a: &InviteArgs) -> Result<()> {
    with_std_term(|t| {
        let mut c = Node::connect(&fcp.fcp)?;
        let id = new_identifier("invite");
        c.send(
            &Message::new("CreateInvitation")
                .field("Identifier", &id)
                .field("Hours", a.hours.to_string()),
        )?;
        let m = loop {
            let m = c.next_message()?;
            check_refusal(&m, &id)?;
            if m.name == "Invitation" {
                break m;
            }
        };
        let _ = c.send(&Message::new("Disconnect"));
        let text = m
            .get("Invitation")
            .ok_or_else(|| anyhow!("the node answered an invitation without one"))?;
        let out = format!(
            "{text}\n\nGive this to one friend, over a channel you trust: on their node,\n  lichen peers add {text}\nmakes you friends. It works once, for {} hours, and names this node's address.\n",
            a.hours
        );
        write_out(t.out, out.as_bytes())
    })
}

fn peers_redeem(fcp: &FcpOpts, text: &str, t: &mut Term<'_>) -> Result<()> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // Checked here first: a clear error without a round trip.
    lichen_link::Invitation::parse(text, now)
        .map_err(|e| anyhow!("not a usable invitation: {e}"))?;
    let peer = add_peer(
        fcp,
        Message::new("AddPeer").field(crate::peers::fcp::INVITATION_FIELD, text.trim()),
    )?;
    let line = format!(
        "added friend {} by invitation; it knows this node now too\n",
        peer.get("identity").unwrap_or("?")
    );
    write_out(t.out, line.as_bytes())
}

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
    let peer = add_peer(
        fcp,
        Message::new("AddPeer")
            .field("Trust", "NORMAL")
            .field("Visibility", "NO")
            .field(crate::peers::fcp::NODEREF_FIELD, text),
    )?;
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

/// The noderef the node running at FCP address `fcp` gives out now, if
/// it runs and is the node `offline` (its noderef made from the data
/// directory) names: the same static key.
#[must_use]
pub fn running_noderef(fcp: &str, offline: &str) -> Option<String> {
    let want = lichen_link::NodeRef::parse(offline).ok()?.static_key;
    let mut c = Node::connect(fcp).ok()?;
    let id = new_identifier("getnode");
    c.send(&Message::new("GetNode").field("Identifier", &id))
        .ok()?;
    let m = c.next_message().ok()?;
    let _ = c.send(&Message::new("Disconnect"));
    let text = m.get(crate::peers::fcp::NODEREF_FIELD)?;
    let r = lichen_link::NodeRef::parse(text).ok()?;
    (m.name == "NodeData" && r.static_key == want).then(|| text.to_string())
}

/// Send `AddPeer` (`m`, given an identifier here) and wait for its
/// `Peer`.
fn add_peer(fcp: &FcpOpts, m: Message) -> Result<Message> {
    let mut c = Node::connect(&fcp.fcp)?;
    let id = new_identifier("addpeer");
    c.send(&m.field("Identifier", &id))?;
    let peer = loop {
        let m = c.next_message()?;
        check_refusal(&m, &id)?;
        if m.name == "Peer" {
            break m;
        }
    };
    let _ = c.send(&Message::new("Disconnect"));
    Ok(peer)
}

fn peers_remove(fcp: &FcpOpts, which: &str, t: &mut Term<'_>) -> Result<()> {
    let mut c = Node::connect(&fcp.fcp)?;
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
    let mut c = Node::connect(&fcp.fcp)?;
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
    let mut rows: Vec<Vec<String>> = vec![[
        "IDENTITY", "KIND", "STATUS", "LOCATION", "SENT", "RECEIVED",
    ]
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
            // Bytes on the link that is up, as written and read on the
            // wire (`-` without a link).
            get("volatile.lichen.bytesSent"),
            get("volatile.lichen.bytesReceived"),
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
    use std::fs;
    use std::io::Cursor;

    /// A running node's noderef is printed only when it is the node the
    /// data directory names (same static key).
    #[test]
    fn the_running_nodes_noderef_when_it_is_this_node() {
        use crate::cli::test_support::{fake_node, msg};
        let mine = lichen_link::NodeKeys::from_static_secret([7; 32]);
        let other = lichen_link::NodeKeys::from_static_secret([8; 32]);
        let offline =
            lichen_link::NodeRef::new(&mine, vec!["127.0.0.1:9489".parse().unwrap()], None)
                .to_text(&mine);
        for (keys, want) in [(&mine, true), (&other, false)] {
            let live =
                lichen_link::NodeRef::new(keys, vec!["198.51.100.7:9489".parse().unwrap()], None)
                    .to_text(keys);
            let answer = live.clone();
            let (fcp, h) = fake_node(move |c| {
                let g = c.expect("GetNode");
                let id = g.get("Identifier").unwrap().to_string();
                c.send(&msg(
                    "NodeData",
                    &[
                        ("Identifier", &id),
                        (crate::peers::fcp::NODEREF_FIELD, &answer),
                    ],
                ));
            });
            let got = running_noderef(&fcp.fcp, &offline);
            h.join().unwrap();
            assert_eq!(got, want.then_some(live));
        }
        assert_eq!(running_noderef("127.0.0.1:1", &offline), None, "no node");
    }

    #[test]
    fn peers_table_hides_addresses_unless_asked() {
        let p = Message::new("Peer")
            .field("identity", "IDENT")
            .field("opennet", "false")
            .field("location", "0.250000")
            .field("physical.tcp", "10.1.2.3:9489")
            .field("volatile.status", "CONNECTED")
            .field("volatile.lichen.bytesSent", "1234")
            .field("volatile.lichen.bytesReceived", "56789");
        let t = render_peers(std::slice::from_ref(&p), false);
        assert_eq!(t.lines().count(), 2, "{t}");
        assert!(t.contains("IDENT") && t.contains("friend") && t.contains("connected"));
        let row: Vec<&str> = t.lines().nth(1).unwrap().split_whitespace().collect();
        assert_eq!(row[4..], ["1234", "56789"], "{t}");
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
