//! The `lichen` command line: run a node, talk to one over FCP, run the
//! simulator. `main.rs` only calls [`main`], so the whole-system tests can
//! build the same program under another name.

use crate::cli;
use crate::config::Config;
use crate::identity::Protection;
use crate::vault::Passphrase;
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// Lichen: an anonymous, censorship-resistant storage network.
#[derive(Parser, Debug)]
#[command(name = "lichen", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a node in the foreground (Ctrl-C or SIGTERM stops it cleanly).
    Node(NodeArgs),
    /// Insert a file (or stdin with `-`); prints its URI.
    Put {
        #[command(flatten)]
        fcp: cli::FcpOpts,
        #[command(flatten)]
        args: cli::PutArgs,
    },
    /// Fetch a URI to a file or stdout.
    Get {
        #[command(flatten)]
        fcp: cli::FcpOpts,
        #[command(flatten)]
        args: cli::GetArgs,
    },
    /// Generate an SSK keypair (insert URI, request URI).
    Genkey {
        #[command(flatten)]
        fcp: cli::FcpOpts,
    },
    /// Insert a directory as a freesite under an SSK or USK insert URI.
    Putsite {
        #[command(flatten)]
        fcp: cli::FcpOpts,
        #[command(flatten)]
        args: cli::PutsiteArgs,
    },
    /// Show the node's status and its request queue.
    Status {
        #[command(flatten)]
        fcp: cli::FcpOpts,
    },
    /// Print this node's noderef (give it to a friend, or list it as a seed).
    Noderef(NodeArgs),
    /// Set, change or remove the passphrase the node's secrets are sealed
    /// under (`docs/running.md`). The current one comes as for `node`; the
    /// new one from `--new-passphrase-file` or the terminal (asked twice).
    Passphrase(PassphraseArgs),
    /// Wipe what this node's user did: empty the client cache (documents
    /// fetched and inserted here) and remove every persistent request with
    /// its upload and result, inserts still waiting to be pushed, and
    /// temporary files. The node must be stopped.
    Wipe(NodeArgs),
    /// Print a one-time invitation: `lichen peers add INVITATION` on a
    /// friend's node makes you friends (expires; works once).
    Invite {
        #[command(flatten)]
        fcp: cli::FcpOpts,
        #[command(flatten)]
        args: cli::InviteArgs,
    },
    /// List the node's peers; `peers add INVITATION|NODEREF_FILE` adds a
    /// friend, `peers remove IDENTITY` forgets a peer.
    Peers {
        #[command(flatten)]
        fcp: cli::FcpOpts,
        #[command(flatten)]
        args: cli::PeersArgs,
    },
    /// Start N nodes on loopback wired as one opennet through node 0 (the
    /// seed). Node i has FCP port P+3i, gateway port P+3i+1 and peer port
    /// P+3i+2. Ctrl-C stops them all.
    Testnet(TestnetArgs),
    /// Run the deterministic network simulator (the node's routing core
    /// and peer policy for N nodes in one process, virtual clock).
    /// `lichen sim --help` lists flags.
    #[command(disable_help_flag = true)]
    Sim {
        /// Simulator flags (--nodes, --degree, --topology, --inserts,
        /// --requests, --churn, --adversary, --seed, --json, …).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(clap::Args, Debug)]
struct NodeArgs {
    /// Data directory (default: $XDG_DATA_HOME/lichen).
    #[arg(long, env = "LICHEN_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// TOML configuration file (optional; defaults are built in).
    #[arg(long, env = "LICHEN_CONFIG")]
    config: Option<PathBuf>,
    /// FCP port on the FCP listen address (default 9481).
    #[arg(long)]
    fcp_port: Option<u16>,
    /// Gateway port (default 8888).
    #[arg(long)]
    gateway_port: Option<u16>,
    /// Address peers connect to (default [::]:9489: IPv6 and IPv4).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Read the passphrase that seals the node's secrets from FILE (its
    /// first line). `LICHEN_PASSPHRASE` gives it too. A node started with
    /// a passphrase for the first time is sealed under it from then on.
    #[arg(long, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
    /// Ask for a passphrase at the terminal (to seal the node under one;
    /// a node already sealed under one asks by itself when started from
    /// a terminal).
    #[arg(long)]
    ask_passphrase: bool,
}

#[derive(clap::Args, Debug)]
struct PassphraseArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// Read the new passphrase from FILE (its first line).
    #[arg(long, value_name = "FILE", conflicts_with = "remove")]
    new_passphrase_file: Option<PathBuf>,
    /// Seal the node under a key file again (no passphrase).
    #[arg(long)]
    remove: bool,
}

#[derive(clap::Args, Debug)]
struct TestnetArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 5)]
    nodes: u16,
    /// Directory for the nodes' data (node-0, node-1, …) and logs (default:
    /// a new temporary directory, removed afterwards).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Base port P: node i uses P+3i (FCP), P+3i+1 (gateway), P+3i+2 (peers).
    #[arg(long, default_value_t = 19000)]
    base_port: u16,
    /// Tunnel hops of every node's own requests (`[anonymity]
    /// tunnel_hops`, 0–3). Default: the node's default (2), or 0 when the
    /// network has fewer than 4 nodes (too few for a tunnel to an exit
    /// that is not the user's neighbour's only peer).
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=3))]
    tunnel_hops: Option<u8>,
}

/// Parse the command line and run it.
#[must_use]
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Node(a) => run_node(a),
        Command::Put { fcp, args } => cli::put(&fcp, &args),
        Command::Get { fcp, args } => cli::get(&fcp, &args),
        Command::Genkey { fcp } => cli::genkey(&fcp),
        Command::Putsite { fcp, args } => cli::putsite(&fcp, &args),
        Command::Status { fcp } => cli::status(&fcp),
        Command::Sim { args } => run_sim(args),
        Command::Noderef(a) => print_noderef(a),
        Command::Wipe(a) => wipe(a),
        Command::Passphrase(a) => change_passphrase(&a),
        Command::Peers { fcp, args } => cli::peers(&fcp, &args),
        Command::Invite { fcp, args } => cli::invite(&fcp, &args),
        Command::Testnet(a) => {
            let hops = a.tunnel_hops.unwrap_or(if a.nodes < 4 {
                0
            } else {
                crate::config::AnonymityConfig::default().tunnel_hops
            });
            crate::testnet::run(a.nodes, a.data_dir, a.base_port, hops)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lichen: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_sim(args: Vec<String>) -> anyhow::Result<()> {
    use lichen_sim as sim;
    let Some(cli) = sim::parse_args(args).map_err(|e| anyhow::anyhow!(e))? else {
        return print_stdout(&sim::usage().replacen("usage: sim", "usage: lichen sim", 1));
    };
    if let Some(code) = sim::rerun_in_huge_pages(cli.config.nodes) {
        std::process::exit(code);
    }
    let start = std::time::Instant::now();
    let report = sim::run(&cli.config);
    if cli.json {
        print_stdout(&serde_json::to_string_pretty(&report)?)?;
    } else {
        print_stdout(report.to_table().trim_end())?;
    }
    // Wall time on stderr keeps stdout identical for a given seed.
    eprintln!("wall time: {:.1} s", start.elapsed().as_secs_f64());
    Ok(())
}

/// Print a line to stdout; a closed pipe (`| head`) is not an error.
fn print_stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    match writeln!(std::io::stdout().lock(), "{text}") {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}

fn print_noderef(a: NodeArgs) -> anyhow::Result<()> {
    let config = node_config(&a)?;
    let (text, loopback) = crate::identity::local_noderef(&config)?;
    // Listening on every interface: the running node may know its public
    // address (peers' dial-backs, the router's mapping).
    if loopback {
        if let Some(live) = cli::running_noderef(&config.fcp.listen.to_string(), &text) {
            return print_stdout(&live);
        }
    }
    if loopback {
        eprintln!("lichen: the peer listen address is unspecified and no running node knows its public address yet; the noderef says 127.0.0.1 (run the node until peers or its router tell it, or set [network] listen or --listen to the address peers reach)");
    }
    print_stdout(&text)
}

/// The passphrase for the node in `data_dir`: from `--passphrase-file`,
/// `LICHEN_PASSPHRASE`, or the terminal (asked when `--ask-passphrase` is
/// given, or when the node is sealed under one and stdin is a terminal).
fn passphrase(a: &NodeArgs, data_dir: &std::path::Path) -> anyhow::Result<Option<Passphrase>> {
    use std::io::IsTerminal;
    let empty = || anyhow::anyhow!("the passphrase is empty");
    if let Some(path) = &a.passphrase_file {
        return read_passphrase_file(path).map(Some);
    }
    if let Ok(text) = std::env::var("LICHEN_PASSPHRASE") {
        return Passphrase::new(text).map(Some).ok_or_else(empty);
    }
    let sealed = crate::identity::protection(data_dir) == Some(Protection::Passphrase);
    let ask_now = a.ask_passphrase || (sealed && std::io::stdin().is_terminal());
    if !ask_now {
        return Ok(None);
    }
    // A new passphrase is asked twice; the one a node is sealed under, once.
    ask_passphrase("Passphrase: ", !sealed).map(Some)
}

/// A passphrase from the terminal (without echo); with `confirm`, asked
/// twice and refused unless both are the same.
fn ask_passphrase(prompt: &str, confirm: bool) -> anyhow::Result<Passphrase> {
    let ask = |prompt: &str| {
        rpassword::prompt_password(prompt)
            .map_err(|e| anyhow::anyhow!("cannot read a passphrase from the terminal: {e}"))
    };
    let first = ask(prompt)?;
    if confirm && ask("The same passphrase again: ")? != first {
        anyhow::bail!("the passphrases differ; nothing was changed");
    }
    Passphrase::new(first).ok_or_else(|| anyhow::anyhow!("the passphrase is empty"))
}

/// The configuration for `lichen node`, `noderef` and `wipe`: file,
/// then flags, then the passphrase.
fn node_config(a: &NodeArgs) -> anyhow::Result<Config> {
    let mut config = match &a.config {
        Some(p) => Config {
            file: Some(p.clone()),
            ..Config::load(p)?
        },
        None => {
            // Without --config: the data directory's `lichen.toml` if
            // there is one (settings changed while a node ran are kept
            // there), else the embedded defaults.
            let dir = match &a.data_dir {
                Some(d) => d.clone(),
                None => Config::default().data_dir()?,
            };
            let file = dir.join(crate::settings::FILE_NAME);
            let loaded = match Config::load(&file) {
                Ok(c) => c,
                Err(crate::config::ConfigError::Read { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    Config::default()
                }
                Err(e) => return Err(e.into()),
            };
            Config {
                file: Some(file),
                ..loaded
            }
        }
    };
    if let Some(d) = &a.data_dir {
        config.data_dir = Some(d.clone());
    }
    if let Some(p) = a.fcp_port {
        config.fcp.listen.set_port(p);
    }
    if let Some(p) = a.gateway_port {
        config.gateway.listen.set_port(p);
    }
    if let Some(l) = a.listen {
        config.network.listen = l;
    }
    config.passphrase = passphrase(a, &config.data_dir()?)?;
    Ok(config)
}

fn change_passphrase(a: &PassphraseArgs) -> anyhow::Result<()> {
    let config = node_config(&a.node)?;
    let dir = config.data_dir()?;
    let new = if a.remove {
        None
    } else if let Some(path) = &a.new_passphrase_file {
        Some(read_passphrase_file(path)?)
    } else {
        Some(ask_passphrase("New passphrase: ", true)?)
    };
    crate::identity::change_protection(&dir, config.passphrase.as_ref(), new.as_ref())?;
    print_stdout(if new.is_some() {
        "the node's secrets are sealed under the new passphrase"
    } else {
        "the node's secrets are sealed under the key file node.key (no passphrase)"
    })
}

/// The first line of a passphrase file.
fn read_passphrase_file(path: &std::path::Path) -> anyhow::Result<Passphrase> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(4096).read_to_string(&mut text))
        .map_err(|e| anyhow::anyhow!("cannot read the passphrase file: {e}"))?;
    let first = text.lines().next().unwrap_or("").to_string();
    Passphrase::new(first).ok_or_else(|| anyhow::anyhow!("the passphrase is empty"))
}

fn wipe(a: NodeArgs) -> anyhow::Result<()> {
    let config = node_config(&a)?;
    let r = crate::node::wipe(&config)?;
    print_stdout(&format!(
        "wiped: {} block(s) from the client cache, {} persistent request(s), {} insert(s) waiting to be pushed, {} other file(s)",
        r.client_blocks, r.requests, r.pushes, r.files
    ))
}

fn run_node(a: NodeArgs) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let config = node_config(&a)?;
    config.validate()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("lichen")
        .build()?;
    rt.block_on(crate::run(config))
}
