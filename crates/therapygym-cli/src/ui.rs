//! The only module that writes to the terminal.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::Write;

/// Prints a line on stdout; a closed pipe (`| head`) is not an error.
pub fn out(s: &str) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{s}");
}

/// Prints JSON on stdout.
pub fn json<T: serde::Serialize>(v: &T) {
    match serde_json::to_string_pretty(v) {
        Ok(s) => out(&s),
        Err(e) => warn(&format!("cannot serialise output: {e}")),
    }
}

pub fn info(s: &str) {
    eprintln!("{s}");
}

pub fn warn(s: &str) {
    eprintln!("warning: {s}");
}

/// Prints an error and its causes; a cause whose text the message above already holds
/// (`cannot read F: No such file…` caused by `No such file…`) is not repeated.
pub fn error(e: &anyhow::Error) {
    eprintln!("error: {e}");
    let mut shown = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if shown.contains(&text) {
            continue;
        }
        eprintln!("  Caused by: {text}");
        shown.push_str(&text);
    }
}

pub fn init_tracing(debug: bool) {
    use tracing_subscriber::EnvFilter;
    let default = if debug { "debug" } else { "warn" };
    let filter =
        EnvFilter::try_from_env("THERAPYGYM_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    // Colour only on a terminal: a log file or a pipe gets plain text.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal: a log file or pipe gets plain `key=value` text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}
