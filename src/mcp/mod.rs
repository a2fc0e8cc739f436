//! `blendwire mcp`: a Model Context Protocol server over stdio and/or Streamable HTTP (the official
//! SDK, `rmcp`) whose tools forward to a blendwire / BLD Remote MCP service through a `Client`
//! (persistent connections, one per concurrent call).
//!
//! Every call names its Blender job (the request `id`): an agent's `notifications/cancelled`
//! cancels that job (queued: dropped; running: interrupted), and with a `progressToken` the job's
//! progress and printed output come back as `notifications/progress`.
//!
//! Nothing talks to Blender until a tool is called, so `initialize` and `tools/list` are answered
//! at once whether Blender runs or not. The blocking `Client` runs on tokio's blocking pool, never
//! on a worker. A connection lost mid-call is retried once only for commands that cannot change
//! the scene; `execute_code` (and the persist writes) are reported as interrupted instead.
//! Logs go to stderr: stdout carries the protocol. Over HTTP, every session shares one client, so
//! several agents at once each get their own jobs (and connections).
//!
//! The parts: [`server`] runs it (stdio, HTTP in [`http`]); [`handler`] answers MCP's requests;
//! [`tools`] is the one tool table (name, schema, handler) and the tools; [`forward`] sends a call
//! to Blender (progress, cancel, retry); [`choose`] picks the Blender when several run;
//! [`resources`] holds the resources and the prompt.

use crate::client::Client;
use crate::journal::{Audit, Protocol};
use choose::Announced;
use rmcp::model::ContentBlock;
use rmcp::service::RequestContext;
use rmcp::RoleServer;
use std::sync::atomic::AtomicU8;
use std::sync::Arc;
use std::time::Duration;

mod choose;
mod forward;
mod handler;
pub mod http;
pub mod resources;
mod server;
mod tools;

pub use choose::BLENDER_ARG;
pub use http::HttpConfig;
pub use server::McpServer;
pub use tools::tools;

/// Which Blender service(s) the tools talk to.
#[derive(Clone, Debug)]
pub enum Blenders {
    /// One service at host:port (`--blender-port`, `$BLD_REMOTE_MCP_PORT`, `serve --mcp-http`).
    One { host: String, port: u16 },
    /// Every running `blendwire serve` (announced in the runtime directory, `crate::instances`),
    /// chosen per call by the tools' `blender` argument; the only one needs no argument. With none
    /// announced, the default address (a Blender that serves without announcing, e.g. the add-on).
    Announced,
}

pub struct McpConfig {
    pub blenders: Blenders,
    /// Per call, response included; longer than any job's server-side deadline.
    pub timeout: Duration,
    /// How long a call keeps trying to reach Blender before failing with "not reachable".
    pub connect_timeout: Duration,
    /// Sent as `"token"` with every request (services started with BLENDWIRE_TOKEN require it).
    pub token: Option<String>,
    /// The audit log this server writes a line per tool call to (None: off).
    pub audit: Option<Arc<Audit>>,
}

/// Which transports one `blendwire mcp` serves (both share the tools, hence the Blender client).
pub enum Transports {
    /// stdin/stdout, until stdin closes.
    Stdio,
    /// Streamable HTTP only, until stopped.
    Http(HttpConfig),
    /// Both; closing stdin stops both (the agent that started this process is gone).
    StdioAndHttp(HttpConfig),
}

/// The tools, shared by every session (clones share the Blender client, hence its connections
/// and job ids).
#[derive(Clone)]
pub struct BlenderTools {
    client: Arc<Client>,
    addr: String,
    timeout: Duration,
    /// Whether the last call reached Blender (UNKNOWN before the first): only changes are logged.
    reachable: Arc<AtomicU8>,
    /// With [`Blenders::Announced`]: the services found so far, each with its client (the fields
    /// above are then the default address's, and each call works on a copy for its Blender).
    announced: Option<Arc<Announced>>,
    /// Subscriptions to the scene, across sessions.
    watch: Arc<resources::SceneWatch>,
    /// This session's subscription (each HTTP session gets its own, see `for_session`).
    subscription: Arc<resources::Subscriber>,
    /// Where each tool call's audit lines go, and the transport they name (`mcp_stdio`,
    /// `mcp_http`).
    audit: Option<Arc<Audit>>,
    dialect: Protocol,
}

/// The MCP request a tool call serves (cancellation, progress token); None outside one (tests).
type Rq<'a> = Option<&'a RequestContext<RoleServer>>;

/// Why a tool produced no result; becomes an `isError` tool result with this text.
struct Failure(String);

type ToolOutcome = Result<Vec<ContentBlock>, Failure>;

impl BlenderTools {
    /// The tools for a new session: shared client and scene watch, a subscription of its own.
    pub fn for_session(&self) -> Self {
        BlenderTools {
            subscription: Arc::default(),
            ..self.clone()
        }
    }
}
