//! Waiting for the signals that mean "stop": SIGTERM (systemd, `lab up`) and
//! SIGINT (Ctrl-C).

/// Resolves when SIGTERM or SIGINT arrives. If the handlers cannot be
/// installed the error is returned at once, so a binary never runs unstoppable.
pub async fn terminate() -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
