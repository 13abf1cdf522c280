//! Fault injection for crash tests, compiled only with the `fault-injection` feature (the test
//! suite builds with `--all-features`; release builds leave it out, and then every point is an
//! empty inline function).
//!
//! `THERAPYGYM_FAULT_PAUSE=POINT` makes the process stop at `POINT`: it creates the file named by
//! `THERAPYGYM_FAULT_READY` (when set) and sleeps, so a test can SIGKILL it exactly there. A
//! process nobody kills aborts after two minutes rather than carry on past the point.

/// Pauses here when `THERAPYGYM_FAULT_PAUSE` names `point` (feature `fault-injection` only).
#[cfg(feature = "fault-injection")]
pub fn pause_point(point: &str) {
    if std::env::var("THERAPYGYM_FAULT_PAUSE").as_deref() != Ok(point) {
        return;
    }
    if let Some(ready) = std::env::var_os("THERAPYGYM_FAULT_READY") {
        let _ = std::fs::write(ready, point);
    }
    std::thread::sleep(std::time::Duration::from_secs(120));
    std::process::abort();
}

/// Without the `fault-injection` feature: nothing.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn pause_point(_point: &str) {}
