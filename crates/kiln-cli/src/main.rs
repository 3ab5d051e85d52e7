//! `kiln`: the command line. Thin on purpose: it parses flags the way
//! Packer 1.6.6 does (single-dash long flags, `-flag=value` or
//! `-flag value`), loads the template and variables, and hands over to
//! `kiln-core`.
mod args;
mod cache_cmd;
mod commands;
mod registry;
mod signals;

use std::process::ExitCode;

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    let (argv, machine_readable) = args::normalize(argv);
    let cli = match args::parse(argv) {
        Ok(c) => c,
        Err(e) => {
            // Help and version requests are not errors.
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kiln: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = rt.block_on(commands::run(cli, machine_readable));
    // Do not wait for stray blocking tasks (a stdin reader, say).
    rt.shutdown_timeout(std::time::Duration::from_millis(100));
    ExitCode::from(code)
}
