//! systemd's service notification protocol (`sd_notify`): one datagram to the socket named by
//! `NOTIFY_SOCKET`, when systemd set it (a unit with `Type=notify`). Tollgate says `READY=1`
//! once it serves, with `MAINPID=` so that after a binary upgrade systemd follows the new
//! process (`NotifyAccess=all`), and `STOPPING=1` when it drains. Without `NOTIFY_SOCKET`,
//! nothing is sent.

use std::os::unix::net::UnixDatagram;

/// Sends `state` (lines of `KEY=value`) to systemd, if it asked for notifications. A failure
/// is logged, never fatal: the gateway serves the same without it.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = send(&path, state) {
        tracing::warn!(
            socket = %path.to_string_lossy(),
            "cannot notify systemd ({state:?}): {e}"
        );
    }
}

fn send(path: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let socket = UnixDatagram::unbound()?;
    match path.as_bytes().strip_prefix(b"@") {
        // An abstract socket name (Linux), as systemd usually gives.
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            socket.send_to_addr(state.as_bytes(), &addr)?;
        }
        None => {
            socket.send_to(state.as_bytes(), path)?;
        }
    }
    Ok(())
}

/// What a process that now serves says: ready, and which process it is.
pub fn ready() {
    notify(&format!("READY=1\nMAINPID={}\n", std::process::id()));
}
