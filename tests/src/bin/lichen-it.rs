//! The `lichen` program, built under another name for the whole-system tests.

fn main() -> std::process::ExitCode {
    lichen_node::app::main()
}
