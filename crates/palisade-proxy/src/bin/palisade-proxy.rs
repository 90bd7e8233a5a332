//! The `palisade-proxy` binary: a thin wrapper over [`palisade_proxy::cli`].

#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    palisade_proxy::cli::main_with_args(&args)
}
