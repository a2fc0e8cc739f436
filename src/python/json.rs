//! JSON data between Python objects and `serde_json::Value`, on every call's hot path.
//!
//! Handlers return plain dicts/lists/str/int/float/bool/None; those are converted with exact type
//! checks. Anything else (dict subclasses, other mappings and sequences, dataclasses) goes to
//! pythonize, which probes each object with attribute lookups that raise and format an
//! AttributeError: that probing was a fifth of the main thread's time per request.

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use pythonize::depythonize;
use serde_json::{Map, Number, Value};

/// Deeper than this is refused rather than risking the main thread's stack (a list that contains
/// itself would otherwise recurse until Blender crashes).
pub const MAX_DEPTH: usize = 256;

/// A Python object as JSON data; the error says what was wrong.
pub fn to_value(obj: &Bound<'_, PyAny>) -> Result<Value, String> {
    convert(obj, 0)
}

fn convert(obj: &Bound<'_, PyAny>, depth: usize) -> Result<Value, String> {
    if depth > MAX_DEPTH {
        return Err(format!("nested more than {MAX_DEPTH} levels deep (or contains itself)"));
    }
    if obj.is_none() {
        return Ok(Value::Null);
    }
    if let Ok(b) = obj.cast_exact::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if obj.is_exact_instance_of::<PyInt>() {
        if let Ok(i) = obj.extract::<i64>() {
            return Ok(Value::from(i));
        }
        if let Ok(u) = obj.extract::<u64>() {
            return Ok(Value::from(u));
        }
    } else if let Ok(f) = obj.cast_exact::<PyFloat>() {
        if let Some(n) = Number::from_f64(f.value()) {
            return Ok(Value::Number(n));
        }
    } else if let Ok(s) = obj.cast_exact::<PyString>() {
        return s
            .to_str()
            .map(|s| Value::String(s.to_owned()))
            .map_err(|e| e.to_string());
    } else if let Ok(d) = obj.cast_exact::<PyDict>() {
        let mut map = Map::with_capacity(d.len());
        for (k, v) in d.iter() {
            let Ok(key) = k.cast_exact::<PyString>() else {
                return slow(obj);
            };
            let key = key.to_str().map_err(|e| e.to_string())?;
            map.insert(key.to_owned(), convert(&v, depth + 1)?);
        }
        return Ok(Value::Object(map));
    } else if let Ok(l) = obj.cast_exact::<PyList>() {
        return l
            .iter()
            .map(|v| convert(&v, depth + 1))
            .collect::<Result<_, _>>()
            .map(Value::Array);
    } else if let Ok(t) = obj.cast_exact::<PyTuple>() {
        return t
            .iter()
            .map(|v| convert(&v, depth + 1))
            .collect::<Result<_, _>>()
            .map(Value::Array);
    }
    slow(obj)
}

/// Everything off the fast path keeps pythonize's meaning (and its error messages).
fn slow(obj: &Bound<'_, PyAny>) -> Result<Value, String> {
    depythonize::<Value>(obj).map_err(|e| e.to_string())
}

/// JSON data as Python objects (dict, list, str, int, float, bool, None).
pub fn to_py<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => i.into_pyobject(py)?.into_any(),
            (None, Some(u)) => u.into_pyobject(py)?.into_any(),
            _ => n.as_f64().unwrap_or(f64::NAN).into_pyobject(py)?.into_any(),
        },
        Value::String(s) => PyString::new(py, s).into_any(),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(to_py(py, item)?)?;
            }
            list.into_any()
        }
        Value::Object(map) => map_to_py(py, map)?.into_any(),
    })
}

pub fn map_to_py<'py>(py: Python<'py>, map: &Map<String, Value>) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (k, v) in map {
        dict.set_item(k, to_py(py, v)?)?;
    }
    Ok(dict)
}
