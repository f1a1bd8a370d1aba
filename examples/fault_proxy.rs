//! A TCP proxy that can make the server behind it unreachable, for the
//! fault run (scripts/fault_run.sh): the service reaches Postgres through
//! it, and the run cuts it for a while.
//!
//! SIGUSR1 cuts: connections stop carrying bytes in either direction and new
//! ones are accepted but never forwarded, as when a network path drops every
//! packet. Nothing is closed, so the service sees silence, not a refusal,
//! and only its own timeouts get it out. SIGUSR2 restores: every connection
//! held through the cut is closed (its peers have long given up on it) and
//! new connections are forwarded again.
//!
//! `cargo run --example fault_proxy -- LISTEN_PORT UPSTREAM_HOST:PORT`

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(port), Some(upstream)) = (args.next(), args.next()) else {
        eprintln!("usage: fault_proxy LISTEN_PORT UPSTREAM_HOST:PORT");
        std::process::exit(2);
    };
    let listener = TcpListener::bind(("127.0.0.1", port.parse::<u16>().expect("a port"))).await?;
    // Whether a cut is on.
    let (cut, _) = watch::channel(false);
    let mut cuts = signal(SignalKind::user_defined1())?;
    let mut restores = signal(SignalKind::user_defined2())?;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (client, _) = accepted?;
                tokio::spawn(carry(client, upstream.clone(), cut.subscribe()));
            }
            _ = cuts.recv() => {
                cut.send_replace(true);
                eprintln!("fault_proxy: cut");
            }
            _ = restores.recv() => {
                cut.send_replace(false);
                eprintln!("fault_proxy: restored");
            }
        }
    }
}

/// Forwards one connection until either side closes it or a cut begins;
/// then holds it, silent, until the cut ends, and closes it.
async fn carry(client: TcpStream, upstream: String, mut cut: watch::Receiver<bool>) {
    if *cut.borrow() {
        wait_for_restore(&mut cut).await;
        return;
    }
    let Ok(server) = TcpStream::connect(&upstream).await else {
        return;
    };
    let _ = (client.set_nodelay(true), server.set_nodelay(true));
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let forward = async {
        tokio::select! {
            _ = pump(&mut client_read, &mut server_write) => {}
            _ = pump(&mut server_read, &mut client_write) => {}
        }
    };
    tokio::select! {
        _ = forward => return,
        _ = cut.wait_for(|on| *on) => {}
    }
    // The halves are still held here, unread: the peers hear nothing.
    wait_for_restore(&mut cut).await;
}

async fn wait_for_restore(cut: &mut watch::Receiver<bool>) {
    let _ = cut.wait_for(|on| !*on).await;
}

/// Copies bytes one way until end of stream or an error. A cut drops this
/// future between reads and writes, so no half-sent buffer is resumed.
async fn pump(from: &mut (impl AsyncReadExt + Unpin), to: &mut (impl AsyncWriteExt + Unpin)) {
    let mut buffer = vec![0_u8; 16 * 1024];
    loop {
        match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if to.write_all(&buffer[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}
