//! The `strata` binary: parse flags, set up logging, run, and turn an error into one
//! line on stderr and a non-zero exit.

use clap::Parser;

fn main() {
    let cli = strata::Cli::parse();
    let default_log = match cli.command {
        strata::Command::Fs(_) | strata::Command::Fsadmin(_) => "warn",
        _ => "info",
    };
    strata_common::telemetry::init_logging(default_log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("strata: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = match runtime.block_on(strata::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("strata: {e:#}");
            1
        }
    };
    std::process::exit(code);
}
