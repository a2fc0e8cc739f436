//! Choosing the Blender a call goes to: the one configured (`--blender-port`), or one of the
//! announced `blendwire serve`s (`crate::instances`) by the tools' `blender` argument.

use super::{BlenderTools, Blenders, Failure, McpConfig, ToolOutcome};
use crate::client::Client;
use crate::instances::{self, ChooseError, Instance};
use crate::journal::Protocol;
use parking_lot::Mutex;
use rmcp::model::ContentBlock;
use rmcp::ErrorData;
use serde_json::{json, Value};
use std::sync::atomic::AtomicU8;
use std::sync::Arc;
use std::time::Duration;

/// `reachable` before the first call (0: not reachable, 1: reachable).
const UNKNOWN: u8 = 2;

/// One Blender service and what the tools keep for it.
#[derive(Clone)]
struct Link {
    client: Arc<Client>,
    addr: String,
    reachable: Arc<AtomicU8>,
}

impl Link {
    fn new(host: &str, port: u16, config: &McpConfig) -> Link {
        Link::with(host, port, config.timeout, config.connect_timeout, config.token.clone())
    }

    fn with(host: &str, port: u16, timeout: Duration, connect_timeout: Duration, token: Option<String>) -> Link {
        let host = crate::addr::connect_host(host);
        let host = host.as_str();
        Link {
            client: Arc::new(Client::new(host, port, timeout, connect_timeout).with_token(token)),
            addr: format!("{host}:{port}"),
            reachable: Arc::new(AtomicU8::new(UNKNOWN)),
        }
    }
}

/// The announced services met so far, each with its own client (connections, job ids).
pub(super) struct Announced {
    links: Mutex<Vec<Link>>,
    timeout: Duration,
    connect_timeout: Duration,
    token: Option<String>,
}

impl Announced {
    fn link(&self, instance: &Instance) -> Link {
        let addr = format!("{}:{}", instance.connect_host(), instance.service.port);
        let mut links = self.links.lock();
        if let Some(link) = links.iter().find(|l| l.addr == addr) {
            return link.clone();
        }
        let link = Link::with(
            &instance.connect_host(),
            instance.service.port,
            self.timeout,
            self.connect_timeout,
            self.token.clone(),
        );
        links.push(link.clone());
        link
    }
}

/// The tools' argument that picks a Blender when several run.
pub const BLENDER_ARG: &str = "blender";

impl BlenderTools {
    pub fn new(config: McpConfig) -> Self {
        let link = |host: &str, port: u16| Link::new(host, port, &config);
        let (default, announced) = match &config.blenders {
            Blenders::One { host, port } => (link(host, *port), None),
            Blenders::Announced => (
                link(crate::defaults::DEFAULT_HOST, crate::defaults::DEFAULT_PORT),
                Some(Arc::new(Announced {
                    links: Mutex::new(Vec::new()),
                    timeout: config.timeout,
                    connect_timeout: config.connect_timeout,
                    token: config.token.clone(),
                })),
            ),
        };
        BlenderTools {
            client: default.client,
            addr: default.addr,
            timeout: config.timeout,
            reachable: default.reachable,
            announced,
            watch: Arc::default(),
            subscription: Arc::default(),
            audit: config.audit.clone(),
            dialect: Protocol::McpStdio,
        }
    }

    /// These tools for the Blender `selector` names (the `blender` argument): with one service
    /// configured, that one (a selector that names another is an error); with the announced ones,
    /// the one chosen (the only one without a selector), else the default address when none is
    /// announced.
    pub(super) async fn for_blender(&self, selector: Option<&str>) -> Result<BlenderTools, Failure> {
        let Some(announced) = &self.announced else {
            return match selector {
                Some(s) if !self.addr.ends_with(&format!(":{}", s.trim())) => Err(Failure(format!(
                    "this MCP server talks to the one Blender at {} (--blender-port); blender={s:?} is not it. \
                     Run `blendwire mcp` without --blender-port to reach every running blendwire serve",
                    self.addr
                ))),
                _ => Ok(self.clone()),
            };
        };
        let wanted = selector.map(str::to_string);
        let chosen = tokio::task::spawn_blocking(move || instances::choose(wanted.as_deref()))
            .await
            .map_err(|e| Failure(format!("cannot read the running Blenders: {e}")))?;
        match chosen {
            Ok(instance) => {
                let link = announced.link(&instance);
                Ok(BlenderTools {
                    client: link.client,
                    addr: link.addr,
                    reachable: link.reachable,
                    ..self.clone()
                })
            }
            // Nothing announced: a Blender that serves without announcing (the add-on) may still
            // be at the default address; the connect error then says how to start one.
            Err(ChooseError::NoneRunning) if selector.is_none() => Ok(self.clone()),
            Err(e) => Err(Failure(format!(
                "{e}; pass the tools' {BLENDER_ARG} argument (list_blenders shows them)"
            ))),
        }
    }

    /// These tools for resources and the scene subscription: they take no `blender` argument, so
    /// they are the only (or the default) Blender's.
    pub(super) async fn for_resources(&self) -> Result<BlenderTools, ErrorData> {
        self.for_blender(None)
            .await
            .map_err(|Failure(message)| ErrorData::invalid_params(message, None))
    }

    /// The list_blenders tool: the services these tools can reach.
    pub(super) async fn list_blenders(&self) -> ToolOutcome {
        let found = match &self.announced {
            None => json!({"mode": "one", "address": self.addr, "blenders": []}),
            Some(_) => {
                let all = tokio::task::spawn_blocking(instances::discover)
                    .await
                    .map_err(|e| Failure(format!("cannot read the running Blenders: {e}")))?;
                let list: Vec<Value> = all.iter().map(Instance::to_json).collect();
                json!({
                    "mode": "announced",
                    "directory": instances::dir().display().to_string(),
                    "blenders": list,
                    "hint": match all.len() {
                        0 => format!("no blendwire serve is running; the tools try {} (start one with `blendwire serve`)", self.addr),
                        1 => "one Blender: the tools use it without a blender argument".to_string(),
                        _ => format!("several Blenders: pass {BLENDER_ARG} (a port, a pid, or part of the .blend file's name) to every tool"),
                    },
                })
            }
        };
        Ok(vec![ContentBlock::text(found.to_string())])
    }
}
