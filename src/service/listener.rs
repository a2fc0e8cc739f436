//! The accept loop: one task per connection, up to the connection limit; beyond it a connection
//! gets one `too_many_connections` answer and is closed.

use super::connection::Connection;
use super::{dialect, pipeline, Ctx};
use crate::error::RequestError;
use crate::shutdown::Shutdown;
use crate::wire::protocol;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

/// Which listener: what its connections speak.
#[derive(Debug, Clone, Copy)]
pub(super) enum Kind {
    /// The command service (BLD Remote's protocol).
    BldRemote,
    /// The MCP add-on listener: blender-mcp's or Blender Lab's, told apart per connection.
    McpAddon,
}

pub(super) async fn accept_loop(listener: TcpListener, ctx: Arc<Ctx>, mut shutdown: Shutdown, kind: Kind) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let open = ctx.metrics.connections_open.get();
                    if open >= ctx.max_connections as i64 {
                        log::warn!("refusing connection from {peer}: {open} connections open");
                        tokio::spawn(refuse(stream, ctx.clone(), shutdown.clone()));
                        continue;
                    }
                    log::debug!("connection from {peer} opened");
                    ctx.metrics.connections_total.inc();
                    let connection = Connection::new(stream, peer, ctx.clone(), shutdown.clone());
                    match kind {
                        Kind::BldRemote => tokio::spawn(pipeline::serve(connection, None)),
                        Kind::McpAddon => tokio::spawn(dialect::serve(connection)),
                    };
                }
                Err(e) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    log::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.signalled() => break,
        }
    }
    // The listener is dropped here, so the port is free as soon as the shutdown is signalled.
}

/// `_shutdown`: held until the answer is written, so a stop waits for it.
async fn refuse(mut stream: TcpStream, ctx: Arc<Ctx>, _shutdown: Shutdown) {
    let e = RequestError::TooManyConnections {
        limit: ctx.max_connections,
    };
    ctx.metrics.errors.inc(e.wire_code());
    let mut out = Vec::new();
    crate::wire::encode::write_value(&mut out, &protocol::request_error(&e));
    let _ = stream.write_all(&out).await;
    let _ = stream.shutdown().await;
}
