//! The settings' defaults and rules for Python (CLI help, add-on preferences): converts only;
//! every default and rule is in `crate::settings`, and the settings' names are its structs' fields.

use super::errors;
use crate::settings::{self, AuditSettings, LogLevel, Problem, RouterSettings, ServiceSettings};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use pythonize::{pythonize, Depythonizer, PythonizeError};
use serde::de::value::MapAccessDeserializer;
use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, MapAccess, Visitor};

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(defaults, m)?)?;
    m.add_function(wrap_pyfunction!(check_service_settings, m)?)?;
    m.add_function(wrap_pyfunction!(check_router_settings, m)?)?;
    m.add_function(wrap_pyfunction!(check_engine_url, m)?)?;
    m.add_function(wrap_pyfunction!(check_ca_file, m)?)?;
    m.add_function(wrap_pyfunction!(is_loopback, m)?)?;
    m.add_function(wrap_pyfunction!(log_level_name, m)?)?;
    m.add_function(wrap_pyfunction!(mcp_addon_port_from_env, m)?)?;
    m.add_function(wrap_pyfunction!(check_audit_settings, m)?)?;
    m.add_function(wrap_pyfunction!(checkpoint_settings, m)?)?;
    Ok(())
}

/// A `logging` level name or number.
pub fn log_level(value: &Bound<'_, PyAny>) -> PyResult<LogLevel> {
    if let Ok(n) = value.extract::<i64>() {
        return Ok(LogLevel::from_number(n));
    }
    let name: String = value.extract()?;
    LogLevel::from_name(&name).map_err(errors::invalid)
}

fn pairs(result: Result<impl Sized, Vec<Problem>>) -> Vec<(String, String)> {
    match result {
        Ok(_) => Vec::new(),
        Err(problems) => problems.into_iter().map(|p| (p.setting.to_string(), p.rule)).collect(),
    }
}

#[pyfunction]
fn defaults(py: Python<'_>) -> PyResult<Py<PyAny>> {
    Ok(pythonize(py, &settings::defaults())
        .map_err(|e| errors::bad_argument("defaults", e))?
        .unbind())
}

/// The service settings of a `start_service` / `check_service_settings` call (None: the default).
/// `with_queue`: `queue_capacity` is one of its keyword arguments (the check also covers the queue).
pub fn service_settings(
    func: &str,
    host: Option<String>,
    port: Option<i64>,
    commands: Vec<String>,
    kwargs: Option<&Bound<'_, PyDict>>,
    with_queue: bool,
) -> PyResult<ServiceSettings> {
    let not_taken: &[&str] = if with_queue { &[] } else { &["queue_capacity"] };
    Ok(ServiceSettings {
        host,
        port,
        commands,
        ..from_kwargs(func, kwargs, not_taken)?
    })
}

/// The router settings of a `start_router` / `check_router_settings` call, as
/// [`service_settings`] does it for the service.
pub fn router_settings(func: &str, url: String, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<RouterSettings> {
    Ok(RouterSettings {
        url,
        ..from_kwargs(func, kwargs, &[])?
    })
}

/// Keyword arguments → a settings struct of `crate::settings`, whose serde fields are the one list
/// of their names. A None value is not given (the default). The errors, in one place: a name the
/// struct lacks (or `not_taken`) is the TypeError Python raises for it; a value that does not
/// convert names its setting: a TypeError in pyo3's words for a typed setting, a ValueError for a
/// JSON one (`fallback_auth`).
fn from_kwargs<T: DeserializeOwned + Default>(
    func: &str,
    kwargs: Option<&Bound<'_, PyDict>>,
    not_taken: &[&str],
) -> PyResult<T> {
    let Some(kwargs) = kwargs else {
        return Ok(T::default());
    };
    let mut given = Vec::new();
    for (key, value) in kwargs.iter() {
        if !value.is_none() {
            given.push((key.extract::<String>()?, value));
        }
    }
    let access = Kwargs {
        given: given.into_iter(),
        current: None,
        not_taken,
    };
    T::deserialize(MapAccessDeserializer::new(access)).map_err(|e| match e {
        KwargError::Unexpected(name) => errors::unexpected_argument(func, &name),
        KwargError::Value {
            name,
            error: ArgError::Type(e),
        } => errors::wrong_type(kwargs.py(), &name, e),
        KwargError::Value {
            name,
            error: ArgError::Json(e),
        } => errors::bad_argument(&name, e),
        KwargError::Value {
            name,
            error: ArgError::Other(e),
        } => errors::bad_argument(&name, e),
        KwargError::Other(e) => errors::bad_argument(func, e),
    })
}

/// The given keyword arguments as a serde map, each value read by [`Arg`].
struct Kwargs<'a, 'py, I> {
    given: I,
    current: Option<(String, Bound<'py, PyAny>)>,
    not_taken: &'a [&'a str],
}

impl<'de, 'py, I> MapAccess<'de> for Kwargs<'_, 'py, I>
where
    I: Iterator<Item = (String, Bound<'py, PyAny>)>,
{
    type Error = KwargError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, KwargError> {
        let Some((name, value)) = self.given.next() else {
            return Ok(None);
        };
        if self.not_taken.contains(&name.as_str()) {
            return Err(KwargError::Unexpected(name));
        }
        let key = seed.deserialize(name.as_str().into_deserializer())?;
        self.current = Some((name, value));
        Ok(Some(key))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, KwargError> {
        let (name, value) = self
            .current
            .take()
            .ok_or_else(|| KwargError::Other("a value asked for before its name".into()))?;
        seed.deserialize(Arg(&value))
            .map_err(|error| KwargError::Value { name, error })
    }
}

/// Why the keyword arguments were refused.
#[derive(Debug, thiserror::Error)]
enum KwargError {
    #[error("unexpected keyword argument '{0}'")]
    Unexpected(String),
    #[error("{name}: {error}")]
    Value { name: String, error: ArgError },
    #[error("{0}")]
    Other(String),
}

impl de::Error for KwargError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        KwargError::Other(msg.to_string())
    }

    fn unknown_field(field: &str, _expected: &'static [&'static str]) -> Self {
        KwargError::Unexpected(field.to_string())
    }
}

/// Why one value did not convert: not the setting's type, or not JSON.
#[derive(Debug, thiserror::Error)]
enum ArgError {
    #[error("{0}")]
    Type(PyErr),
    #[error("{0}")]
    Json(PythonizeError),
    #[error("{0}")]
    Other(String),
}

impl de::Error for ArgError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        ArgError::Other(msg.to_string())
    }
}

/// One keyword argument's value: a typed setting is extracted as pyo3 extracts any argument (so a
/// wrong type reads as it always has); anything else (a JSON value) is depythonized.
struct Arg<'a, 'py>(&'a Bound<'py, PyAny>);

macro_rules! extract {
    ($($method:ident => $visit:ident($ty:ty)),* $(,)?) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ArgError> {
            visitor.$visit(self.0.extract::<$ty>().map_err(|e| ArgError::Type(e.into()))?)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for Arg<'_, '_> {
    type Error = ArgError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ArgError> {
        de::Deserializer::deserialize_any(&mut Depythonizer::from_object(self.0), visitor).map_err(ArgError::Json)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ArgError> {
        if self.0.is_none() {
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    extract! {
        deserialize_bool => visit_bool(bool),
        deserialize_i64 => visit_i64(i64),
        deserialize_u64 => visit_u64(u64),
        deserialize_f64 => visit_f64(f64),
        deserialize_str => visit_string(String),
        deserialize_string => visit_string(String),
    }

    serde::forward_to_deserialize_any! {
        i8 i16 i32 i128 u8 u16 u32 u128 f32 char bytes byte_buf unit unit_struct newtype_struct seq
        tuple tuple_struct map struct enum identifier ignored_any
    }
}

#[pyfunction]
#[pyo3(signature = (host = None, port = None, commands = Vec::new(), **settings))]
fn check_service_settings(
    host: Option<String>,
    port: Option<i64>,
    commands: Vec<String>,
    settings: Option<&Bound<'_, PyDict>>,
) -> PyResult<Vec<(String, String)>> {
    let given = service_settings("check_service_settings", host, port, commands, settings, true)?;
    Ok(pairs(given.resolve(true)))
}

#[pyfunction]
#[pyo3(signature = (url, **settings))]
fn check_router_settings(url: String, settings: Option<&Bound<'_, PyDict>>) -> PyResult<Vec<(String, String)>> {
    Ok(pairs(
        router_settings("check_router_settings", url, settings)?.resolve(),
    ))
}

#[pyfunction]
fn check_engine_url(url: &str) -> Option<String> {
    crate::router::url::engine_url(url).err()
}

/// The CA-file rule's text for `path` (None: fine, or empty), as `check_engine_url` for the URL.
#[pyfunction]
fn check_ca_file(path: &str) -> Option<String> {
    settings::ca_file(path).err()
}

#[pyfunction]
fn is_loopback(host: &str) -> bool {
    crate::addr::is_loopback(host)
}

#[pyfunction]
fn log_level_name(value: &Bound<'_, PyAny>) -> PyResult<&'static str> {
    Ok(log_level(value)?.name())
}

/// The MCP add-on port from `$BLENDWIRE_MCP_ADDON_PORT` (None: unset); ValueError
/// "mcp_addon_port (from $BLENDWIRE_MCP_ADDON_PORT) must ..." when it is not a number. The port's
/// own rules are checked with the other settings.
#[pyfunction]
fn mcp_addon_port_from_env() -> PyResult<Option<i64>> {
    settings::mcp_addon_port_from_env().map_err(|rule| errors::setting("mcp_addon_port", rule))
}

// ---- the audit log ----

/// The audit settings of a `set_audit` / `check_audit_settings` call (None: the default).
pub fn audit_settings(func: &str, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<AuditSettings> {
    from_kwargs(func, kwargs, &[])
}

/// The problems of the audit settings; the log's file is tried (created if missing) as well.
#[pyfunction]
#[pyo3(signature = (**settings))]
fn check_audit_settings(settings: Option<&Bound<'_, PyDict>>) -> PyResult<Vec<(String, String)>> {
    Ok(pairs(audit_settings("check_audit_settings", settings)?.check()))
}

/// The checkpoint settings resolved (`{"checkpoints", "checkpoint_bytes", "checkpoint_dir"}`);
/// ValueError naming every bad one ("checkpoints must be 0 (off) or ...; ...").
#[pyfunction]
#[pyo3(signature = (checkpoints = None, checkpoint_bytes = None, checkpoint_dir = None))]
fn checkpoint_settings(
    py: Python<'_>,
    checkpoints: Option<i64>,
    checkpoint_bytes: Option<i64>,
    checkpoint_dir: Option<String>,
) -> PyResult<Py<PyAny>> {
    let given = settings::CheckpointSettings {
        checkpoints,
        checkpoint_bytes,
        checkpoint_dir,
    };
    let resolved = given
        .resolve(&crate::journal::state_dir())
        .map_err(|problems| errors::invalid(problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")))?;
    Ok(pythonize(py, &resolved)
        .map_err(|e| errors::bad_argument("checkpoint_settings", e))?
        .unbind())
}
