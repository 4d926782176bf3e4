//! `lichen`: run a node, or talk to one over FCP. See [`lichen_node::app`].

fn main() -> std::process::ExitCode {
    lichen_node::app::main()
}
