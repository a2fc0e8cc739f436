//! Which requests may change Blender's data. A request is taken to change data unless its command
//! is known to only read: an unknown or user-defined command (a hosted add-on's, a router
//! add-on's) is checkpointed and recorded like `execute_code`.

use super::record::{Effect, Protocol};

/// Commands of the command service (BLD Remote) and of blender-mcp's add-on that only read
/// Blender's data. A screenshot writes an image file but changes nothing in the scene; the persist
/// commands change blendwire's in-memory store (`blendwire.persist`), none of Blender's data.
const READS: &[&str] = &[
    "get_scene_info",
    "get_object_info",
    "get_viewport_screenshot",
    "get_polyhaven_status",
    "get_hyper3d_status",
    "get_sketchfab_status",
    "get_hunyuan3d_status",
    "get_addon_info",
    "get_telemetry_consent",
    "list_scene_items",
    "get_persist_data",
    "put_persist_data",
    "remove_persist_data",
    "get_status",
    "list_checkpoints",
    // `blendwire mcp`'s own tools that only look.
    "list_blenders",
    "check_connection_status",
];

/// Whether `command`, arriving in `dialect`, may change Blender's data.
pub fn effect(dialect: Protocol, command: &str) -> Effect {
    let reads = match dialect {
        // `execute` runs code; `poll` asks an earlier `execute` again (its checkpoint was taken then).
        Protocol::BlenderLab => command == "poll",
        // The router's own operations (auth, registry, poll) read; its commands run add-on code.
        Protocol::Cr8 => !command.starts_with("router:command"),
        Protocol::BldRemote | Protocol::BlenderMcp | Protocol::McpStdio | Protocol::McpHttp => READS.contains(&command),
    };
    if reads {
        Effect::Reads
    } else {
        Effect::Changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_known_and_the_rest_changes() {
        assert_eq!(effect(Protocol::BldRemote, "get_scene_info"), Effect::Reads);
        assert_eq!(effect(Protocol::BldRemote, "execute_code"), Effect::Changes);
        assert_eq!(effect(Protocol::BldRemote, "_legacy"), Effect::Changes);
        assert_eq!(effect(Protocol::BldRemote, "put_persist_data"), Effect::Reads);
        assert_eq!(effect(Protocol::BldRemote, "undo_last"), Effect::Changes);
        assert_eq!(
            effect(Protocol::BlenderMcp, "download_polyhaven_asset"),
            Effect::Changes
        );
        assert_eq!(effect(Protocol::BlenderMcp, "my_addon_command"), Effect::Changes);
        assert_eq!(effect(Protocol::BlenderLab, "execute"), Effect::Changes);
        assert_eq!(effect(Protocol::BlenderLab, "poll"), Effect::Reads);
        assert_eq!(effect(Protocol::Cr8, "router:auth"), Effect::Reads);
        assert_eq!(effect(Protocol::Cr8, "router:command a.b"), Effect::Changes);
    }
}
