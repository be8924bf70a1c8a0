//! [`FaultProxy`]: an in-process TCP proxy in front of Redis that can blackhole, delay or
//! reset connections.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What a [`FaultProxy`] does with traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyMode {
    /// Forward both ways.
    Forward,
    /// Keep connections open but drop every byte, both ways: the peer hangs.
    Blackhole,
    /// Forward each chunk after this delay.
    Delay(Duration),
    /// Reset every connection (RST) and every new one at once.
    Reset,
}

/// An in-process TCP proxy on `127.0.0.1` in front of an upstream address, whose
/// behaviour a test switches at run time. Stops when dropped.
///
/// ```no_run
/// # async fn f() -> std::io::Result<()> {
/// use secureconnect_redis_fallback::testing::{FaultProxy, ProxyMode, RedisServer};
///
/// let server = RedisServer::start()?;
/// let proxy = FaultProxy::start(([127, 0, 0, 1], server.port()).into()).await?;
/// let url = proxy.url(); // connect the client here
/// proxy.set_mode(ProxyMode::Blackhole);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    mode: watch::Sender<ProxyMode>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    ///
    /// # Errors
    ///
    /// If no port can be bound.
    pub async fn start(upstream: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (mode, _) = watch::channel(ProxyMode::Forward);
        let modes = mode.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mode = modes.subscribe();
                tokio::spawn(connection(client, upstream, mode));
            }
        });
        Ok(Self { addr, mode, task })
    }

    /// The proxy's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `redis://<proxy address>/`
    pub fn url(&self) -> String {
        format!("redis://{}/", self.addr)
    }

    /// Switches the behaviour for open and new connections.
    pub fn set_mode(&self, mode: ProxyMode) {
        self.mode.send_replace(mode);
    }

    /// The current behaviour.
    pub fn mode(&self) -> ProxyMode {
        *self.mode.borrow()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn reset(stream: &TcpStream) {
    // Linger 0 turns the close into an RST.
    let _ = socket_linger_zero(stream);
}

fn socket_linger_zero(stream: &TcpStream) -> io::Result<()> {
    let sock = rustix::net::sockopt::set_socket_linger;
    sock(stream, Some(Duration::ZERO)).map_err(io::Error::from)
}

async fn connection(client: TcpStream, upstream: SocketAddr, mut mode: watch::Receiver<ProxyMode>) {
    if *mode.borrow_and_update() == ProxyMode::Reset {
        reset(&client);
        return;
    }
    let Ok(server) = TcpStream::connect(upstream).await else {
        reset(&client);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let mut up = [0u8; 16 * 1024];
    let mut down = [0u8; 16 * 1024];
    loop {
        tokio::select! {
            changed = mode.changed() => {
                if changed.is_err() || *mode.borrow() == ProxyMode::Reset {
                    break;
                }
            }
            read = client_read.read(&mut up) => {
                let Ok(n @ 1..) = read else { break };
                if !forward(&mode, &mut server_write, &up[..n]).await { break; }
            }
            read = server_read.read(&mut down) => {
                let Ok(n @ 1..) = read else { break };
                if !forward(&mode, &mut client_write, &down[..n]).await { break; }
            }
        }
    }
    // Reunite to reset both sides.
    if let (Ok(client), Ok(server)) = (
        client_read.reunite(client_write),
        server_read.reunite(server_write),
    ) {
        reset(&client);
        reset(&server);
    }
}

/// Writes `data` as the mode says; `false` ends the connection.
async fn forward(
    mode: &watch::Receiver<ProxyMode>,
    out: &mut tokio::net::tcp::OwnedWriteHalf,
    data: &[u8],
) -> bool {
    let current = *mode.borrow();
    match current {
        ProxyMode::Forward => out.write_all(data).await.is_ok(),
        ProxyMode::Delay(delay) => {
            tokio::time::sleep(delay).await;
            out.write_all(data).await.is_ok()
        }
        ProxyMode::Blackhole => true,
        ProxyMode::Reset => false,
    }
}
