//! The FCP client commands of the `lichen` binary: `put`, `get`, `genkey`,
//! `putsite`, `status` and `peers`.
//!
//! Each command opens one blocking TCP connection to the node's FCP port,
//! says `ClientHello`, sends its request and reads the replies with
//! [`lichen_fcp::Decoder`]. Uploads are streamed from disk after the message
//! header and downloads are written out chunk by chunk as they arrive, so no
//! command ever holds a whole file in memory. Progress bars (indicatif) go to
//! stderr and are hidden when stderr is not a terminal.

//!
//! One module per command; below them the shared parts, which never import
//! the commands: [`conn`] (the connection and its error messages), [`term`]
//! (stdout and stderr), [`progress`] (the bars) and [`reply`] (reading
//! replies: numbers, error texts, refusals, identifiers).

mod conn;
mod genkey;
mod get;
mod peers;
mod progress;
mod put;
mod reply;
mod site;
mod status;
mod term;
#[cfg(test)]
mod test_support;

pub use conn::FcpOpts;
pub use genkey::genkey;
pub use get::{get, GetArgs};
pub use peers::{invite, peers, running_noderef, InviteArgs, PeersAction, PeersArgs};
pub use put::{put, PutArgs};
pub use site::{putsite, PutsiteArgs};
pub use status::status;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// The argument structs as main.rs uses them (clap checks its
    /// definitions in debug builds when parsing).
    #[test]
    fn clap_definitions_parse() {
        use clap::Parser;
        #[derive(clap::Parser, Debug)]
        struct Cli {
            #[command(subcommand)]
            command: Cmd,
        }
        #[derive(clap::Subcommand, Debug)]
        enum Cmd {
            Put {
                #[command(flatten)]
                fcp: FcpOpts,
                #[command(flatten)]
                args: PutArgs,
            },
            Get {
                #[command(flatten)]
                fcp: FcpOpts,
                #[command(flatten)]
                args: GetArgs,
            },
            Putsite {
                #[command(flatten)]
                fcp: FcpOpts,
                #[command(flatten)]
                args: PutsiteArgs,
            },
            Status {
                #[command(flatten)]
                fcp: FcpOpts,
            },
            Peers {
                #[command(flatten)]
                args: PeersArgs,
            },
        }
        let cli = Cli::try_parse_from([
            "lichen",
            "put",
            "-",
            "--key",
            "KSK@a",
            "--mime",
            "text/plain",
            "--no-compress",
            "--chk-only",
            "--fcp",
            "10.0.0.1:1",
        ])
        .unwrap();
        let Cmd::Put { fcp, args } = cli.command else {
            panic!()
        };
        assert_eq!(fcp.fcp, "10.0.0.1:1");
        assert_eq!(args.file, "-");
        assert_eq!(args.key.as_deref(), Some("KSK@a"));
        assert!(args.no_compress && args.chk_only);
        let cli =
            Cli::try_parse_from(["lichen", "get", "CHK@x", "-o", "f", "--max-size", "9"]).unwrap();
        let Cmd::Get { fcp, args } = cli.command else {
            panic!()
        };
        assert!(!fcp.fcp.is_empty());
        assert_eq!(args.output, Some(PathBuf::from("f")));
        assert_eq!(args.max_size, Some(9));
        let cli = Cli::try_parse_from(["lichen", "putsite", "site", "--key", "USK@k/s/0"]).unwrap();
        let Cmd::Putsite { args, .. } = cli.command else {
            panic!()
        };
        assert_eq!(args.default, "index.html");
        let cli = Cli::try_parse_from(["lichen", "status"]).unwrap();
        assert!(matches!(cli.command, Cmd::Status { .. }));
        // Identities are base64 with `-`: one may begin with it (a CI run
        // failed on `peers remove -dX…` read as an option).
        let cli = Cli::try_parse_from(["lichen", "peers", "remove", "-dXyz"]).unwrap();
        let Cmd::Peers { args } = cli.command else {
            panic!()
        };
        assert!(matches!(args.action, Some(PeersAction::Remove { ref peer }) if peer == "-dXyz"));
    }
}
