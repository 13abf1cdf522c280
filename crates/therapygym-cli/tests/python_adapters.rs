//! The Python adapters (`adapters/python`, verl / OpenRLHF / TRL) against the binary this test
//! run built: their unittest suite starts real `therapygym serve` processes. Run from here so
//! the suite uses exactly the tested binary and needs no second build with other features.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

#[test]
fn the_python_adapter_suite_passes_against_this_binary() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let adapters = root.join("adapters/python");
    let out = Command::new("python3")
        .args(["-m", "unittest", "discover", "-s", "tests", "-v"])
        .current_dir(&adapters)
        .env("PYTHONPATH", &adapters)
        .env("THERAPYGYM_BIN", env!("CARGO_BIN_EXE_therapygym"))
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run python3 ({e}); the adapter tests need Python 3.9 or newer on PATH")
        });
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "python adapter tests failed:\n{log}");
    // unittest exits 0 when discovery finds nothing; a suite that silently vanished must fail.
    let ran: usize = log
        .lines()
        .find_map(|l| {
            l.strip_prefix("Ran ")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0);
    assert!(ran >= 40, "only {ran} python tests ran:\n{log}");
}
