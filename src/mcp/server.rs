//! Running `blendwire mcp`: a thread with its own tokio runtime serving stdio and/or Streamable
//! HTTP until stdin closes or it is stopped.

use super::{http, BlenderTools, HttpConfig, McpConfig, Transports};
use parking_lot::Mutex;
use rmcp::ServiceExt;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A running MCP server on a thread of its own (own tokio runtime), stopped by [`McpServer::stop`]
/// or when dropped.
pub struct McpServer {
    http_addr: Option<SocketAddr>,
    stop: CancellationToken,
    done: Mutex<mpsc::Receiver<Result<(), String>>>,
    /// What `done` said once it said it: `wait` can be asked again.
    outcome: Mutex<Option<Result<(), String>>>,
}

impl McpServer {
    /// Start serving. The HTTP listener is bound before this returns, so a taken port, a bad host
    /// or a missing token off loopback fails here.
    pub fn start(config: McpConfig, transports: Transports) -> Result<McpServer, String> {
        let (stdio, http) = match transports {
            Transports::Stdio => (true, None),
            Transports::Http(h) => (false, Some(h)),
            Transports::StdioAndHttp(h) => (true, Some(h)),
        };
        let http = match http {
            Some(h) => Some((http::bind(&h)?, h)),
            None => None,
        };
        let http_addr = match &http {
            Some((listener, _)) => Some(listener.local_addr().map_err(|e| e.to_string())?),
            None => None,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("blendwire-mcp")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the MCP runtime: {e}"))?;
        let server = BlenderTools::new(config);
        let target = match server.announced {
            Some(_) => format!("every running blendwire serve (else {})", server.addr),
            None => server.addr.clone(),
        };
        match http_addr {
            Some(a) => eprintln!(
                "blendwire mcp: MCP over Streamable HTTP at http://{a}{}{}, Blender service at {}",
                http::PATH,
                if stdio { " and on stdio" } else { "" },
                target
            ),
            None => eprintln!("blendwire mcp: MCP on stdio, Blender service at {target}"),
        }
        let stop = CancellationToken::new();
        let (tx, rx) = mpsc::channel();
        let stopper = stop.clone();
        std::thread::Builder::new()
            .name("blendwire-mcp".into())
            .spawn(move || {
                let outcome = runtime.block_on(serve(server, stdio, http, stopper));
                // A call still blocked on Blender (e.g. a long execute_code) must not keep the
                // process alive after the client went away.
                runtime.shutdown_timeout(Duration::from_secs(1));
                let _ = tx.send(outcome);
            })
            .map_err(|e| format!("cannot start the MCP server thread: {e}"))?;
        Ok(McpServer {
            http_addr,
            stop,
            done: Mutex::new(rx),
            outcome: Mutex::new(None),
        })
    }

    /// The bound HTTP address (the real port when 0 was asked), if serving HTTP.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// Ask it to stop (open HTTP sessions are ended); `wait` tells when it has.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Its outcome once it has stopped, waiting at most `timeout`; None while it runs.
    pub fn wait(&self, timeout: Duration) -> Option<Result<(), String>> {
        let mut outcome = self.outcome.lock();
        if outcome.is_none() {
            *outcome = match self.done.lock().recv_timeout(timeout) {
                Ok(result) => Some(result),
                Err(mpsc::RecvTimeoutError::Timeout) => return None,
                Err(mpsc::RecvTimeoutError::Disconnected) => Some(Err(
                    "the MCP server thread ended without a result (a bug: it panicked)".into(),
                )),
            };
        }
        outcome.clone()
    }
}

impl Drop for McpServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn serve(
    server: BlenderTools,
    stdio: bool,
    http: Option<(std::net::TcpListener, HttpConfig)>,
    stop: CancellationToken,
) -> Result<(), String> {
    let http_task =
        http.map(|(listener, config)| tokio::spawn(http::serve(listener, config, server.clone(), stop.clone())));
    let outcome = if stdio {
        let outcome = serve_stdio(server, &stop).await;
        stop.cancel();
        outcome
    } else {
        stop.cancelled().await;
        Ok(())
    };
    if let Some(task) = http_task {
        // Sessions end with `stop`; a stream that lingers is not waited for long.
        match tokio::time::timeout(Duration::from_secs(2), task).await {
            Ok(Ok(Err(e))) => return Err(e),
            Ok(Err(e)) => return Err(format!("the MCP HTTP server failed: {e}")),
            _ => {}
        }
    }
    outcome
}

async fn serve_stdio(server: BlenderTools, stop: &CancellationToken) -> Result<(), String> {
    // stdio_pipes: when the client gave us pipes (the usual case), reads and writes run on the
    // reactor instead of a blocking thread per message.
    let initialized = tokio::select! {
        initialized = server.serve(rmcp::transport::stdio_pipes()) => initialized,
        _ = stop.cancelled() => return Ok(()),
    };
    let running = match initialized {
        Ok(running) => running,
        Err(rmcp::service::ServerInitializeError::ConnectionClosed(_)) => {
            eprintln!("blendwire mcp: stdin closed, exiting");
            return Ok(());
        }
        Err(other) => return Err(format!("MCP initialization failed: {other}")),
    };
    let ct = running.cancellation_token();
    tokio::select! {
        ended = running.waiting() => {
            ended.map_err(|e| format!("the MCP service stopped: {e}"))?;
            eprintln!("blendwire mcp: stdin closed, exiting");
        }
        _ = stop.cancelled() => ct.cancel(),
    }
    Ok(())
}
