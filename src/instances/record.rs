//! The instance record: what one `blendwire serve` announces about itself, as written to (and read
//! from) its file. Serde derives the file's JSON; [`FORMAT`] names its shape.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

/// The file format written here; readers skip files of another format.
pub const FORMAT: u64 = 1;

/// Which Blender serves: `blender -b`, the bpy module, or Blender with its UI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    Background,
    Bpy,
    Gui,
}

impl Runtime {
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Background => "background",
            Runtime::Bpy => "bpy",
            Runtime::Gui => "gui",
        }
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Runtime {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "background" => Ok(Runtime::Background),
            "bpy" => Ok(Runtime::Bpy),
            "gui" => Ok(Runtime::Gui),
            _ => Err(format!("runtime must be background, bpy or gui, got {s:?}")),
        }
    }
}

/// What the serving process knows of itself and its service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Announce {
    /// The address the service is bound to (see [`Instance::connect_host`] for where to connect).
    pub host: String,
    pub port: u16,
    pub mcp_addon_port: Option<u16>,
    pub token_required: bool,
    /// The open .blend file; None while it was never saved.
    pub blend_file: Option<String>,
    pub blender_version: String,
    pub runtime: Runtime,
}

/// One announced instance: the process, what it announced, and when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    pub pid: u32,
    /// The process start time in clock ticks since boot (`/proc/<pid>/stat`), to tell a reused pid.
    pub process_start: Option<u64>,
    /// Written flat, beside the other fields.
    #[serde(flatten)]
    pub service: Announce,
    pub blendwire_version: String,
    /// Unix time in seconds.
    pub started_at: f64,
}

/// An instance as its file holds it: the format first, then the instance's fields.
#[derive(Serialize)]
pub struct Record<'a> {
    format: u64,
    #[serde(flatten)]
    instance: &'a Instance,
}

/// Why an instance file cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("not a JSON object")]
    NotObject,
    #[error("format {0}, this blendwire reads format {FORMAT}")]
    Format(u64),
    #[error("{field}: {why}")]
    Field { field: String, why: String },
}

impl fmt::Display for Instance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "port {}, pid {}, {} ({}, Blender {})",
            self.service.port,
            self.pid,
            self.blend_name().unwrap_or("unsaved file"),
            self.service.runtime,
            self.service.blender_version
        )
    }
}

impl Instance {
    /// This process, serving as `a` says, started now.
    pub fn this_process(mut a: Announce) -> Instance {
        let pid = std::process::id();
        a.blend_file = a.blend_file.filter(|f| !f.is_empty());
        Instance {
            pid,
            process_start: super::dir::process_start(pid),
            service: a,
            blendwire_version: env!("CARGO_PKG_VERSION").to_string(),
            started_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        }
    }

    /// The .blend file's name without its folder, if the file was ever saved.
    pub fn blend_name(&self) -> Option<&str> {
        let file = self.service.blend_file.as_deref()?;
        Some(Path::new(file).file_name().and_then(|n| n.to_str()).unwrap_or(file))
    }

    /// Where a client connects: the bound host, or loopback when it listens on every address.
    pub fn connect_host(&self) -> String {
        crate::addr::connect_host(&self.service.host)
    }

    /// The file's name in the instance directory.
    pub fn announcement_name(&self) -> String {
        format!("{}-{}.json", self.pid, self.service.port)
    }

    /// The record as its file holds it (and `list_blenders`, `discover_instances` show it).
    pub fn record(&self) -> Record<'_> {
        Record {
            format: FORMAT,
            instance: self,
        }
    }

    /// [`Self::record`] as JSON.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self.record()).unwrap_or(Value::Null)
    }

    /// Parse an instance file; fields it does not know are ignored (a newer writer may add some).
    pub fn parse(text: &str) -> Result<Instance, ParseError> {
        let value: Value = serde_json::from_str(text)?;
        let Value::Object(o) = value else {
            return Err(ParseError::NotObject);
        };
        let format = match o.get("format") {
            None => return Err(field_error("format", "missing".into())),
            Some(v) => v
                .as_u64()
                .ok_or_else(|| field_error("format", format!("unexpected value {v}")))?,
        };
        if format != FORMAT {
            return Err(ParseError::Format(format));
        }
        Instance::deserialize(&Value::Object(o.clone())).map_err(|e| culprit(&o, e))
    }
}

fn field_error(field: &str, why: String) -> ParseError {
    ParseError::Field {
        field: field.to_string(),
        why,
    }
}

/// The field a parse error is about. serde names a missing field but not one with a bad value
/// (nor any in a flattened part), so the culprit is the field whose replacement by a valid value
/// changes the error.
fn culprit(o: &Map<String, Value>, e: serde_json::Error) -> ParseError {
    let message = e.to_string();
    if let Some(name) = message
        .strip_prefix("missing field `")
        .and_then(|m| m.strip_suffix('`'))
    {
        return field_error(name, "missing".into());
    }
    let valid = Instance {
        pid: 0,
        process_start: None,
        service: Announce {
            host: String::new(),
            port: 0,
            mcp_addon_port: None,
            token_required: false,
            blend_file: None,
            blender_version: String::new(),
            runtime: Runtime::Background,
        },
        blendwire_version: String::new(),
        started_at: 0.0,
    }
    .to_json();
    for (key, value) in o {
        let Some(good) = valid.get(key) else { continue };
        let mut fixed = o.clone();
        fixed.insert(key.clone(), good.clone());
        let outcome = Instance::deserialize(&Value::Object(fixed)).map_err(|e| e.to_string());
        if outcome.as_ref().err() != Some(&message) {
            return field_error(key, format!("unexpected value {value} ({message})"));
        }
    }
    ParseError::Json(e)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use serde_json::json;

    pub(in crate::instances) fn sample(pid: u32, port: u16, file: Option<&str>) -> Instance {
        Instance {
            pid,
            process_start: Some(42),
            service: Announce {
                host: "127.0.0.1".into(),
                port,
                mcp_addon_port: None,
                token_required: false,
                blend_file: file.map(str::to_string),
                blender_version: "4.2.0".into(),
                runtime: Runtime::Background,
            },
            blendwire_version: "0.1.0".into(),
            started_at: 1.5,
        }
    }

    #[test]
    fn round_trips_through_json() {
        let mut i = sample(7, 6688, Some("/tmp/shot.blend"));
        i.service.mcp_addon_port = Some(9876);
        i.service.token_required = true;
        i.service.runtime = Runtime::Gui;
        assert_eq!(Instance::parse(&i.to_json().to_string()).unwrap(), i);
        let unsaved = Instance {
            process_start: None,
            ..sample(8, 1, None)
        };
        assert_eq!(Instance::parse(&unsaved.to_json().to_string()).unwrap(), unsaved);
    }

    #[test]
    fn the_file_format_keeps_its_keys_order_and_types() {
        let text = serde_json::to_string(&sample(7, 6688, None).record()).unwrap();
        assert_eq!(
            text,
            r#"{"format":1,"pid":7,"process_start":42,"host":"127.0.0.1","port":6688,"mcp_addon_port":null,"token_required":false,"blend_file":null,"blender_version":"4.2.0","runtime":"background","blendwire_version":"0.1.0","started_at":1.5}"#
        );
    }

    #[test]
    fn parse_ignores_unknown_fields_and_rejects_bad_ones() {
        let mut v = sample(7, 6688, None).to_json();
        v["future_field"] = json!("x");
        assert!(Instance::parse(&v.to_string()).is_ok());
        for (field, bad) in [
            ("port", json!(70000)),
            ("pid", json!(-1)),
            ("runtime", json!("headless")),
            ("token_required", json!("no")),
        ] {
            let mut w = v.clone();
            w[field] = bad;
            let err = Instance::parse(&w.to_string()).unwrap_err();
            assert!(
                matches!(err, ParseError::Field { field: ref f, .. } if f == field),
                "{field}: {err}"
            );
        }
        let mut w = v.clone();
        w.as_object_mut().unwrap().remove("host");
        assert!(Instance::parse(&w.to_string())
            .unwrap_err()
            .to_string()
            .contains("host: missing"));
        let mut w = v.clone();
        w["format"] = json!(2);
        assert!(matches!(Instance::parse(&w.to_string()), Err(ParseError::Format(2))));
        assert!(matches!(Instance::parse("[1]"), Err(ParseError::NotObject)));
        assert!(matches!(Instance::parse("{"), Err(ParseError::Json(_))));
    }

    #[test]
    fn connect_host() {
        let mut i = sample(1, 1, None);
        assert_eq!(i.connect_host(), "127.0.0.1");
        i.service.host = "0.0.0.0".into();
        assert_eq!(i.connect_host(), "127.0.0.1");
        i.service.host = "::".into();
        assert_eq!(i.connect_host(), "::1");
        i.service.host = "192.168.1.5".into();
        assert_eq!(i.connect_host(), "192.168.1.5");
    }
}
