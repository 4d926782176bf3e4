//! The gateway's own pages: plain server-rendered HTML, no scripts.

use std::fmt::Write as _;

/// Escape text for HTML content and attribute values.
pub use lichen_filter::escape_html as esc;

const STYLE: &str = "body{font-family:sans-serif;max-width:60em;margin:1em auto;padding:0 1em;color:#222}\
h1{font-size:1.4em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left}\
.warn{background:#fff3cd;border:1px solid #e0c060;padding:.5em 1em}.err{background:#fde;border:1px solid #c99;padding:.5em 1em}\
.ok{background:#e6f4e6;border:1px solid #9c9;padding:.5em 1em}\
code{word-break:break-all}input[type=text]{width:100%;box-sizing:border-box}";

/// A complete page around `body`.
#[must_use]
pub fn page(title: &str, body: &str) -> String {
    page_with_head(title, "", body)
}

/// A complete page with extra `<head>` content.
#[must_use]
pub fn page_with_head(title: &str, head: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{t} - Lichen</title>{head}<style>{STYLE}</style></head>\n<body><p><a href=\"/\">Lichen</a></p>\n<h1>{t}</h1>\n{body}\n</body></html>\n",
        t = esc(title)
    )
}

/// An error page.
#[must_use]
pub fn error(title: &str, detail: &str) -> String {
    page(
        title,
        &format!("<div class=\"err\"><p>{}</p></div>", esc(detail)),
    )
}

/// The page shown while a fetch runs; it reloads itself.
#[must_use]
pub fn progress(path: &str, done: u64, needed: u64) -> String {
    let pct = (done.min(needed) * 100).checked_div(needed).unwrap_or(0);
    page_with_head(
        "Fetching",
        "<meta http-equiv=\"refresh\" content=\"1\">",
        &format!(
            "<p>Fetching <code>{}</code>.</p><p>{done} of {needed} blocks ({pct}%). This page reloads itself until the document is ready.</p>",
            esc(path)
        ),
    )
}

/// The warning before an outside link.
#[must_use]
pub fn external_link(url: &str) -> String {
    page(
        "Leaving Lichen",
        &format!(
            "<div class=\"warn\"><p>This link leads to the ordinary web, outside Lichen. \
             Following it connects your browser directly to that server: it will see your IP address \
             and can tell that you read the page that linked to it. Lichen cannot protect you there.</p></div>\
             <p><code>{u}</code></p><p><a href=\"{u}\" rel=\"noopener noreferrer\">Continue to the outside web</a> \
             &middot; <a href=\"/\">no, back to Lichen</a></p>",
            u = esc(url)
        ),
    )
}

/// The warning before a download of a type the filter cannot check.
#[must_use]
pub fn download_warning(path: &str, mime: &str, size: u64, reason: &str) -> String {
    page(
        "Download this file?",
        &format!(
            "<div class=\"warn\"><p>{}</p><p>Opening it in another program may make that program contact \
             the outside web and reveal that you read it. Open it only if you trust the program with it \
             (or while offline).</p></div>\
             <p>Type <code>{}</code>, {size} bytes.</p>\
             <p><a href=\"{}?forcedownload\">Save it to disk</a></p>",
            esc(reason),
            esc(mime),
            esc(path)
        ),
    )
}

/// The answer to a key request from another site: nothing was fetched;
/// a link to the same address opens it (following it is a same-origin
/// navigation, which the gateway serves).
#[must_use]
pub fn cross_site(path: &str) -> String {
    page(
        "Opened from another site",
        &format!(
            "<div class=\"warn\"><p>Another web site asked this gateway for a document. It was not fetched: \
             otherwise any web page could make your node fetch what it likes, or tell from how fast the answer \
             comes what your node holds.</p></div>\
             <p>If you want to open it, follow this link:</p><p><a href=\"{p}\"><code>{p}</code></a></p>",
            p = esc(path)
        ),
    )
}

/// Status figures for the home page.
#[derive(Debug, Default)]
pub struct Status {
    /// Connected peers.
    pub peers: usize,
    /// Whether peers can dial this node, and its public address, as
    /// shown (`lichen status`'s `Reachability:` line).
    pub reachability: String,
    /// Bandwidth settings, as shown.
    pub bandwidth: String,
    /// Location in [0, 1).
    pub location: f64,
    /// (name, bytes used, budget, blocks) per store space.
    pub spaces: Vec<(&'static str, u64, u64, u64)>,
    /// Uptime in seconds.
    pub uptime_s: u64,
    /// Fetches the gateway is running or holds.
    pub gateway_jobs: usize,
    /// Fetches the gateway started since the node started.
    pub gateway_started: u64,
    /// Key requests from other sites refused since the node started.
    pub cross_site_refused: u64,
    /// The node has no config file yet: offer the first-run page.
    pub first_run: bool,
    /// What the user should act on (`crate::status::alerts`).
    pub alerts: Vec<String>,
    /// Traffic of the last hour, a minute a point: (seconds ago, bytes a
    /// second sent, received), oldest first.
    pub traffic: Vec<(u64, u64, u64)>,
}

/// The traffic of the last hour as a server-drawn SVG graph: sent in red,
/// received in blue, scaled to the highest rate.
#[must_use]
pub fn traffic_graph(rates: &[(u64, u64, u64)]) -> String {
    if rates.len() < 2 {
        return "<p><small>The traffic graph fills in over the node's first minutes.</small></p>"
            .to_owned();
    }
    let (w, h) = (360.0_f64, 100.0_f64);
    let top = rates
        .iter()
        .map(|&(_, s, r)| s.max(r))
        .max()
        .unwrap_or(0)
        .max(1);
    #[allow(clippy::cast_precision_loss)]
    let line = |pick: fn(&(u64, u64, u64)) -> u64| {
        rates
            .iter()
            .map(|p| {
                let x = w - (p.0 as f64 / 3600.0 * w).min(w);
                let y = h - pick(p) as f64 / top as f64 * h;
                format!("{x:.1},{y:.1}")
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
         viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"traffic, last hour\" id=\"traffic\">\
         <rect width=\"{w}\" height=\"{h}\" fill=\"#fafafa\" stroke=\"#ccc\"/>\
         <polyline class=\"sent\" fill=\"none\" stroke=\"#c33\" points=\"{}\"/>\
         <polyline class=\"received\" fill=\"none\" stroke=\"#2a6fdb\" points=\"{}\"/></svg>\
         <p><small>Last hour, a point a minute; top: {}/s. Red: sent; blue: received.</small></p>",
        line(|p| p.1),
        line(|p| p.2),
        rate_text(top)
    )
}

fn rate_text(bytes_per_s: u64) -> String {
    if bytes_per_s >= 1 << 20 {
        mib(bytes_per_s)
    } else {
        format!("{:.1} KiB", bytes_per_s as f64 / 1024.0)
    }
}

/// A row of the request queue.
#[derive(Debug)]
pub struct QueueRow {
    /// Identifier.
    pub identifier: String,
    /// What (ClientGet, ClientPut, …).
    pub kind: String,
    /// URI if known.
    pub uri: Option<String>,
    /// Progress in blocks (done, total).
    pub progress: (u64, u64),
    /// State as text.
    pub state: String,
}

fn mib(b: u64) -> String {
    #[allow(clippy::cast_precision_loss)]
    let m = b as f64 / 1_048_576.0;
    format!("{m:.1} MiB")
}

/// The home page.
#[must_use]
pub fn home(
    status: &Status,
    csrf: &str,
    queue: &[QueueRow],
    uploads: &[(String, String)],
) -> String {
    let mut b = String::new();
    if !status.alerts.is_empty() {
        b.push_str("<div class=\"warn\" id=\"alerts\"><ul>");
        for a in &status.alerts {
            let _ = write!(b, "<li>{}</li>", esc(a));
        }
        b.push_str("</ul></div>");
    }
    if status.first_run {
        b.push_str(
            "<div class=\"warn\"><p>A new node: choose its disk space, bandwidth and \
             network on <a href=\"/first-run\">the set-up page</a>.</p></div>",
        );
    }
    b.push_str("<p><a href=\"/peers\">Peers</a> · <a href=\"/settings\">Settings</a></p>");
    b.push_str(
        "<form method=\"get\" action=\"/\"><p><label>Open a key:<br>\
         <input type=\"text\" name=\"key\" placeholder=\"USK@…/site/1/ or CHK@… or KSK@…\"></label> \
         <button type=\"submit\">Open</button></p></form>",
    );
    let _ = write!(
        b,
        "<h2>Node</h2><table><tr><th>Peers</th><td>{}</td></tr>\
         <tr><th>Reachability</th><td>{}</td></tr><tr><th>Location</th><td>{:.6}</td></tr>\
         <tr><th>Uptime</th><td>{} s</td></tr><tr><th>Bandwidth</th><td>{}</td></tr>\
         <tr><th>Gateway fetches held</th><td>{}</td></tr>\
         <tr><th>Gateway fetches started</th><td>{}</td></tr>\
         <tr><th>Key requests from other sites refused</th><td>{}</td></tr>",
        status.peers,
        esc(&status.reachability),
        status.location,
        status.uptime_s,
        esc(&status.bandwidth),
        status.gateway_jobs,
        status.gateway_started,
        status.cross_site_refused
    );
    for (name, used, budget, blocks) in &status.spaces {
        let _ = write!(
            b,
            "<tr><th>Store: {name}</th><td><progress max=\"{}\" value=\"{}\"></progress> \
             {} of {} ({blocks} blocks)</td></tr>",
            (*budget).max(1),
            used.min(budget),
            mib(*used),
            mib(*budget)
        );
    }
    b.push_str("</table><h3>Traffic</h3>");
    b.push_str(&traffic_graph(&status.traffic));
    let _ = write!(
        b,
        "<h2>Insert a file</h2><form method=\"post\" action=\"/upload\" enctype=\"multipart/form-data\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\"><p><input type=\"file\" name=\"file\"> \
         <button type=\"submit\">Insert as CHK</button></p></form>",
        esc(csrf)
    );
    if !uploads.is_empty() {
        b.push_str("<h3>Inserted from this page</h3><ul>");
        for (name, uri) in uploads.iter().rev() {
            let _ = write!(
                b,
                "<li>{}: <a href=\"/{}\"><code>{}</code></a></li>",
                esc(name),
                esc(uri),
                esc(uri)
            );
        }
        b.push_str("</ul>");
    }
    b.push_str("<h2>Requests (global queue)</h2>");
    if queue.is_empty() {
        b.push_str("<p>No persistent requests.</p>");
    } else {
        b.push_str("<table><tr><th>Identifier</th><th>Type</th><th>Key</th><th>Progress</th><th>State</th></tr>");
        for r in queue {
            let uri = r.uri.as_deref().map_or_else(String::new, |u| {
                if lichen_filter::KEY_PREFIXES.iter().any(|p| u.starts_with(p)) {
                    format!("<a href=\"/{}\"><code>{}</code></a>", esc(u), esc(u))
                } else {
                    format!("<code>{}</code>", esc(u))
                }
            });
            let _ = write!(
                b,
                "<tr><td>{}</td><td>{}</td><td>{uri}</td><td>{} / {}</td><td>{}</td></tr>",
                esc(&r.identifier),
                esc(&r.kind),
                r.progress.0,
                r.progress.1,
                esc(&r.state)
            );
        }
        b.push_str("</table>");
    }
    page("Lichen gateway", &b)
}

/// A message at the top of a page after a form was sent.
#[derive(Debug, Clone)]
pub enum Notice {
    /// It was done.
    Done(String),
    /// It was refused.
    Refused(String),
}

/// The settings page: every setting of `crate::settings` with its value in
/// `config`, as one form (`POST /settings`); the expert ones apart.
#[must_use]
pub fn settings(config: &crate::config::Config, csrf: &str, notice: Option<Notice>) -> String {
    let mut b = String::new();
    match notice {
        Some(Notice::Done(m)) => {
            let _ = write!(b, "<div class=\"ok\"><p>{}</p></div>", esc(&m));
        }
        Some(Notice::Refused(m)) => {
            let _ = write!(b, "<div class=\"err\"><p>{}</p></div>", esc(&m));
        }
        None => {}
    }
    let _ = write!(
        b,
        "<form method=\"post\" action=\"/settings\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(csrf)
    );
    for (title, expert) in [("Settings", false), ("Advanced", true)] {
        let _ = write!(
            b,
            "<h2>{title}</h2><table><tr><th>Setting</th><th>Value</th><th>Takes effect</th></tr>"
        );
        for s in crate::settings::SETTINGS
            .iter()
            .filter(|s| s.expert == expert)
        {
            let value = s.value(config);
            let input = if s.kind == crate::settings::Kind::Bool {
                let on = value == "true";
                format!(
                    "<select name=\"{n}\" id=\"{n}\"><option value=\"true\"{}>yes</option>\
                     <option value=\"false\"{}>no</option></select>",
                    if on { " selected" } else { "" },
                    if on { "" } else { " selected" },
                    n = esc(s.name)
                )
            } else {
                format!(
                    "<input type=\"text\" name=\"{n}\" id=\"{n}\" value=\"{}\">",
                    esc(&value),
                    n = esc(s.name)
                )
            };
            let _ = write!(
                b,
                "<tr><td><label for=\"{n}\">{}</label><br><small>{}</small></td><td>{input}</td><td>{}</td></tr>",
                esc(s.short),
                esc(s.long),
                if s.live { "at once" } else { "next start" },
                n = esc(s.name)
            );
        }
        b.push_str("</table>");
    }
    b.push_str(
        "<p><button type=\"submit\">Save</button></p></form>\
         <p><small>Saved into the node's config file; sizes take units (512KiB, 2GiB), \
         host lists are comma-separated addresses or ranges (192.168.1.0/24).</small></p>",
    );
    page("Settings", &b)
}

/// Disk space choices of the first-run page, in GiB: two thirds for the
/// long-term store, one third for the cache (the defaults' proportion).
pub const DISK_CHOICES_GIB: [u64; 5] = [1, 5, 20, 50, 200];

/// Upload limit choices of the first-run page, in KiB/s (0: none).
pub const UPLOAD_CHOICES_KIB: [u64; 5] = [64, 256, 1024, 4096, 0];

/// The first-run page: disk space, upload limit, strangers or friends.
#[must_use]
pub fn first_run(config: &crate::config::Config, csrf: &str) -> String {
    let mut b = String::from(
        "<p>Three choices set a new node up; everything else can stay as it is \
         (<a href=\"/settings\">all settings</a>).</p>",
    );
    let _ = write!(
        b,
        "<form method=\"post\" action=\"/first-run\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(csrf)
    );
    let total = (config.store.store_bytes + config.store.cache_bytes) >> 30;
    b.push_str(
        "<h2>Disk space</h2><p>For the network's encrypted blocks (you cannot read them, \
         nor can anyone who takes the disk tell what you fetched): more space keeps \
         more of the network's data alive.</p><p><select name=\"disk\" id=\"disk\">",
    );
    for g in DISK_CHOICES_GIB {
        let sel = if g == total.max(1) { " selected" } else { "" };
        let _ = write!(b, "<option value=\"{g}\"{sel}>{g} GiB</option>");
    }
    b.push_str(
        "</select></p><h2>Upload bandwidth</h2><p>What the node may send to its peers \
         at most. Lower it if your connection feels slow.</p>\
         <p><select name=\"upload\" id=\"upload\">",
    );
    let now_kib = config.network.upload_limit >> 10;
    for k in UPLOAD_CHOICES_KIB {
        let sel = if k == now_kib { " selected" } else { "" };
        let label = if k == 0 {
            "no limit".to_owned()
        } else if k >= 1024 {
            format!("{} MiB/s", k / 1024)
        } else {
            format!("{k} KiB/s")
        };
        let _ = write!(b, "<option value=\"{k}\"{sel}>{label}</option>");
    }
    let (open, friends) = if config.network.opennet {
        (" checked", "")
    } else {
        ("", " checked")
    };
    let _ = write!(
        b,
        "</select></p><h2>Who to connect to</h2>\
         <p><label><input type=\"radio\" name=\"network\" value=\"opennet\"{open}> \
         Strangers (opennet): works at once, through seed nodes. Anyone can learn that \
         this address runs a node.</label></p>\
         <p><label><input type=\"radio\" name=\"network\" value=\"friends\"{friends}> \
         Friends only (darknet): only people you invite can connect, and only they can \
         tell that you run a node. Needs friends who run one.</label></p>\
         <p><button type=\"submit\">Save</button></p></form>\
         <p><small>Saved in the node's config file; the disk space and network take \
         effect when the node starts again, the upload limit at once.</small></p>"
    );
    page("Set up your node", &b)
}

/// The peers page: the circle, the list, and the friend forms. `peers`
/// is `None` without a network.
#[must_use]
pub fn peers(me: f64, peers: Option<&[lichen_link::policy::PeerInfo]>, csrf: &str) -> String {
    use lichen_link::peerlist::PeerKind;
    let mut b = String::new();
    if peers.is_none() {
        b.push_str("<p>The node runs without a network: no peers.</p>");
    }
    let peers = peers.unwrap_or_default();
    // Locations on the circle: this node, its friends (filled), its
    // opennet peers (grey); peers not connected hollow.
    let point = |loc: f64, r: f64| {
        let a = loc * std::f64::consts::TAU - std::f64::consts::FRAC_PI_2;
        (120.0 + r * a.cos(), 120.0 + r * a.sin())
    };
    b.push_str(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"240\" height=\"240\" \
         viewBox=\"0 0 240 240\" role=\"img\" aria-label=\"peer locations\" id=\"circle\">\
         <circle cx=\"120\" cy=\"120\" r=\"100\" fill=\"none\" stroke=\"#999\"/>",
    );
    for p in peers {
        let Some(loc) = p.location else { continue };
        let (x, y) = point(crate::status::location_fraction(loc), 100.0);
        let colour = if p.kind == PeerKind::Friend {
            "#2a6fdb"
        } else {
            "#777"
        };
        let fill = if p.connected { colour } else { "none" };
        let _ = write!(
            b,
            "<circle class=\"peer\" cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"4\" fill=\"{fill}\" stroke=\"{colour}\"/>"
        );
    }
    let (x, y) = point(me, 100.0);
    let _ = write!(
        b,
        "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"6\" fill=\"#c33\"/></svg>\
         <p><small>Red: this node; blue: friends; grey: opennet peers; hollow: not connected.</small></p>"
    );
    let connected = peers.iter().filter(|p| p.connected).count();
    let _ = write!(
        b,
        "<h2>Peers ({connected} connected of {})</h2>",
        peers.len()
    );
    if peers.is_empty() {
        b.push_str("<p>None yet.</p>");
    } else {
        b.push_str(
            "<table><tr><th>Identity</th><th>Kind</th><th>Status</th><th>Location</th>\
             <th>Sent / received</th><th></th></tr>",
        );
        for p in peers {
            let kind = if p.kind == PeerKind::Friend {
                "friend"
            } else {
                "opennet"
            };
            let status = if p.connected {
                "connected"
            } else {
                "not connected"
            };
            let loc = p.location.map_or_else(
                || "unknown".to_owned(),
                |l| format!("{:.6}", crate::status::location_fraction(l)),
            );
            let _ = write!(
                b,
                "<tr><td><code>{id}</code></td><td>{kind}</td><td>{status}</td><td>{loc}</td>\
                 <td>{} / {}</td><td><form method=\"post\" action=\"/peers/remove\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{c}\">\
                 <input type=\"hidden\" name=\"identity\" value=\"{id}\">\
                 <button type=\"submit\">Remove</button></form></td></tr>",
                mib(p.traffic.0),
                mib(p.traffic.1),
                id = esc(&p.identity),
                c = esc(csrf)
            );
        }
        b.push_str("</table>");
    }
    let _ = write!(
        b,
        "<h2>Add a friend</h2><form method=\"post\" action=\"/peers/add\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{c}\">\
         <p><label>Their invitation (<code>lichen-invite:…</code>) or noderef:<br>\
         <textarea name=\"text\" rows=\"4\" cols=\"70\"></textarea></label></p>\
         <p><button type=\"submit\">Add</button></p></form>\
         <h2>Invite a friend</h2><form method=\"post\" action=\"/peers/invite\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{c}\">\
         <p>An invitation lets one node become your friend within 24 hours; send it \
         privately. <button type=\"submit\">Create an invitation</button></p></form>",
        c = esc(csrf)
    );
    page("Peers", &b)
}

/// A new invitation, shown once.
#[must_use]
pub fn invitation(text: &str) -> String {
    page(
        "Invitation",
        &format!(
            "<p>Send this to your friend privately (it is valid 24 hours, for one node); \
             they paste it on their Peers page or run <code>lichen peers add</code>.</p>\
             <p><textarea readonly rows=\"4\" cols=\"70\" id=\"invitation\">{}</textarea></p>\
             <p><a href=\"/peers\">Back to the peers</a></p>",
            esc(text)
        ),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use lichen_link::peerlist::PeerKind;
    use lichen_link::policy::PeerInfo;

    fn peer(identity: &str, kind: PeerKind, connected: bool, location: u64) -> PeerInfo {
        PeerInfo {
            identity: identity.into(),
            kind,
            connected,
            location: Some(location),
            noderef: None,
            addresses: Vec::new(),
            last_seen: 0,
            link: None,
            traffic: (3 << 20, 1 << 20),
        }
    }

    #[test]
    fn the_traffic_graph_scales_to_the_highest_rate() {
        assert!(traffic_graph(&[(0, 5, 5)]).contains("fills in"));
        let g = traffic_graph(&[(3600, 0, 0), (1800, 2048, 1024), (0, 1024, 0)]);
        // An hour ago at the left edge, now at the right; the highest
        // rate at the top.
        assert!(
            g.contains("points=\"0.0,100.0 180.0,0.0 360.0,50.0\""),
            "{g}"
        );
        assert!(
            g.contains("points=\"0.0,100.0 180.0,50.0 360.0,100.0\""),
            "{g}"
        );
        assert!(g.contains("top: 2.0 KiB/s"), "{g}");
    }

    #[test]
    fn the_peers_page_draws_each_located_peer_and_escapes_identities() {
        let list = [
            peer("friend<1>", PeerKind::Friend, true, 0),
            peer("stranger", PeerKind::Opennet, false, 1 << 63),
            PeerInfo {
                location: None,
                ..peer("nowhere", PeerKind::Opennet, true, 0)
            },
        ];
        let html = peers(0.25, Some(&list), "tok");
        // Two dots (the third peer has no location), plus this node.
        assert_eq!(html.matches("class=\"peer\"").count(), 2);
        // Location 0 is at the top, 0.5 at the bottom of the circle.
        assert!(
            html.contains("cx=\"120.0\" cy=\"20.0\" r=\"4\" fill=\"#2a6fdb\""),
            "{html}"
        );
        assert!(
            html.contains("cx=\"120.0\" cy=\"220.0\" r=\"4\" fill=\"none\" stroke=\"#777\""),
            "{html}"
        );
        assert!(html.contains("Peers (2 connected of 3)"));
        assert!(html.contains("friend&lt;1&gt;") && !html.contains("friend<1>"));
        assert_eq!(html.matches("action=\"/peers/remove\"").count(), 3);
        assert!(html.contains("3.0 MiB / 1.0 MiB"));
    }
}
