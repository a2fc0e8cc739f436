//! The resources and the prompt of `blendwire mcp`.
//!
//! Resources (JSON): the scene summary (`get_scene_info`), each object (`get_object_info`, as the
//! template `blender://object/{name}`), the materials and the collections (a fixed read-only
//! snippet through `execute_code`: the BLD Remote commands have none for them, and so any peer
//! serves them), and the service status (`get_status`, answered without Blender's main thread).
//!
//! The scene can be subscribed to (`resources/subscribe`): after jobs that may change it
//! (`execute_code`) the summary is read again once they have settled for [`COALESCE`], and
//! subscribers get one `notifications/resources/updated` if it differs from the last one read.
//! Several jobs in a row make one update; a job that changed nothing makes none.

use super::forward::{printed, Retry};
use super::{BlenderTools, Failure, Rq};
use parking_lot::Mutex;
use rmcp::model::{
    ErrorData, GetPromptResult, Prompt, PromptArgument, PromptMessage, ReadResourceResult, Resource, ResourceContents,
    ResourceTemplate, ResourceUpdatedNotificationParam, Role,
};
use rmcp::{Peer, RoleServer};
use serde_json::{json, Map, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

pub const SCENE: &str = "blender://scene";
pub const OBJECT_TEMPLATE: &str = "blender://object/{name}";
const OBJECT_PREFIX: &str = "blender://object/";
pub const MATERIALS: &str = "blender://materials";
pub const COLLECTIONS: &str = "blender://collections";
pub const STATUS: &str = "blender://status";
pub const WORKFLOW_PROMPT: &str = "blender_workflow";

/// Jobs that end within this long of each other make one scene update.
pub const COALESCE: Duration = Duration::from_millis(100);

const MATERIALS_CODE: &str = "import bpy, json\n\
print(json.dumps([{'name': m.name, 'users': m.users, 'use_nodes': m.use_nodes, \
'diffuse_color': [round(c, 4) for c in m.diffuse_color]} for m in bpy.data.materials]), end='')\n";

const COLLECTIONS_CODE: &str = "import bpy, json\n\
cs = [bpy.context.scene.collection, *bpy.data.collections]\n\
print(json.dumps([{'name': c.name, 'objects': [o.name for o in c.objects], \
'children': [k.name for k in c.children]} for c in cs]), end='')\n";

/// One session's subscription to the scene: its peer while subscribed.
pub(super) type Subscriber = Mutex<Option<Peer<RoleServer>>>;

/// Shared by every session: who is subscribed, and the scene summary they were last told about.
#[derive(Default)]
pub(super) struct SceneWatch {
    subscribers: Mutex<Vec<Weak<Subscriber>>>,
    changed: tokio::sync::Notify,
    started: AtomicBool,
    last: Mutex<Option<String>>,
}

impl SceneWatch {
    /// A job that may have changed the scene has ended.
    pub(super) fn job_ended(&self) {
        if self.started.load(Ordering::Relaxed) {
            self.changed.notify_one();
        }
    }

    fn peers(&self) -> Vec<Peer<RoleServer>> {
        let mut subscribers = self.subscribers.lock();
        subscribers.retain(|s| s.strong_count() > 0);
        subscribers
            .iter()
            .filter_map(Weak::upgrade)
            .filter_map(|s| s.lock().clone())
            .filter(|p| !p.is_transport_closed())
            .collect()
    }
}

pub fn resources() -> Vec<Resource> {
    let json = |uri: &str, name: &str, description: &str| {
        Resource::new(uri, name)
            .with_description(description)
            .with_mime_type("application/json")
    };
    vec![
        json(
            SCENE,
            "scene",
            "The current scene: name, object count, the first 10 objects, materials count, frame range. Subscribe to it for an update after jobs that changed it.",
        ),
        json(MATERIALS, "materials", "Every material: name, users, use_nodes, diffuse color."),
        json(
            COLLECTIONS,
            "collections",
            "The scene collection and every collection: name, its objects, its child collections.",
        ),
        json(
            STATUS,
            "status",
            "The blendwire service's status: connections, queue, the job on Blender's main thread and its progress; answered even while a job runs.",
        ),
    ]
}

pub fn resource_templates() -> Vec<ResourceTemplate> {
    vec![ResourceTemplate::new(OBJECT_TEMPLATE, "object")
        .with_description(
            "One object by name (URL-encoded): type, location, rotation, scale, visibility, dimensions, materials, mesh counts.",
        )
        .with_mime_type("application/json")]
}

/// `%XX` escapes decoded (object names may hold spaces, slashes, non-ASCII).
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl BlenderTools {
    /// A read-only snippet's printed JSON.
    async fn snippet(&self, code: &str, rq: Rq<'_>) -> Result<Value, (Failure, Option<String>)> {
        // Read-only: safe to resend once after a lost connection.
        let result = self
            .command_coded("execute_code", json!({"code": code}), Retry::Once, rq)
            .await?;
        serde_json::from_str(printed(&result))
            .map_err(|e| (Failure(format!("unexpected output from Blender ({e})")), None))
    }

    pub(super) async fn read_resource_at(&self, uri: &str, rq: Rq<'_>) -> Result<ReadResourceResult, ErrorData> {
        let value = match uri {
            // Not taken as the subscribers' summary: another subscriber may not have read it yet.
            SCENE => self.command_coded("get_scene_info", json!({}), Retry::Once, rq).await,
            MATERIALS => self.snippet(MATERIALS_CODE, rq).await,
            COLLECTIONS => self.snippet(COLLECTIONS_CODE, rq).await,
            STATUS => self.command_coded("get_status", json!({}), Retry::Once, rq).await,
            _ => match uri.strip_prefix(OBJECT_PREFIX).map(percent_decode) {
                Some(Some(name)) if !name.is_empty() => {
                    self.command_coded("get_object_info", json!({"name": name}), Retry::Once, rq)
                        .await
                }
                _ => return Err(unknown_resource(uri)),
            },
        };
        match value {
            Ok(v) => Ok(ReadResourceResult::new(vec![ResourceContents::text(
                serde_json::to_string_pretty(&v).unwrap_or_default(),
                uri,
            )
            .with_mime_type("application/json")])),
            Err((Failure(message), Some(code))) if code == "not_found" => {
                Err(ErrorData::resource_not_found(message, Some(json!({"uri": uri}))))
            }
            Err((Failure(message), _)) => Err(ErrorData::internal_error(message, Some(json!({"uri": uri})))),
        }
    }

    pub(super) async fn subscribe_to(&self, uri: &str, peer: Peer<RoleServer>) -> Result<(), ErrorData> {
        if uri != SCENE {
            return Err(ErrorData::invalid_params(
                format!("only {SCENE} can be subscribed to, not {uri:?}"),
                None,
            ));
        }
        *self.subscription.lock() = Some(peer);
        {
            let mut subscribers = self.watch.subscribers.lock();
            if !subscribers
                .iter()
                .any(|s| s.as_ptr() == Arc::as_ptr(&self.subscription))
            {
                subscribers.push(Arc::downgrade(&self.subscription));
            }
        }
        if self.watch.last.lock().is_none() {
            // The summary subscribers start from; a change is told against it.
            if let Ok(v) = self.command("get_scene_info", json!({}), Retry::Once, None).await {
                let mut last = self.watch.last.lock();
                last.get_or_insert(v.to_string());
            }
        }
        if !self.watch.started.swap(true, Ordering::Relaxed) {
            // The watcher's own session slot: it keeps no subscriber alive.
            tokio::spawn(watch_scene(self.for_session()));
        }
        Ok(())
    }

    pub(super) fn unsubscribe_from(&self, uri: &str) {
        if uri == SCENE {
            *self.subscription.lock() = None;
        }
    }
}

async fn watch_scene(tools: BlenderTools) {
    loop {
        tools.watch.changed.notified().await;
        tokio::time::sleep(COALESCE).await;
        let peers = tools.watch.peers();
        if peers.is_empty() {
            continue;
        }
        let Ok(scene) = tools.command("get_scene_info", json!({}), Retry::Once, None).await else {
            continue; // Blender is away: the next job's end tries again
        };
        let text = scene.to_string();
        {
            let mut last = tools.watch.last.lock();
            if last.as_deref() == Some(text.as_str()) {
                continue;
            }
            *last = Some(text);
        }
        for peer in peers {
            let _ = peer
                .notify_resource_updated(ResourceUpdatedNotificationParam::new(SCENE))
                .await;
        }
    }
}

pub fn prompts() -> Vec<Prompt> {
    vec![Prompt::new(
        WORKFLOW_PROMPT,
        Some("How to work in Blender with these tools: inspect first, change in small steps, check, and use timeouts, progress and cancellation for long jobs."),
        Some(vec![PromptArgument::new("task")
            .with_description("what to do in Blender (optional)")
            .with_required(false)]),
    )]
}

pub fn workflow_prompt(arguments: Option<&Map<String, Value>>) -> GetPromptResult {
    let task = arguments
        .and_then(|a| a.get("task"))
        .and_then(Value::as_str)
        .filter(|t| !t.trim().is_empty());
    let mut text = String::from(
        "You are working in a running Blender through the blendwire MCP tools.\n\
         \n\
         1. Inspect before changing: read the blender://scene resource or call get_scene_info; \
         get_object_info (or blender://object/{name}) for the objects you will touch; \
         blender://materials and blender://collections for the rest. Do not assume names: \
         use the ones Blender reports.\n\
         2. Change in small steps with execute_code (Python, `bpy` imported, fresh globals each \
         call). print() what you need back: only what the code prints is returned. An exception \
         comes back as a tool error with its traceback; fix the cause, do not retry blindly.\n\
         3. Check after each change (get_object_info, get_scene_info, or a viewport screenshot \
         when Blender has a UI).\n\
         4. Long jobs (renders, bakes, big imports): pass timeout_seconds to execute_code (default \
         30 s; Blender interrupts the code at that deadline). Report progress from the code with \
         `import blendwire; blendwire.progress(fraction, 'message')`: with a progressToken it \
         reaches you as notifications/progress, with what the code prints. Cancelling the call \
         cancels the job in Blender.\n\
         5. Jobs run one at a time on Blender's main thread. If calls wait, \
         check_connection_status (or blender://status) says what is running and for how long, \
         without waiting for it.\n\
         6. Keep state that must survive between calls with put_persist_data / get_persist_data, \
         not in Python globals.\n\
         7. A job that went wrong is taken back by undo_last in a Blender with its UI (each job that \
         may change data is one undo step; it refuses to take back the user's own steps), and by \
         restore_checkpoint in background Blender.",
    );
    if let Some(task) = task {
        text.push_str(&format!("\n\nThe task: {task}"));
    }
    GetPromptResult::new(vec![PromptMessage::new_text(Role::User, text)])
        .with_description("Working in Blender with blendwire: inspect, change in small steps, check.")
}

fn unknown_resource(uri: &str) -> ErrorData {
    ErrorData::resource_not_found(
        format!(
            "no resource {uri:?}; the resources are {SCENE}, {MATERIALS}, {COLLECTIONS}, {STATUS} and \
             {OBJECT_TEMPLATE} (the name URL-encoded)"
        ),
        Some(json!({"uri": uri})),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_are_url_decoded() {
        assert_eq!(percent_decode("My%20Cube").as_deref(), Some("My Cube"));
        assert_eq!(percent_decode("K%C3%BCbel/a").as_deref(), Some("Kübel/a"));
        assert_eq!(percent_decode("bad%2"), None);
        assert_eq!(percent_decode("bad%zz"), None);
    }
}
