//! `lichen testnet`: N real node processes on loopback, wired as one
//! opennet through node 0.
//!
//! Port rule (so scripts can find the nodes): node i (from 0) has FCP port
//! `P+3i`, gateway port `P+3i+1` and peer port `P+3i+2`; the default P is
//! 19000. Node 0's noderef is written to `DIR/seed.noderef` and the other
//! nodes get a config file (`DIR/seeded.toml`) listing it as their seed.
//! Every node runs with `[network] test_network = true` (node 0 from
//! `DIR/seed.toml`): a few nodes never take an insert below the caching
//! level, so without it nothing inserted would be kept. Every node gets
//! the same `[anonymity] tunnel_hops` (`--tunnel-hops`).

use anyhow::{bail, Context};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Ports of node `i` with base port `base`: (FCP, gateway, peers).
#[must_use]
pub(crate) fn ports(base: u16, i: u16) -> (u16, u16, u16) {
    let p = base + 3 * i;
    (p, p + 1, p + 2)
}

/// How long a node may take to open its FCP port.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the nodes get to stop after SIGTERM before they are killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

struct Started {
    child: Child,
    fcp: u16,
}

/// Start the nodes, print the table, wait for Ctrl-C/SIGTERM, stop them.
///
/// # Errors
/// Bad arguments, a node that cannot be started, or the seed's noderef
/// cannot be made.
pub(crate) fn run(
    nodes: u16,
    data_dir: Option<PathBuf>,
    base: u16,
    tunnel_hops: u8,
) -> anyhow::Result<()> {
    if nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    if u32::from(base) + 3 * u32::from(nodes) > 65_536 {
        bail!("--base-port {base} leaves no room for {nodes} nodes (3 ports each)");
    }
    let (dir, temporary) = match data_dir {
        Some(d) => (d, false),
        None => (
            std::env::temp_dir().join(format!("lichen-testnet-{}", std::process::id())),
            true,
        ),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let exe = std::env::current_exe().context("cannot find this program")?;
    let (_, _, seed_peer) = ports(base, 0);
    let seed_dir = dir.join("node-0");
    let out = Command::new(&exe)
        .arg("noderef")
        .arg("--data-dir")
        .arg(&seed_dir)
        .args(["--listen", &format!("127.0.0.1:{seed_peer}")])
        .stderr(Stdio::null())
        .output()
        .context("cannot run `noderef` for the seed")?;
    if !out.status.success() {
        bail!("`noderef` failed for the seed node");
    }
    let seed_file = dir.join("seed.noderef");
    std::fs::write(&seed_file, &out.stdout)
        .with_context(|| format!("cannot write {}", seed_file.display()))?;
    let config = dir.join("seeded.toml");
    let seed_path = std::fs::canonicalize(&seed_file).unwrap_or(seed_file);
    std::fs::write(
        &config,
        format!(
            "[network]\ntest_network = true\nseeds = [{}]\n[anonymity]\ntunnel_hops = {tunnel_hops}\n",
            toml::Value::String(seed_path.to_string_lossy().into_owned())
        ),
    )
    .with_context(|| format!("cannot write {}", config.display()))?;

    // The seed's own settings: a test network, no seeds.
    let seed_config = dir.join("seed.toml");
    std::fs::write(
        &seed_config,
        format!("[network]\ntest_network = true\n[anonymity]\ntunnel_hops = {tunnel_hops}\n"),
    )
    .with_context(|| format!("cannot write {}", seed_config.display()))?;

    let mut started: Vec<Started> = Vec::new();
    let result = start_all(&exe, &dir, &config, nodes, base, &mut started);
    if let Err(e) = result {
        stop(&mut started);
        return Err(e);
    }
    println!(
        "{:>4}  {:>8}  {:>8}  {:>9}  data dir",
        "node", "FCP", "gateway", "peer port"
    );
    for i in 0..nodes {
        let (f, g, p) = ports(base, i);
        println!(
            "{i:>4}  {f:>8}  {g:>8}  {p:>9}  {}",
            dir.join(format!("node-{i}")).display()
        );
    }
    println!(
        "{nodes} node(s) running; node 0 is the seed ({}); tunnel hops {tunnel_hops}. Logs: {}/node-*.log. Ctrl-C stops them.",
        dir.join("seed.noderef").display(),
        dir.display()
    );
    wait_for_signal(&mut started);
    eprintln!("stopping {} node(s)…", started.len());
    stop(&mut started);
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

fn start_all(
    exe: &Path,
    dir: &Path,
    config: &Path,
    nodes: u16,
    base: u16,
    started: &mut Vec<Started>,
) -> anyhow::Result<()> {
    for i in 0..nodes {
        let (fcp, gw, peer) = ports(base, i);
        let data = dir.join(format!("node-{i}"));
        let log = dir.join(format!("node-{i}.log"));
        let logf = std::fs::File::create(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let mut cmd = Command::new(exe);
        cmd.arg("node")
            .arg("--data-dir")
            .arg(&data)
            .args(["--fcp-port", &fcp.to_string()])
            .args(["--gateway-port", &gw.to_string()])
            .args(["--listen", &format!("127.0.0.1:{peer}")]);
        if i > 0 {
            cmd.arg("--config").arg(config);
        } else {
            cmd.arg("--config").arg(dir.join("seed.toml"));
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(logf.try_clone()?)
            .stderr(logf)
            .spawn()
            .with_context(|| format!("cannot start node {i}"))?;
        started.push(Started { child, fcp });
        // The seed first, so the others find it at once.
        if i == 0 {
            wait_fcp(started.last_mut(), &log)?;
        }
    }
    for s in started.iter_mut().skip(1) {
        let log = dir.join(format!("node-{}.log", (s.fcp - base) / 3));
        wait_fcp(Some(s), &log)?;
    }
    Ok(())
}

fn wait_fcp(s: Option<&mut Started>, log: &Path) -> anyhow::Result<()> {
    let Some(s) = s else { return Ok(()) };
    let addr = SocketAddr::from(([127, 0, 0, 1], s.fcp));
    let start = Instant::now();
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = s.child.try_wait() {
            bail!("a node exited at start ({status}); see {}", log.display());
        }
        if start.elapsed() > START_TIMEOUT {
            bail!(
                "a node did not open FCP port {} in time; see {}",
                s.fcp,
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_for_signal(started: &mut [Started]) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    rt.block_on(async {
        #[cfg(unix)]
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let term_fut = async {
            #[cfg(unix)]
            if let Some(t) = term.as_mut() {
                t.recv().await;
                return;
            }
            std::future::pending::<()>().await;
        };
        let watch = async {
            let mut reported = vec![false; started.len()];
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                for (i, s) in started.iter_mut().enumerate() {
                    if !reported[i] {
                        if let Ok(Some(status)) = s.child.try_wait() {
                            eprintln!("node {i} exited ({status})");
                            reported[i] = true;
                        }
                    }
                }
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = term_fut => {}
            () = watch => {}
        }
    });
}

/// SIGTERM every node, wait up to [`STOP_TIMEOUT`], then kill the rest.
fn stop(started: &mut Vec<Started>) {
    for s in started.iter() {
        #[cfg(unix)]
        let _ = Command::new("kill")
            .args(["-TERM", &s.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Instant::now() < deadline {
        if started
            .iter_mut()
            .all(|s| matches!(s.child.try_wait(), Ok(Some(_))))
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for s in started.iter_mut() {
        if !matches!(s.child.try_wait(), Ok(Some(_))) {
            let _ = s.child.kill();
            let _ = s.child.wait();
        }
    }
    started.clear();
}

#[cfg(test)]
mod tests {
    use super::ports;

    #[test]
    fn the_port_rule() {
        assert_eq!(ports(19000, 0), (19000, 19001, 19002));
        assert_eq!(ports(19000, 11), (19033, 19034, 19035));
    }
}
