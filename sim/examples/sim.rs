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
    // Wall time goes to stderr so stdout stays byte-identical per seed.
    eprintln!("wall time: {:.1} s", start.elapsed().as_secs_f64());
    ExitCode::SUCCESS
}
