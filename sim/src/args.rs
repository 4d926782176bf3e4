//! Command-line flags for the simulator, defined once here so the `sim`
//! example and the `lichen sim` subcommand share them.

use super::config::{Adversary, Attack, SimConfig, Topology};

/// Parsed command line.
#[derive(Clone, Debug, PartialEq)]
pub struct Cli {
    /// The simulation to run.
    pub config: SimConfig,
    /// Print the report as JSON instead of a table.
    pub json: bool,
}

/// The flag reference.
pub fn usage() -> &'static str {
    "usage: sim [flags]
  --nodes N            number of nodes (1000)
  --degree D           peers per node; opennet peer limit (20)
  --topology T         small-world | opennet | darknet (small-world)
  --inserts N          blocks inserted before measuring (500)
  --requests N         requests for inserted keys (2000)
  --churn F            fraction of nodes offline at any time, rotating (0)
  --nat F              opennet: fraction of nodes behind NAT, which nobody can dial (0)
  --symmetric F        of those, the fraction behind symmetric NAT, where punches fail (0)
  --adversary F        fraction of nodes run by the adversary (0)
  --attackers K        number of nodes run by the adversary (instead of -F)
  --adversary-kind K   observe | drop | corrupt | lie-htl | lie-swap (observe)
  --seed S             RNG seed; same seed, same output (1)
  --htl H              maximum hops to live (18)
  --loss F             message loss probability (0)
  --latency MIN-MAX    per-link latency range in ms (10-100)
  --warmup N           opennet: warm-up requests for path folding (5 x nodes)
  --join-secs S        opennet: virtual seconds over which the nodes join
                       (0.05 x nodes, at most 500)
  --seeds K            opennet: seed nodes (one per 500 nodes, 3 to 20)
  --warmup-secs S      opennet: virtual seconds the warm-up is spread over
                       (0.05 x warm-up requests, at most 2,500)
  --swap-seconds S     darknet: virtual seconds of swapping first (300)
  --interval MS        gap between requests in ms (10)
  --attack NAME        run and measure an attack: downloader | uploader |
                       fold | probe | probe-unasked | traceback | eclipse |
                       eclipse-return (the eclipse; peers leave and come back) |
                       pitch-black (darknet only; the adversary kind becomes lie-swap) |
                       correlation (tunnels: colluding guard and exit)
  --files N            attack workload: files inserted (10)
  --file-blocks N      attack workload: blocks per file (256)
  --downloaders N      attack workload: honest nodes each downloading a file;
                       probe: victims (20)
  --pitch-defence X    darknet: swaps may not stretch a node's links, on | off (on)
  --link-balance X     opennet: full nodes spread their peers over link-length
                       classes (1/d), on | off (off: replace the least useful) (on)
  --pitch-probe X      darknet: Hyphanet's Pitch Black probe, on | off (off)
  --days N             pitch-black: attacked days after day 0 (8)
  --tunnel-hops N      own requests through premix tunnels of N hops, 0-3 (0)
  --lying-lists X      adversary nodes name only colluders in tunnel peer
                       lists (padded to the minimum), on | off (off)
  --min-peer-list N    opennet: fewest eligible peers a tunnel hop's list
                       must name, 0 = no minimum (8)
  --json               print the report as JSON
  --help               this text"
}

fn num<T: std::str::FromStr>(flag: &str, v: Option<String>) -> Result<T, String> {
    let v = v.ok_or_else(|| format!("{flag} needs a value"))?;
    v.parse().map_err(|_| format!("{flag}: cannot parse {v:?}"))
}

fn fraction(flag: &str, v: Option<String>) -> Result<f64, String> {
    let f: f64 = num(flag, v)?;
    if (0.0..=1.0).contains(&f) {
        Ok(f)
    } else {
        Err(format!("{flag} must be between 0 and 1"))
    }
}

fn on_off(flag: &str, v: Option<String>) -> Result<bool, String> {
    match v.as_deref() {
        Some("on") => Ok(true),
        Some("off") => Ok(false),
        other => Err(format!("{flag}: on or off, not {other:?}")),
    }
}

/// The attack workload's flags.
fn attack_flag(c: &mut SimConfig, flag: &str, v: Option<String>) -> Result<(), String> {
    match flag {
        "--attack" => {
            c.attack = Some(match v.as_deref() {
                Some("downloader") => Attack::Downloader,
                Some("uploader") => Attack::Uploader,
                Some("fold") => Attack::Fold,
                Some("probe") => Attack::Probe,
                Some("probe-unasked") => Attack::ProbeUnasked,
                Some("traceback") => Attack::Traceback,
                Some("eclipse") => Attack::Eclipse,
                Some("eclipse-return") => Attack::EclipseReturn,
                Some("pitch-black") => Attack::PitchBlack,
                Some("correlation") => Attack::Correlation,
                other => return Err(format!("--attack: unknown {other:?}")),
            });
        }
        "--files" => c.files = num(flag, v)?,
        "--file-blocks" => c.file_blocks = num(flag, v)?,
        _ => c.downloaders = num(flag, v)?,
    }
    Ok(())
}

/// Parse flags (without the program name). `Ok(None)` means `--help`.
pub fn parse_args<I: IntoIterator<Item = String>>(args: I) -> Result<Option<Cli>, String> {
    let mut c = SimConfig::default();
    let mut json = false;
    let mut it = args.into_iter();
    while let Some(flag) = it.next() {
        let (flag, inline) = match flag.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (flag, None),
        };
        let mut val = || inline.clone().or_else(|| it.next());
        match flag.as_str() {
            "--nodes" => c.nodes = num(&flag, val())?,
            "--degree" => c.degree = num(&flag, val())?,
            "--topology" => {
                c.topology = match val().as_deref() {
                    Some("small-world") => Topology::SmallWorld,
                    Some("opennet") => Topology::Opennet,
                    Some("darknet") => Topology::Darknet,
                    other => return Err(format!("--topology: unknown {other:?}")),
                }
            }
            "--inserts" => c.inserts = num(&flag, val())?,
            "--requests" => c.requests = num(&flag, val())?,
            "--churn" => c.churn = fraction(&flag, val())?,
            "--nat" => c.nat = fraction(&flag, val())?,
            "--symmetric" => c.symmetric = fraction(&flag, val())?,
            "--adversary" => c.adversary = fraction(&flag, val())?,
            "--attackers" => c.attackers = Some(num(&flag, val())?),
            "--adversary-kind" => {
                c.adversary_kind = match val().as_deref() {
                    Some("observe") => Adversary::Observe,
                    Some("drop") => Adversary::Drop,
                    Some("corrupt") => Adversary::Corrupt,
                    Some("lie-htl") => Adversary::LieHtl,
                    Some("lie-swap") => Adversary::LieSwap,
                    other => return Err(format!("--adversary-kind: unknown {other:?}")),
                }
            }
            "--seed" => c.seed = num(&flag, val())?,
            "--htl" => c.htl = num(&flag, val())?,
            "--loss" => c.loss = fraction(&flag, val())?,
            "--latency" => {
                let v = val().ok_or("--latency needs MIN-MAX")?;
                let (a, b) = v.split_once('-').ok_or("--latency needs MIN-MAX")?;
                let (a, b): (u64, u64) = (
                    a.parse().map_err(|_| "--latency: bad MIN")?,
                    b.parse().map_err(|_| "--latency: bad MAX")?,
                );
                if a > b || b == 0 {
                    return Err("--latency: need 0 <= MIN <= MAX, MAX > 0".into());
                }
                c.latency_ms = (a, b);
            }
            "--warmup" => c.warmup_requests = Some(num(&flag, val())?),
            "--seeds" => c.seeds = Some(num::<usize>(&flag, val())?.max(1)),
            "--join-secs" => c.join_ms = Some(num::<u64>(&flag, val())?.saturating_mul(1000)),
            "--warmup-secs" => {
                c.warmup_ms = Some(num::<u64>(&flag, val())?.saturating_mul(1000));
            }
            "--swap-seconds" => c.swap_ms = Some(num::<u64>(&flag, val())?.saturating_mul(1000)),
            "--tunnel-hops" => {
                c.tunnel_hops = num::<u8>(&flag, val())?;
                if c.tunnel_hops > 3 {
                    return Err("--tunnel-hops: 0 to 3".into());
                }
            }
            "--interval" => c.request_interval_ms = num(&flag, val())?,
            "--attack" | "--files" | "--file-blocks" | "--downloaders" => {
                attack_flag(&mut c, &flag, val())?;
            }
            "--pitch-defence" => c.pitch_defence = on_off(&flag, val())?,
            "--link-balance" => c.link_balance = on_off(&flag, val())?,
            "--pitch-probe" => c.pitch_probe = on_off(&flag, val())?,
            "--days" => c.days = num(&flag, val())?,
            "--lying-lists" => c.lying_lists = on_off(&flag, val())?,
            "--min-peer-list" => c.min_peer_list = num(&flag, val())?,
            "--json" => json = true,
            "--help" | "-h" => return Ok(None),
            other => return Err(format!("unknown flag {other:?}\n{}", usage())),
        }
    }
    if c.nodes < 2 {
        return Err("--nodes must be at least 2".into());
    }
    if c.htl < 2 {
        return Err("--htl must be at least 2".into());
    }
    if c.degree < 2 {
        return Err("--degree must be at least 2".into());
    }
    if c.attack == Some(Attack::PitchBlack) {
        if c.topology != Topology::Darknet {
            return Err("--attack pitch-black needs --topology darknet".into());
        }
        if c.adversary_kind == Adversary::Observe {
            c.adversary_kind = Adversary::LieSwap;
        }
    }
    if c.attack.is_some() && (c.files == 0 || c.file_blocks == 0) {
        return Err("--attack needs --files and --file-blocks of at least 1".into());
    }
    Ok(Some(Cli { config: c, json }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Option<Cli>, String> {
        parse_args(s.split_whitespace().map(String::from))
    }

    #[test]
    fn flags() {
        let c = p("--nodes 50 --topology=darknet --churn 0.2 --adversary 0.05 --adversary-kind lie-htl --seed 9 --json --latency 5-20")
            .unwrap()
            .unwrap();
        assert!(c.json);
        assert_eq!(c.config.nodes, 50);
        assert_eq!(c.config.topology, Topology::Darknet);
        assert_eq!(c.config.adversary_kind, Adversary::LieHtl);
        assert_eq!(c.config.latency_ms, (5, 20));
        assert_eq!(p("--help").unwrap(), None);
        assert!(p("--churn 2").is_err());
        assert!(p("--nat -0.1").is_err());
        let nat = p("--nat 0.5").unwrap().unwrap();
        assert!((nat.config.nat - 0.5).abs() < f64::EPSILON);
        assert!(p("--symmetric 1.5").is_err());
        let sym = p("--nat 0.5 --symmetric 0.3").unwrap().unwrap();
        assert!((sym.config.symmetric - 0.3).abs() < f64::EPSILON);
        assert!(p("--bogus").is_err());
        assert!(p("--nodes").is_err());
        let c = p(
            "--topology darknet --attack pitch-black --pitch-defence off --pitch-probe on --days 3",
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.config.adversary_kind, Adversary::LieSwap);
        assert!(!c.config.pitch_defence);
        assert!(c.config.pitch_probe);
        assert_eq!(c.config.days, 3);
        assert!(p("--attack pitch-black").is_err(), "darknet only");
        assert!(p("--pitch-defence maybe").is_err());
        let c = p("--attack correlation --tunnel-hops 2 --lying-lists on")
            .unwrap()
            .unwrap();
        assert_eq!(c.config.attack, Some(Attack::Correlation));
        assert!(c.config.lying_lists);
        assert_eq!(c.config.min_peer_list, 8);
        assert_eq!(
            p("--min-peer-list 0")
                .unwrap()
                .unwrap()
                .config
                .min_peer_list,
            0
        );
        assert!(p("--lying-lists yes").is_err());
        let c = p("--join-secs 150 --warmup-secs 750").unwrap().unwrap();
        assert_eq!(c.config.join_ms, Some(150_000));
        assert_eq!(c.config.warmup_ms, Some(750_000));
        assert!(p("--join-secs -1").is_err());
        assert!(p("--warmup-secs soon").is_err());
    }
}
