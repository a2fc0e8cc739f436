//! Every rule of the service, queue and router settings, in one place, and their resolution into
//! configs (the defaults themselves are in `defaults`). At the top of the module graph: nothing
//! below it imports it.
//!
//! Callers (the pyo3 layer, the CLI, the add-on) pass what the user gave, `None` for "not set";
//! [`ServiceSettings::resolve`] and [`RouterSettings::resolve`] fill in the defaults and return
//! either a config or every [`Problem`]. A problem is a setting name plus a rule text that reads
//! after any label (`port`, `--port`, "Port"), so each rule is worded once.

mod trust;

pub use trust::{audit_log, AuditSettings, CheckpointSettings, Checkpoints};

use crate::auth;
use crate::backoff::BackoffPolicy;
use crate::defaults::{DEFAULT_AUDIT_KEEP, DEFAULT_AUDIT_MAX_BYTES, DEFAULT_CHECKPOINTS, DEFAULT_CHECKPOINT_BYTES};
use crate::defaults::{
    DEFAULT_AUTH_TIMEOUT, DEFAULT_CLIENT_CONNECT_TIMEOUT, DEFAULT_CLIENT_TIMEOUT, DEFAULT_COMMAND_TIMEOUT,
    DEFAULT_ENGINE_URL, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_HOST, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_REQUEST_BYTES,
    DEFAULT_MCP_ADDON_PORT, DEFAULT_MCP_CONNECT_TIMEOUT, DEFAULT_MCP_TIMEOUT, DEFAULT_NAMESPACE,
    DEFAULT_OUTBOX_MAX_BYTES, DEFAULT_OUTBOX_MAX_COUNT, DEFAULT_POLL_INTERVAL, DEFAULT_POLL_LIMIT, DEFAULT_PORT,
    DEFAULT_QUEUE_CAPACITY, DEFAULT_READ_TIMEOUT, DEFAULT_SOCKETIO_PATH, DEFAULT_STOP_TIMEOUT, DEFAULT_TICK_BUDGET_MS,
    DEFAULT_TIMEOUT, DEFAULT_WATCHDOG, DEFAULT_WATCHDOG_AFTER_FAILURES, DEFAULT_WRITE_TIMEOUT, INTERRUPT_GRACE,
    LAB_MAX_REQUEST_BYTES, LAB_READ_TIMEOUT, MAX_QUEUE_CAPACITY, MAX_SECONDS, MCP_ADDON_PORT_ENV, MIN_REQUEST_BYTES,
    WATCHDOG_ENV,
};
use crate::journal::AuditConfig;
use crate::router::tls::CA_FILE_ENV;
use crate::router::url::engine_url;
use crate::router::RouterConfig;
use crate::service::ServiceConfig;
use crate::watchdog::WatchdogPolicy;
use crate::wire::framing::Limits;
use serde::Deserialize;
use serde_json::{json, Value};
use std::time::Duration;

/// One setting that breaks its rule: `"{setting} {rule}"` is the whole sentence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting} {rule}")]
pub struct Problem {
    pub setting: &'static str,
    pub rule: String,
}

/// Every default, by setting name, for help texts and UIs that show them.
pub fn defaults() -> Value {
    json!({
        "host": DEFAULT_HOST,
        "port": DEFAULT_PORT,
        "mcp_addon_port": DEFAULT_MCP_ADDON_PORT,
        "mcp_addon_port_env": MCP_ADDON_PORT_ENV,
        "lab_max_request_bytes": LAB_MAX_REQUEST_BYTES,
        "lab_read_timeout": LAB_READ_TIMEOUT.as_secs_f64(),
        "queue_capacity": DEFAULT_QUEUE_CAPACITY,
        "max_connections": DEFAULT_MAX_CONNECTIONS,
        "max_request_bytes": DEFAULT_MAX_REQUEST_BYTES,
        "default_timeout": DEFAULT_TIMEOUT.as_secs_f64(),
        "read_timeout": DEFAULT_READ_TIMEOUT.as_secs_f64(),
        "write_timeout": DEFAULT_WRITE_TIMEOUT.as_secs_f64(),
        "stop_timeout": DEFAULT_STOP_TIMEOUT.as_secs_f64(),
        "tick_budget_ms": DEFAULT_TICK_BUDGET_MS,
        "engine_url": DEFAULT_ENGINE_URL,
        "socketio_path": DEFAULT_SOCKETIO_PATH,
        "namespace": DEFAULT_NAMESPACE,
        "watchdog_seconds": DEFAULT_WATCHDOG.as_secs_f64(),
        "watchdog_env": WATCHDOG_ENV,
        "ca_file_env": CA_FILE_ENV,
        "watchdog_after_failures": DEFAULT_WATCHDOG_AFTER_FAILURES,
        "backoff_initial": BackoffPolicy::DEFAULT.initial.as_secs_f64(),
        "backoff_max": BackoffPolicy::DEFAULT.max.as_secs_f64(),
        "backoff_jitter": BackoffPolicy::DEFAULT.jitter,
        "handshake_timeout": DEFAULT_HANDSHAKE_TIMEOUT.as_secs_f64(),
        "auth_timeout": DEFAULT_AUTH_TIMEOUT.as_secs_f64(),
        "command_timeout": DEFAULT_COMMAND_TIMEOUT.as_secs_f64(),
        "poll_interval": DEFAULT_POLL_INTERVAL.as_secs_f64(),
        "poll_limit": DEFAULT_POLL_LIMIT.as_secs_f64(),
        "outbox_max_count": DEFAULT_OUTBOX_MAX_COUNT,
        "outbox_max_bytes": DEFAULT_OUTBOX_MAX_BYTES,
        "client_timeout": DEFAULT_CLIENT_TIMEOUT.as_secs_f64(),
        "client_connect_timeout": DEFAULT_CLIENT_CONNECT_TIMEOUT.as_secs_f64(),
        "mcp_timeout": DEFAULT_MCP_TIMEOUT.as_secs_f64(),
        "mcp_connect_timeout": DEFAULT_MCP_CONNECT_TIMEOUT.as_secs_f64(),
        "interrupt_grace": INTERRUPT_GRACE.as_secs_f64(),
        "audit_log": AuditConfig::default_path(),
        "audit_code": "full",
        "audit_max_bytes": DEFAULT_AUDIT_MAX_BYTES,
        "audit_keep": DEFAULT_AUDIT_KEEP,
        "checkpoints": DEFAULT_CHECKPOINTS,
        "checkpoint_bytes": DEFAULT_CHECKPOINT_BYTES,
    })
}

// ---- single rules ---------------------------------------------------------------------------

/// A duration: more than 0 and at most 30 days.
pub fn seconds(value: f64) -> Result<Duration, String> {
    if value.is_finite() && value > 0.0 && value <= MAX_SECONDS {
        Ok(Duration::from_secs_f64(value))
    } else {
        Err(format!(
            "must be a number of seconds above 0 (at most 30 days), got {value}"
        ))
    }
}

/// The watchdog's time: like [`seconds`], or 0 for no watchdog (`None`).
pub fn watchdog(value: f64) -> Result<Option<Duration>, String> {
    if value == 0.0 {
        return Ok(None);
    }
    seconds(value)
        .map(Some)
        .map_err(|_| format!("must be 0 (no watchdog) or a number of seconds above 0 (at most 30 days), got {value}"))
}

/// The watchdog time from [`WATCHDOG_ENV`], if set (`Err` names the variable and its value).
pub fn watchdog_from_env() -> Result<Option<f64>, String> {
    let Ok(raw) = std::env::var(WATCHDOG_ENV) else {
        return Ok(None);
    };
    if raw.trim().is_empty() {
        return Ok(None);
    }
    raw.trim().parse::<f64>().map(Some).map_err(|_| {
        format!("(from ${WATCHDOG_ENV}) must be a number of seconds, 0 disables the watchdog, got {raw:?}")
    })
}

pub fn port(value: i64) -> Result<u16, String> {
    u16::try_from(value).map_err(|_| format!("must be between 0 and 65535 (0 picks a free port), got {value}"))
}

/// The MCP add-on listener's port: a port, and not the command service's own.
pub fn mcp_addon_port(value: i64, service_port: u16) -> Result<u16, String> {
    let p = port(value)?;
    if p != 0 && p == service_port {
        return Err(format!(
            "must differ from the command service's port ({service_port}); both ecosystems expect {DEFAULT_MCP_ADDON_PORT}"
        ));
    }
    Ok(p)
}

/// The MCP add-on port from [`MCP_ADDON_PORT_ENV`], if set (`Err` names the variable and its value).
pub fn mcp_addon_port_from_env() -> Result<Option<i64>, String> {
    let Ok(raw) = std::env::var(MCP_ADDON_PORT_ENV) else {
        return Ok(None);
    };
    if raw.trim().is_empty() {
        return Ok(None);
    }
    raw.trim()
        .parse::<i64>()
        .map(Some)
        .map_err(|_| format!("(from ${MCP_ADDON_PORT_ENV}) must be a port number (0 picks a free port), got {raw:?}"))
}

/// A whole number in `min..=max`.
/// The port a client connects to: a listener's rule without 0 (which only means "any free port").
pub fn client_port(value: i64) -> Result<u16, String> {
    u16::try_from(value)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("must be between 1 and 65535, got {value}"))
}

pub fn count(value: i64, min: usize, max: usize) -> Result<usize, String> {
    match usize::try_from(value) {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ if max == usize::MAX => Err(format!("must be at least {min}, got {value}")),
        _ => Err(format!("must be between {min} and {max}, got {value}")),
    }
}

pub fn queue_capacity(value: i64) -> Result<usize, String> {
    count(value, 1, MAX_QUEUE_CAPACITY)
}

pub fn namespace(value: &str) -> Result<(), String> {
    if value.starts_with('/') {
        Ok(())
    } else {
        Err(format!("must start with '/', got {value:?}"))
    }
}

pub fn jitter(value: f64) -> Result<f64, String> {
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(format!("must be between 0 and 1, got {value}"))
    }
}

/// The CA-file rule: a readable PEM file of CA certificates, each usable as a trust anchor.
/// `Ok` is the path (empty: not set).
pub fn ca_file(path: &str) -> Result<Option<std::path::PathBuf>, String> {
    if path.trim().is_empty() {
        return Ok(None);
    }
    let path = std::path::PathBuf::from(path);
    crate::router::tls::load_ca_file(&path)
        .map(|_| Some(path))
        .map_err(|e| e.to_string())
}

/// The CA file from [`CA_FILE_ENV`] when none is given, checked; the rule text says where it came from.
pub fn ca_file_or_env(given: Option<&str>) -> Result<Option<std::path::PathBuf>, String> {
    match given {
        Some(path) => ca_file(path),
        None => match std::env::var_os(CA_FILE_ENV) {
            Some(raw) => ca_file(&raw.to_string_lossy()).map_err(|rule| format!("(from ${CA_FILE_ENV}) {rule}")),
            None => Ok(None),
        },
    }
}

/// A `logging` level name or number → "DEBUG", "INFO", "WARNING" or "ERROR".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Debug,
    Info,
    Warning,
    Error,
}

impl LogLevel {
    pub fn from_number(n: i64) -> LogLevel {
        match n {
            i64::MIN..=10 => LogLevel::Debug,
            11..=20 => LogLevel::Info,
            21..=30 => LogLevel::Warning,
            _ => LogLevel::Error,
        }
    }

    pub fn from_name(name: &str) -> Result<LogLevel, String> {
        match name.trim().to_ascii_uppercase().as_str() {
            "DEBUG" | "TRACE" => Ok(LogLevel::Debug),
            "INFO" => Ok(LogLevel::Info),
            "WARNING" | "WARN" => Ok(LogLevel::Warning),
            "ERROR" | "CRITICAL" => Ok(LogLevel::Error),
            other => Err(format!(
                "unknown log level {other:?}; use DEBUG, INFO, WARNING or ERROR"
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            LogLevel::Debug => "DEBUG",
            LogLevel::Info => "INFO",
            LogLevel::Warning => "WARNING",
            LogLevel::Error => "ERROR",
        }
    }

    pub fn filter(self) -> log::LevelFilter {
        match self {
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Warning => log::LevelFilter::Warn,
            LogLevel::Error => log::LevelFilter::Error,
        }
    }
}

// ---- whole settings -------------------------------------------------------------------------

/// Collects problems while settings are resolved; a broken setting yields its default meanwhile.
#[derive(Default)]
struct Checker {
    problems: Vec<Problem>,
}

impl Checker {
    fn check<T>(&mut self, setting: &'static str, result: Result<T, String>, fallback: T) -> T {
        result.unwrap_or_else(|rule| {
            self.problems.push(Problem { setting, rule });
            fallback
        })
    }

    fn seconds(&mut self, setting: &'static str, value: Option<f64>, default: Duration) -> Duration {
        match value {
            Some(v) => self.check(setting, seconds(v), default),
            None => default,
        }
    }

    fn count(&mut self, setting: &'static str, value: Option<i64>, min: usize, default: usize) -> usize {
        match value {
            Some(v) => self.check(setting, count(v, min, usize::MAX), default),
            None => default,
        }
    }

    fn finish<T>(self, value: T) -> Result<T, Vec<Problem>> {
        if self.problems.is_empty() {
            Ok(value)
        } else {
            Err(self.problems)
        }
    }
}

/// The service and queue settings as given; `None` means the default. Its fields are the settings'
/// names, also in Python (keyword arguments are deserialized into it, unknown names refused).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceSettings {
    pub host: Option<String>,
    pub port: Option<i64>,
    /// The second listener (blender-mcp and Blender Lab dialects); `None`: off.
    pub mcp_addon_port: Option<i64>,
    pub commands: Vec<String>,
    pub default_timeout: Option<f64>,
    pub max_request_bytes: Option<i64>,
    pub max_connections: Option<i64>,
    pub read_timeout: Option<f64>,
    pub write_timeout: Option<f64>,
    pub token: Option<String>,
    pub queue_capacity: Option<i64>,
}

/// What [`ServiceSettings::resolve`] gives: the service's config and the queue's capacity.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub config: ServiceConfig,
    pub queue_capacity: Option<usize>,
}

impl ServiceSettings {
    /// The config with defaults filled in, or every problem. `check_host`: also apply the
    /// loopback rule here (the service applies it itself when it starts, to the bound address).
    pub fn resolve(self, check_host: bool) -> Result<Resolved, Vec<Problem>> {
        let mut c = Checker::default();
        let host = self.host.unwrap_or_else(|| DEFAULT_HOST.to_string());
        let port = match self.port {
            Some(p) => c.check("port", port(p), DEFAULT_PORT),
            None => DEFAULT_PORT,
        };
        let mcp_addon_port = self
            .mcp_addon_port
            .map(|p| c.check("mcp_addon_port", mcp_addon_port(p, port), 0));
        let default_timeout = c.seconds("default_timeout", self.default_timeout, DEFAULT_TIMEOUT);
        let max_frame_bytes = c.count(
            "max_request_bytes",
            self.max_request_bytes,
            MIN_REQUEST_BYTES,
            DEFAULT_MAX_REQUEST_BYTES,
        );
        let max_connections = c.count("max_connections", self.max_connections, 1, DEFAULT_MAX_CONNECTIONS);
        let read_timeout = c.seconds("read_timeout", self.read_timeout, DEFAULT_READ_TIMEOUT);
        let write_timeout = c.seconds("write_timeout", self.write_timeout, DEFAULT_WRITE_TIMEOUT);
        let token = self.token.filter(|t| !t.is_empty());
        if check_host {
            c.check("host", auth::check_host(&host, token.as_deref()), ());
        }
        let queue_capacity = self
            .queue_capacity
            .map(|q| c.check("queue_capacity", queue_capacity(q), DEFAULT_QUEUE_CAPACITY));
        c.finish(Resolved {
            config: ServiceConfig {
                host,
                port,
                mcp_addon_port,
                commands: self.commands,
                default_timeout,
                limits: Limits {
                    max_frame_bytes,
                    ..Limits::default()
                },
                max_connections,
                read_timeout,
                write_timeout,
                token,
                status: None,
                audit: None,
            },
            queue_capacity,
        })
    }
}

/// The router settings as given; `None` means the default. Named and read as [`ServiceSettings`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouterSettings {
    pub url: String,
    pub socketio_path: Option<String>,
    pub namespace: Option<String>,
    pub fallback_auth: Option<Value>,
    pub watchdog_seconds: Option<f64>,
    pub watchdog_after_failures: Option<i64>,
    pub backoff_initial: Option<f64>,
    pub backoff_max: Option<f64>,
    pub backoff_jitter: Option<f64>,
    pub handshake_timeout: Option<f64>,
    pub command_timeout: Option<f64>,
    pub poll_limit: Option<f64>,
    pub outbox_max_count: Option<i64>,
    pub outbox_max_bytes: Option<i64>,
    /// Extra CA certificates (PEM) for `https://` engines; `None`: [`CA_FILE_ENV`], else none.
    pub ca_file: Option<String>,
}

impl RouterSettings {
    pub fn resolve(self) -> Result<RouterConfig, Vec<Problem>> {
        let mut c = Checker::default();
        c.check("url", engine_url(&self.url).map(drop), ());
        let ca_file = c.check("ca_file", ca_file_or_env(self.ca_file.as_deref()), None);
        let namespace = self.namespace.unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
        c.check("namespace", self::namespace(&namespace), ());
        let duration = match self.watchdog_seconds {
            Some(v) => c.check("watchdog_seconds", watchdog(v), None),
            None => match c.check("watchdog_seconds", watchdog_from_env(), None) {
                // Say where a bad value came from: the caller's label names the argument.
                Some(v) => c.check(
                    "watchdog_seconds",
                    watchdog(v).map_err(|rule| format!("(from ${WATCHDOG_ENV}) {rule}")),
                    None,
                ),
                None => Some(DEFAULT_WATCHDOG),
            },
        };
        let arm_after_failures = match self.watchdog_after_failures {
            Some(v) => c.check(
                "watchdog_after_failures",
                count(v, 1, u32::MAX as usize).map(|n| n as u32),
                DEFAULT_WATCHDOG_AFTER_FAILURES,
            ),
            None => DEFAULT_WATCHDOG_AFTER_FAILURES,
        };
        let jitter = match self.backoff_jitter {
            Some(v) => c.check("backoff_jitter", jitter(v), BackoffPolicy::DEFAULT.jitter),
            None => BackoffPolicy::DEFAULT.jitter,
        };
        let backoff = BackoffPolicy {
            initial: c.seconds("backoff_initial", self.backoff_initial, BackoffPolicy::DEFAULT.initial),
            max: c.seconds("backoff_max", self.backoff_max, BackoffPolicy::DEFAULT.max),
            factor: BackoffPolicy::DEFAULT.factor,
            jitter,
        };
        let config = RouterConfig {
            url: self.url,
            socketio_path: self.socketio_path.unwrap_or_else(|| DEFAULT_SOCKETIO_PATH.to_string()),
            namespace,
            backoff,
            watchdog: WatchdogPolicy {
                arm_after_failures,
                duration,
            },
            handshake_timeout: c.seconds("handshake_timeout", self.handshake_timeout, DEFAULT_HANDSHAKE_TIMEOUT),
            command_timeout: c.seconds("command_timeout", self.command_timeout, DEFAULT_COMMAND_TIMEOUT),
            poll_limit: c.seconds("poll_limit", self.poll_limit, DEFAULT_POLL_LIMIT),
            outbox_max_count: c.count("outbox_max_count", self.outbox_max_count, 1, DEFAULT_OUTBOX_MAX_COUNT),
            outbox_max_bytes: c.count("outbox_max_bytes", self.outbox_max_bytes, 1, DEFAULT_OUTBOX_MAX_BYTES),
            fallback_auth: self.fallback_auth.unwrap_or_else(|| json!({})),
            ca_file,
            ..RouterConfig::default()
        };
        c.finish(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(s: ServiceSettings) -> Vec<(&'static str, String)> {
        s.resolve(true)
            .err()
            .unwrap_or_default()
            .into_iter()
            .map(|p| (p.setting, p.rule))
            .collect()
    }

    #[test]
    fn defaults_resolve_cleanly() {
        let r = ServiceSettings::default().resolve(true).unwrap();
        assert_eq!(r.config.port, DEFAULT_PORT);
        assert_eq!(r.config.limits.max_frame_bytes, DEFAULT_MAX_REQUEST_BYTES);
        assert_eq!(r.queue_capacity, None);
        let router = RouterSettings {
            url: DEFAULT_ENGINE_URL.into(),
            watchdog_seconds: Some(300.0),
            ..RouterSettings::default()
        };
        assert_eq!(router.resolve().unwrap().watchdog, WatchdogPolicy::default());
    }

    #[test]
    fn every_problem_is_reported_with_its_rule() {
        let got = problems(ServiceSettings {
            port: Some(70000),
            max_request_bytes: Some(10),
            max_connections: Some(0),
            read_timeout: Some(-1.0),
            queue_capacity: Some(0),
            host: Some("0.0.0.0".into()),
            ..ServiceSettings::default()
        });
        let names: Vec<_> = got.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            [
                "port",
                "max_request_bytes",
                "max_connections",
                "read_timeout",
                "host",
                "queue_capacity"
            ]
        );
        assert_eq!(got[0].1, "must be between 0 and 65535 (0 picks a free port), got 70000");
        assert_eq!(got[1].1, "must be at least 1024, got 10");
        assert!(got[4].1.contains("BLENDWIRE_TOKEN"), "{}", got[4].1);
        assert_eq!(got[5].1, "must be between 1 and 1000000, got 0");
        let with_token = ServiceSettings {
            host: Some("0.0.0.0".into()),
            token: Some("t".into()),
            ..ServiceSettings::default()
        };
        assert!(problems(with_token).is_empty());
    }

    #[test]
    fn mcp_addon_port_rules() {
        let r = ServiceSettings {
            mcp_addon_port: Some(9876),
            ..ServiceSettings::default()
        };
        assert_eq!(r.resolve(true).unwrap().config.mcp_addon_port, Some(9876));
        let same = problems(ServiceSettings {
            port: Some(7000),
            mcp_addon_port: Some(7000),
            ..ServiceSettings::default()
        });
        assert_eq!(same[0].0, "mcp_addon_port");
        assert!(same[0].1.starts_with("must differ"), "{}", same[0].1);
        assert!(mcp_addon_port(0, 0).is_ok(), "two free ports");
    }

    #[test]
    fn engine_urls() {
        for ok in [
            "http://127.0.0.1:8000",
            "ws://engine:9/",
            "http://[::1]:80/x",
            "http://h",
            "https://engine.example",
            "HTTPS://h:8443/",
            "wss://[::1]:8443",
        ] {
            assert!(engine_url(ok).is_ok(), "{ok}");
        }
        assert!(engine_url("https://").unwrap_err().contains("host"));
        assert!(engine_url("https://h:0").unwrap_err().contains("bad port"));
        assert!(engine_url("localhost:8000").unwrap_err().starts_with("must start with"));
        assert!(engine_url("http://").unwrap_err().contains("host"));
        assert!(engine_url("http://h:99999").unwrap_err().contains("bad port"));
        assert!(engine_url("http://h:8000?x=1").is_err());
        assert!(engine_url("ftp://h").is_err());
    }

    #[test]
    fn router_rules() {
        let bad = RouterSettings {
            url: "ftp://h".into(),
            namespace: Some("blender".into()),
            watchdog_seconds: Some(-1.0),
            watchdog_after_failures: Some(0),
            backoff_initial: Some(0.0),
            backoff_jitter: Some(2.0),
            ..RouterSettings::default()
        };
        let names: Vec<_> = bad.resolve().unwrap_err().into_iter().map(|p| p.setting).collect();
        assert_eq!(
            names,
            [
                "url",
                "namespace",
                "watchdog_seconds",
                "watchdog_after_failures",
                "backoff_jitter",
                "backoff_initial"
            ]
        );
        let off = RouterSettings {
            url: "http://h".into(),
            watchdog_seconds: Some(0.0),
            ..RouterSettings::default()
        };
        assert_eq!(off.resolve().unwrap().watchdog.duration, None);
    }

    #[test]
    fn ca_file_rules() {
        assert_eq!(ca_file(""), Ok(None));
        let missing = ca_file("/nonexistent/ca.pem").unwrap_err();
        assert!(missing.starts_with("cannot be read (/nonexistent/ca.pem"), "{missing}");
        let router = RouterSettings {
            url: "https://h".into(),
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..RouterSettings::default()
        };
        let problems = router.resolve().unwrap_err();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].setting, "ca_file");
        assert!(
            problems[0].to_string().starts_with("ca_file cannot be read"),
            "{}",
            problems[0]
        );
    }

    #[test]
    fn settings_are_read_by_their_names() {
        let given = json!({"port": 7000, "queue_capacity": 8, "read_timeout": 2.5, "token": "t"});
        let s: ServiceSettings = serde_json::from_value(given).unwrap();
        assert_eq!(
            (s.port, s.queue_capacity, s.read_timeout, s.token.as_deref()),
            (Some(7000), Some(8), Some(2.5), Some("t"))
        );
        let r: RouterSettings =
            serde_json::from_value(json!({"fallback_auth": {"token": "f"}, "outbox_max_count": 3})).unwrap();
        assert_eq!(r.fallback_auth, Some(json!({"token": "f"})));
        assert_eq!(r.outbox_max_count, Some(3));
        assert_eq!(r.watchdog_seconds, None, "what is not given is None: the default");
        let unknown = serde_json::from_value::<ServiceSettings>(json!({"max_request_byte": 2048})).unwrap_err();
        assert!(
            unknown.to_string().starts_with("unknown field `max_request_byte`"),
            "{unknown}"
        );
        let unknown = serde_json::from_value::<RouterSettings>(json!({"watchdog": 5})).unwrap_err();
        assert!(unknown.to_string().starts_with("unknown field `watchdog`"), "{unknown}");
    }

    #[test]
    fn log_levels() {
        assert_eq!(LogLevel::from_name("warn").unwrap().name(), "WARNING");
        assert_eq!(LogLevel::from_name("TRACE").unwrap().name(), "DEBUG");
        assert_eq!(LogLevel::from_name("critical").unwrap().name(), "ERROR");
        assert_eq!(LogLevel::from_number(50).name(), "ERROR");
        assert!(LogLevel::from_name("loud")
            .unwrap_err()
            .starts_with("unknown log level \"LOUD\""));
    }
}
