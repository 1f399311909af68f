//! Logging set-up for the daemons and the CLI: `tracing` to stderr, filtered by
//! `STRATA_LOG` (same syntax as `RUST_LOG`), defaulting to `info`.

/// Installs the global subscriber; a second call is a no-op.
pub fn init_logging(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("STRATA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
