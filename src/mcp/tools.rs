//! The tools: one table, built once, of each tool's name, schema and handler; and the handlers
//! (names and parameters follow the BLD Remote MCP commands).

use super::forward::{printed, Retry};
use super::{BlenderTools, Failure, Rq, ToolOutcome, BLENDER_ARG};
use base64::Engine as _;
use futures_util::future::BoxFuture;
use rmcp::model::{ContentBlock, Tool, ToolAnnotations};
use serde_json::{json, Map, Value};
use std::sync::atomic::Ordering;
use std::sync::LazyLock;

/// The longest server-side wait the service accepts (`params._timeout_seconds`).
const MAX_JOB_SECONDS: f64 = crate::defaults::MAX_TIMEOUT.as_secs_f64();

fn required_str<'a>(args: &'a Map<String, Value>, key: &str) -> Result<&'a str, Failure> {
    match args.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        Some(Value::String(_)) | None | Some(Value::Null) => {
            Err(Failure(format!("{key} is required (a non-empty string)")))
        }
        Some(other) => Err(Failure(format!("{key} must be a string, got {other}"))),
    }
}

fn schema(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// A tool's handler: the tools already pointed at the call's Blender, and the call's arguments.
type Handler = for<'a> fn(&'a BlenderTools, &'a Map<String, Value>, Rq<'a>) -> BoxFuture<'a, ToolOutcome>;

/// Whom a tool is about.
#[derive(Clone, Copy, PartialEq)]
enum Scope {
    /// One Blender, chosen by the `blender` argument (which its schema then offers).
    OneBlender,
    /// Every Blender these tools can reach (`list_blenders`).
    AllBlenders,
}

/// One tool: what `tools/list` shows, and what runs it.
struct ToolSpec {
    tool: Tool,
    scope: Scope,
    run: Handler,
}

/// The tool table, built on first use.
static TABLE: LazyLock<Vec<ToolSpec>> = LazyLock::new(table);

fn spec(
    name: &'static str,
    description: &'static str,
    mut input: Value,
    read_only: bool,
    scope: Scope,
    run: Handler,
) -> ToolSpec {
    let props = input.get_mut("properties").and_then(Value::as_object_mut);
    if let Some(props) = props.filter(|_| scope == Scope::OneBlender) {
        props.insert(
            BLENDER_ARG.into(),
            json!({"type": ["string", "integer"], "description": "which Blender, when several run: its port, its pid, or part of its .blend file's name (list_blenders shows them); not needed with one"}),
        );
    }
    let annotations = ToolAnnotations::new()
        .read_only(read_only)
        .destructive(!read_only)
        .open_world(false);
    ToolSpec {
        tool: Tool::new(name, description, schema(input)).annotate(annotations),
        scope,
        run,
    }
}

/// Every tool, as `tools/list` shows them.
pub fn tools() -> impl ExactSizeIterator<Item = &'static Tool> {
    TABLE.iter().map(|s| &s.tool)
}

/// The tool called `name`.
pub(super) fn tool(name: &str) -> Option<&'static Tool> {
    tools().find(|t| t.name == name)
}

fn table() -> Vec<ToolSpec> {
    use Scope::{AllBlenders, OneBlender};
    let none = || json!({"type": "object", "properties": {}, "additionalProperties": false});
    let key = json!({"type": "string", "minLength": 1, "description": "the key the data is stored under"});
    vec![
        spec(
            "get_scene_info",
            "Summary of the current Blender scene: name, object count, the first 10 objects, materials count and frame range.",
            none(),
            true,
            OneBlender,
            |t, _, rq| Box::pin(t.json_tool("get_scene_info", json!({}), Retry::Once, rq)),
        ),
        spec(
            "get_object_info",
            "Details of one object: type, location, rotation, scale, visibility, dimensions, materials, and mesh counts for meshes.",
            json!({"type": "object", "properties": {"name": {"type": "string", "minLength": 1, "description": "the object's name, e.g. \"Cube\""}}, "required": ["name"], "additionalProperties": false}),
            true,
            OneBlender,
            |t, args, rq| {
                Box::pin(async move {
                    let name = required_str(args, "name")?;
                    t.json_tool("get_object_info", json!({"name": name}), Retry::Once, rq).await
                })
            },
        ),
        spec(
            "execute_code",
            "Run Python inside Blender (bpy is imported, fresh globals per call) and return what it printed to stdout and stderr.",
            json!({"type": "object", "properties": {
                "code": {"type": "string", "minLength": 1, "description": "Python source; use print() to return values"},
                "timeout_seconds": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_JOB_SECONDS, "description": "how long Blender may take (default 30)"}
            }, "required": ["code"], "additionalProperties": false}),
            false,
            OneBlender,
            |t, args, rq| Box::pin(t.execute_code(args, rq)),
        ),
        spec(
            "get_viewport_screenshot",
            "A screenshot of Blender's 3D viewport as inline image content, its longest side at most max_size pixels (needs Blender with its UI, not background mode).",
            json!({"type": "object", "properties": {
                "max_size": {"type": "integer", "minimum": 1, "maximum": 16384, "default": 800, "description": "longest side in pixels; larger screenshots are scaled down"},
                "format": {"type": "string", "enum": ["png", "jpeg"], "default": "png", "description": "image format"}
            }, "additionalProperties": false}),
            true,
            OneBlender,
            |t, args, rq| Box::pin(t.screenshot(args, rq)),
        ),
        spec(
            "put_persist_data",
            "Store JSON data under a key in Blender's session (kept until Blender exits).",
            json!({"type": "object", "properties": {"key": key, "data": {"description": "any JSON value except null"}}, "required": ["key", "data"], "additionalProperties": false}),
            false,
            OneBlender,
            |t, args, rq| {
                Box::pin(async move {
                    let key = required_str(args, "key")?;
                    let Some(data) = args.get("data").filter(|v| !v.is_null()) else {
                        return Err(Failure("data is required: any JSON value except null".into()));
                    };
                    t.json_tool("put_persist_data", json!({"key": key, "data": data}), Retry::Never, rq)
                        .await
                })
            },
        ),
        spec(
            "get_persist_data",
            "Read the data stored under a key; returns {data, found}.",
            json!({"type": "object", "properties": {"key": key, "default": {"description": "returned as data when the key is missing (default null)"}}, "required": ["key"], "additionalProperties": false}),
            true,
            OneBlender,
            |t, args, rq| {
                Box::pin(async move {
                    let mut params = json!({"key": required_str(args, "key")?});
                    if let Some(d) = args.get("default") {
                        params["default"] = d.clone();
                    }
                    t.json_tool("get_persist_data", params, Retry::Once, rq).await
                })
            },
        ),
        spec(
            "remove_persist_data",
            "Delete the data stored under a key; returns {removed}.",
            json!({"type": "object", "properties": {"key": key}, "required": ["key"], "additionalProperties": false}),
            false,
            OneBlender,
            |t, args, rq| {
                Box::pin(async move {
                    let key = required_str(args, "key")?;
                    t.json_tool("remove_persist_data", json!({"key": key}), Retry::Never, rq)
                        .await
                })
            },
        ),
        spec(
            "undo_last",
            "Take back blendwire's last undo step in Blender's UI (the last job that changed data): answers {undone, now_at}; refuses when the last step is the user's own. In background Blender, which has no undo stack, use restore_checkpoint.",
            none(),
            false,
            OneBlender,
            |t, _, rq| Box::pin(t.undo_last(rq)),
        ),
        spec(
            "list_blenders",
            "The running Blenders these tools can reach (port, pid, .blend file, Blender version, runtime), for the other tools' blender argument.",
            none(),
            true,
            AllBlenders,
            |t, _, _| Box::pin(t.list_blenders()),
        ),
        spec(
            "check_connection_status",
            "Whether Blender is reachable: address, scene name, object count and round-trip time, or the error; and what Blender's main thread is doing (idle, or the command running, for how long, its deadline).",
            none(),
            true,
            OneBlender,
            |t, _, rq| Box::pin(t.connection_status(rq)),
        ),
        // Checkpoints (issue 22): Blender keeps one before every job that may change data.
        spec(
            "list_checkpoints",
            "The checkpoints Blender kept before each job that may change data, newest first: {checkpoints: [{id, time, job: {command, client, listener, id}, bytes}]}.",
            none(),
            true,
            OneBlender,
            |t, _, rq| Box::pin(t.json_tool("list_checkpoints", json!({}), Retry::Once, rq)),
        ),
        spec(
            "restore_checkpoint",
            "Return the scene to exactly how it was before a checkpoint's job (ids from list_checkpoints); everything done since is replaced, though the restore is itself checkpointed first.",
            json!({"type": "object", "properties": {"id": {"type": "string", "minLength": 1, "description": "a checkpoint id from list_checkpoints"}}, "required": ["id"], "additionalProperties": false}),
            false,
            OneBlender,
            |t, args, rq| {
                Box::pin(async move {
                    let id = required_str(args, "id")?;
                    t.json_tool("restore_checkpoint", json!({"id": id}), Retry::Never, rq).await
                })
            },
        ),
    ]
}

impl BlenderTools {
    async fn json_tool(&self, command: &str, params: Value, retry: Retry, rq: Rq<'_>) -> ToolOutcome {
        let result = self.command(command, params, retry, rq).await?;
        Ok(vec![ContentBlock::text(match result {
            Value::String(s) => s,
            other => other.to_string(),
        })])
    }

    async fn execute_code(&self, args: &Map<String, Value>, rq: Rq<'_>) -> ToolOutcome {
        let code = required_str(args, "code")?;
        let mut params = json!({"code": code});
        if let Some(t) = args.get("timeout_seconds").filter(|v| !v.is_null()) {
            let limit = (self.timeout.as_secs_f64() - 5.0).clamp(1.0, MAX_JOB_SECONDS);
            match t.as_f64() {
                Some(s) if s > 0.0 && s <= limit => params["_timeout_seconds"] = json!(s),
                _ => {
                    return Err(Failure(format!(
                        "timeout_seconds must be a number of seconds in (0, {limit}]; start `blendwire mcp --timeout` higher for longer jobs"
                    )))
                }
            }
        }
        let result = self.command("execute_code", params, Retry::Never, rq).await;
        // Even a failed job may have changed the scene part-way.
        self.watch.job_ended();
        let result = result?;
        let output = result.get("output");
        let text = |key: &str| {
            output
                .and_then(|o| o.get(key))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        // BLD Remote MCP 1.3.3 answers with `result` only; `output` is newer.
        let stdout = text("stdout")
            .or_else(|| result.get("result").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_default();
        let stderr = text("stderr").unwrap_or_default();
        let mut content = Vec::with_capacity(2);
        if !stdout.is_empty() || stderr.is_empty() {
            content.push(ContentBlock::text(if stdout.is_empty() && stderr.is_empty() {
                "(no output)".to_string()
            } else {
                stdout
            }));
        }
        if !stderr.is_empty() {
            content.push(ContentBlock::text(format!("stderr:\n{stderr}")));
        }
        Ok(content)
    }

    /// `undo_last`: never resent (a second one would take back a second step).
    async fn undo_last(&self, rq: Rq<'_>) -> ToolOutcome {
        let result = self.json_tool("undo_last", json!({}), Retry::Never, rq).await;
        self.watch.job_ended();
        result
    }

    async fn screenshot(&self, args: &Map<String, Value>, rq: Rq<'_>) -> ToolOutcome {
        let max_size = match args.get("max_size").filter(|v| !v.is_null()) {
            None => 800,
            Some(v) => v.as_u64().filter(|n| (1..=16384).contains(n)).ok_or_else(|| {
                Failure("max_size must be an integer from 1 to 16384 (pixels of the longest side)".into())
            })?,
        };
        let format = match args
            .get("format")
            .and_then(Value::as_str)
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("png") => "png",
            Some("jpeg") | Some("jpg") => "jpeg",
            Some(other) => return Err(Failure(format!("format must be \"png\" or \"jpeg\", got {other:?}"))),
        };
        // Inline: the image comes in the answer, never through a file path that this process
        // would have to share with Blender (another machine, WSL, a container).
        let params = json!({"max_size": max_size, "format": format, "inline": true});
        // Taking a screenshot changes nothing in the scene: safe to resend once.
        let mut result = self.command("get_viewport_screenshot", params, Retry::Once, rq).await?;
        let data = match result.get_mut("data").map(Value::take) {
            Some(Value::String(data)) => data,
            // A BLD Remote peer has no inline answer: it names the file it wrote on its side,
            // which only Blender can be relied on to read.
            _ => match result.get("filepath").and_then(Value::as_str) {
                Some(path) => base64::engine::general_purpose::STANDARD.encode(self.fetch_file(path, rq).await?),
                None => {
                    return Err(Failure(format!(
                        "unexpected screenshot answer from {} (neither data nor filepath): {}",
                        self.addr,
                        crate::wire::protocol::excerpt(&result, 300)
                    )))
                }
            },
        };
        let size = match (
            result.get("width").and_then(Value::as_u64),
            result.get("height").and_then(Value::as_u64),
        ) {
            (Some(w), Some(h)) => format!("{w}x{h} "),
            _ => String::new(),
        };
        let bytes = data.len() / 4 * 3 - data.bytes().rev().take_while(|b| *b == b'=').count();
        Ok(vec![
            ContentBlock::image(data, format!("image/{format}")),
            ContentBlock::text(format!(
                "{size}{format} screenshot of Blender's 3D viewport ({bytes} bytes)"
            )),
        ])
    }

    /// A file Blender wrote (then deleted), read back through Blender itself, wherever it runs.
    async fn fetch_file(&self, path: &str, rq: Rq<'_>) -> Result<Vec<u8>, Failure> {
        let code = format!(
            "import base64, os\np = {}\ntry:\n    print(base64.b64encode(open(p, 'rb').read()).decode('ascii'), end='')\nfinally:\n    os.remove(p)\n",
            Value::String(path.to_string())
        );
        let result = self
            .command("execute_code", json!({"code": code}), Retry::Never, rq)
            .await?;
        base64::engine::general_purpose::STANDARD
            .decode(printed(&result).trim())
            .map_err(|e| Failure(format!("cannot read the screenshot file {path} back from Blender: {e}")))
    }

    /// The service's status first (answered without Blender's main thread), so a job that keeps
    /// the main thread busy is reported instead of waited for; the scene only when it is idle
    /// (or the peer has no `get_status`, as the BLD Remote add-on).
    async fn connection_status(&self, rq: Rq<'_>) -> ToolOutcome {
        let started = std::time::Instant::now();
        let main_thread = match self.command("get_status", json!({}), Retry::Once, rq).await {
            Ok(status) => status.get("main_thread").cloned(),
            // Not reachable: say so now rather than wait to connect a second time.
            Err(Failure(message)) if self.reachable.load(Ordering::Relaxed) == 0 => {
                let status = json!({"connected": false, "address": self.addr, "error": message});
                return Ok(vec![ContentBlock::text(status.to_string())]);
            }
            Err(_) => None,
        };
        let busy = main_thread
            .as_ref()
            .is_some_and(|m| m.get("state").and_then(Value::as_str) == Some("running"));
        let mut status = if busy {
            json!({
                "connected": true,
                "address": self.addr,
                "round_trip_ms": (started.elapsed().as_secs_f64() * 1e4).round() / 10.0,
            })
        } else {
            match self.command("get_scene_info", json!({}), Retry::Once, rq).await {
                Ok(info) => json!({
                    "connected": true,
                    "address": self.addr,
                    "scene": info.get("name"),
                    "object_count": info.get("object_count"),
                    "round_trip_ms": (started.elapsed().as_secs_f64() * 1e4).round() / 10.0,
                }),
                Err(Failure(message)) => json!({"connected": false, "address": self.addr, "error": message}),
            }
        };
        if let Some(main_thread) = main_thread {
            status["main_thread"] = main_thread;
        }
        Ok(vec![ContentBlock::text(status.to_string())])
    }

    /// Run the tool `name` (on the Blender its `blender` argument chooses); None: no such tool.
    pub(super) async fn dispatch(&self, name: &str, args: &Map<String, Value>, rq: Rq<'_>) -> Option<ToolOutcome> {
        let spec = TABLE.iter().find(|s| s.tool.name == name)?;
        if spec.scope == Scope::AllBlenders {
            return Some((spec.run)(self, args, rq).await);
        }
        let selector = match args.get(BLENDER_ARG) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(other) => {
                return Some(Err(Failure(format!(
                    "{BLENDER_ARG} must be a port, a pid or part of a .blend file's name, got {other}"
                ))))
            }
        };
        Some(match self.for_blender(selector.as_deref()).await {
            Ok(this) => (spec.run)(&this, args, rq).await,
            Err(f) => Err(f),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_has_an_object_schema_and_a_one_line_description() {
        let tools: Vec<&Tool> = tools().collect();
        assert_eq!(tools.len(), 12);
        for t in &tools {
            assert_eq!(t.input_schema.get("type"), Some(&json!("object")), "{}", t.name);
            let d = t.description.as_deref().unwrap_or_default();
            assert!(!d.is_empty() && !d.contains('\n'), "{}", t.name);
        }
    }

    #[test]
    fn restoring_a_checkpoint_is_destructive_and_listing_them_reads() {
        let list = tool("list_checkpoints").unwrap().annotations.clone().unwrap();
        assert_eq!((list.read_only_hint, list.destructive_hint), (Some(true), Some(false)));
        let restore = tool("restore_checkpoint").unwrap().annotations.clone().unwrap();
        assert_eq!(
            (restore.read_only_hint, restore.destructive_hint),
            (Some(false), Some(true))
        );
    }
}
