//! Ctrl-C for the commands that run for long (`eval`, `judge`): the first interrupt stops the
//! run cleanly (in-flight sessions are abandoned between commits, so nothing is half-written)
//! and the command prints how to resume and exits with [`INTERRUPTED`]; a second interrupt
//! exits at once (SQLite's journal still keeps every committed row whole).

use std::sync::Arc;

use tokio::sync::Notify;

use crate::ui;

/// Exit code of a run stopped by Ctrl-C (128 + SIGINT, as shells report it).
pub const INTERRUPTED: u8 = 130;

pub struct Interrupt {
    stop: Arc<Notify>,
}

impl Interrupt {
    /// Starts listening for Ctrl-C (SIGINT).
    pub fn install() -> Self {
        let stop = Arc::new(Notify::new());
        let notify = Arc::clone(&stop);
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_err() {
                return;
            }
            ui::info("interrupt: stopping cleanly (press Ctrl-C again to stop at once)");
            notify.notify_one();
            if tokio::signal::ctrl_c().await.is_ok() {
                ui::info("interrupt: stopped at once; resume the run to finish it");
                std::process::exit(i32::from(INTERRUPTED));
            }
        });
        Self { stop }
    }

    /// Completes at the first Ctrl-C.
    pub fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let stop = Arc::clone(&self.stop);
        async move { stop.notified().await }
    }
}
