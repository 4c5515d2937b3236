//! Ctrl-C (SIGINT) and SIGTERM during the demo. The first signal raises a flag that the steps
//! check ([`check`]; the training job stops between steps on it), so the demo ends the normal
//! way: the embedded node stops (sealing what is pending, closing its stores), the report is
//! written, and the temporary chain home is removed. A second signal, or the demo not ending
//! within [`GRACE`], removes the temporary home and exits at once (status 130).

use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static TEMP_HOME: Mutex<Option<PathBuf>> = Mutex::new(None);

/// How long the demo may take to stop cleanly after the first signal.
pub const GRACE: Duration = Duration::from_secs(60);

/// The exit status of an interrupted demo (128 + SIGINT, as shells report it).
pub const EXIT_STATUS: i32 = 130;

/// Listens for SIGINT and SIGTERM on a thread of its own (the handlers are in place when this
/// returns); `temp_home` is removed on a forced exit. Fails when they cannot be installed.
pub fn install(temp_home: Option<PathBuf>) -> Result<()> {
    if let Ok(mut t) = TEMP_HOME.lock() {
        *t = temp_home;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the demo's signal listener")?;
    let signals = {
        let _in_rt = rt.enter();
        Signals::new().context("installing the demo's Ctrl-C handler")?
    };
    std::thread::Builder::new()
        .name("demo-signals".into())
        .spawn(move || rt.block_on(listen(signals)))
        .context("starting the demo's signal listener")?;
    Ok(())
}

/// SIGINT and SIGTERM as streams.
struct Signals {
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Signals {
                int: signal(SignalKind::interrupt())?,
                term: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    /// Waits for the next signal.
    async fn next(&mut self) {
        #[cfg(unix)]
        tokio::select! { _ = self.int.recv() => {}, _ = self.term.recv() => {} }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn listen(mut signals: Signals) {
    signals.next().await;
    INTERRUPTED.store(true, Ordering::SeqCst);
    eprintln!(
        "\nopenledger demo: interrupted: stopping the embedded node and removing the temporary \
         chain home (interrupt again to quit at once)"
    );
    tokio::select! {
        _ = signals.next() => eprintln!("openledger demo: interrupted again: quitting at once"),
        _ = tokio::time::sleep(GRACE) => eprintln!(
            "openledger demo: did not stop within {} s: quitting at once",
            GRACE.as_secs()
        ),
    }
    remove_temp_home();
    std::process::exit(EXIT_STATUS);
}

/// Removes the temporary chain home, if the demo made one.
pub fn remove_temp_home() {
    let t = TEMP_HOME.lock().ok().and_then(|mut t| t.take());
    if let Some(p) = t {
        match std::fs::remove_dir_all(&p) {
            Ok(()) => eprintln!(
                "openledger demo: removed the temporary home {}",
                p.display()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => eprintln!("openledger demo: cannot remove {}: {e}", p.display()),
        }
    }
}

/// The flag the training job stops on.
pub fn flag() -> &'static AtomicBool {
    &INTERRUPTED
}

/// Whether a signal arrived.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Fails once a signal arrived, so the demo stops at the next step.
pub fn check() -> Result<()> {
    if interrupted() {
        bail!("interrupted");
    }
    Ok(())
}
