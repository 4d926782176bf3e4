//! `cargo run --release -p lichen-sim --example sim -- --nodes 1000 ...`
//! Flags: see `lichen_sim::usage()`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = match lichen_sim::parse_args(std::env::args().skip(1)) {
        Ok(Some(cli)) => cli,
        Ok(None) => {
            println!("{}", lichen_sim::usage());
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(code) = lichen_sim::rerun_in_huge_pages(cli.config.nodes) {
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    let start = std::time::Instant::now();
    let report = lichen_sim::run(&cli.config);
    if cli.json {
        match serde_json::to_string_pretty(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{}", report.to_table());
    }
    // Wall time and memory go to stderr so stdout stays byte-identical
    // per seed.
    let wall = start.elapsed().as_secs_f64();
    eprintln!("wall time: {wall:.1} s");
    let peak = peak_rss_kib();
    match peak {
        Some(kib) => eprintln!("peak RSS: {:.1} MiB", kib as f64 / 1024.0),
        None => eprintln!("peak RSS: unknown (no /proc/self/status)"),
    }
    eprintln!("{}", cost_line(&cli.config, wall, peak));
    ExitCode::SUCCESS
}

/// The process's peak resident set (VmHWM in /proc/self/status), KiB.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// What the run cost per node and per routed request (opennet: the
/// warm-up's requests count, they are most of the work).
fn cost_line(cfg: &lichen_sim::SimConfig, wall: f64, peak_kib: Option<u64>) -> String {
    let n = cfg.nodes.max(2);
    let warm = if cfg.topology == lichen_sim::Topology::Opennet {
        cfg.warmup_requests.unwrap_or(5 * n)
    } else {
        0
    };
    let routed = warm + warm / 10 + cfg.requests + cfg.inserts;
    let per_node = peak_kib.map_or_else(
        || "?".to_string(),
        |k| format!("{:.1}", k as f64 / n as f64),
    );
    format!(
        "cost: {n} nodes, {warm} warm-up requests, {routed} requests and inserts in all: \
         {:.1} µs of wall time per node, {:.1} µs per request, {per_node} KiB peak RSS per node",
        wall * 1e6 / n as f64,
        wall * 1e6 / routed.max(1) as f64,
    )
}
