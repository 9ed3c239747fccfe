//! A TCP relay that can be cut: the aggregator reaches ClickHouse through it,
//! so the chaos run can blackhole that one link (close the port and drop
//! every open connection) without touching ClickHouse or the other stages.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;

/// The relay's handle: `cut` closes the link until `restore`.
pub struct Blackhole {
    pub port: u16,
    cut: watch::Sender<bool>,
    open: Arc<AtomicBool>,
}

impl Blackhole {
    /// Relays `127.0.0.1:<port>` to `127.0.0.1:<target>`.
    pub async fn start(target: u16) -> anyhow::Result<Blackhole> {
        let listener = bind(0)?;
        let port = listener.local_addr()?.port();
        let (cut, cut_rx) = watch::channel(false);
        let open = Arc::new(AtomicBool::new(true));
        tokio::spawn(relay(listener, port, target, cut_rx, open.clone()));
        Ok(Blackhole { port, cut, open })
    }

    /// Closes the port and drops the relay's connections: a client sees a
    /// reset, then "connection refused" until [`Blackhole::restore`].
    pub async fn cut(&self) {
        let _ = self.cut.send(true);
        while self.open.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn restore(&self) {
        let _ = self.cut.send(false);
        while !self.open.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Binds with SO_REUSEADDR, so the port can be reopened at once after a cut.
fn bind(port: u16) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::from(([127, 0, 0, 1], port)))?;
    socket.listen(128)
}

async fn relay(
    mut listener: TcpListener,
    port: u16,
    target: u16,
    mut cut: watch::Receiver<bool>,
    open: Arc<AtomicBool>,
) {
    loop {
        // Each connection ends when the link is cut (or either side closes).
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((client, _)) = accepted {
                    tokio::spawn(pipe(client, target, cut.clone()));
                }
            }
            changed = cut.changed() => {
                if changed.is_err() {
                    return;
                }
                if *cut.borrow_and_update() {
                    drop(listener);
                    open.store(false, Ordering::SeqCst);
                    while *cut.borrow_and_update() {
                        if cut.changed().await.is_err() {
                            return;
                        }
                    }
                    listener = loop {
                        match bind(port) {
                            Ok(l) => break l,
                            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                        }
                    };
                    open.store(true, Ordering::SeqCst);
                }
            }
        }
    }
}

async fn pipe(mut client: TcpStream, target: u16, mut cut: watch::Receiver<bool>) {
    let Ok(mut server) = TcpStream::connect(("127.0.0.1", target)).await else {
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        // Both ends are dropped: the client's connection ends mid-request.
        _ = cut.wait_for(|cut| *cut) => {}
    }
}
