//! The Python binding: one function per signal, bytes in, one tuple out, GIL released.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

use pyo3::create_exception;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBytes, PyDict, PyTuple};

use crate::common::Context;
use crate::{logs, metrics, otlp_json, traces, wire, Converted};

create_exception!(
    _native,
    DecodeError,
    PyValueError,
    "The bytes are not a valid OTLP request."
);

fn context(
    application_id: Option<String>,
    max_time_unix_nano: u64,
    max_buckets_per_point: usize,
) -> Context {
    Context {
        application_id,
        max_time_unix_nano,
        now_unix_nano: 0,
        max_buckets_per_point,
    }
}

/// One `bytes` of a payload's *segments*, never holding the payload twice over: each segment
/// is copied into an `io.BytesIO` (which grows in place; `getvalue` hands over its buffer
/// without a copy) and freed before the next. A payload of one segment (every SDK-sized
/// request) is copied once, directly. PyO3 has no safe way to fill a `bytes` of unknown size
/// under the abi3 build: `PyBytes::new_with` zero-fills it all first.
fn joined<'py>(py: Python<'py>, segments: Vec<Vec<u8>>) -> PyResult<Bound<'py, PyBytes>> {
    if segments.len() <= 1 {
        let only = segments.first().map_or(&[][..], Vec::as_slice);
        return Ok(PyBytes::new(py, only));
    }
    let buffer = py.import("io")?.getattr("BytesIO")?.call0()?;
    let write = buffer.getattr("write")?;
    for segment in segments {
        write.call1((PyBytes::new(py, &segment),))?;
    }
    Ok(buffer.call_method0("getvalue")?.cast_into::<PyBytes>()?)
}

/// (copy, offsets, items, rejected, reasons, example, nul_replaced, resources, scopes,
/// applications, descriptions): see `ingestd/convert/native.py`.
fn to_python(py: Python<'_>, mut out: Converted) -> PyResult<Bound<'_, PyTuple>> {
    let offsets: Vec<u8> = out
        .copy
        .offsets
        .iter()
        .flat_map(|o| o.to_ne_bytes())
        .collect();
    let reasons = PyDict::new(py);
    for (reason, count) in &out.rejects.reasons {
        reasons.set_item(*reason, *count)?;
    }
    let example = out
        .rejects
        .example
        .as_ref()
        .map(|e| (e.prefix, e.name.as_deref(), e.suffix.as_str()));
    let dims = &out.dimensions;
    let resources = PyDict::new(py);
    for (id, attributes, dropped, url) in &dims.resources {
        resources.set_item(id, (PyBytes::new(py, attributes), dropped, url))?;
    }
    let scopes = PyDict::new(py);
    for (id, name, version, attributes, dropped, url) in &dims.scopes {
        scopes.set_item(
            id,
            (name, version, PyBytes::new(py, attributes), dropped, url),
        )?;
    }
    let applications = PyDict::new(py);
    for (id, name, namespace, environment) in &dims.applications {
        applications.set_item(id, (name, namespace, environment))?;
    }
    let descriptions = PyDict::new(py);
    for (key, value) in &dims.descriptions {
        descriptions.set_item(key.clone(), value.clone())?;
    }
    let data = joined(py, std::mem::take(&mut out.copy.buf).into_segments())?;
    (
        data,
        PyBytes::new(py, &offsets),
        out.items,
        out.rejects.rejected,
        reasons,
        example,
        out.nul_replaced,
        resources,
        scopes,
        applications,
        descriptions,
    )
        .into_pyobject(py)
}

/// Runs *work* without the GIL; a panic (a bug) becomes a RuntimeError, not PyO3's
/// PanicException, which derives from BaseException and would escape `except Exception`.
fn detached<T: Send>(py: Python<'_>, work: impl FnOnce() -> T + Send) -> PyResult<T> {
    py.detach(|| catch_unwind(AssertUnwindSafe(work)))
        .map_err(|_| PyRuntimeError::new_err("ingestd_native panicked (a bug): see stderr"))
}

fn run<'py>(
    py: Python<'py>,
    body: &PyBackedBytes,
    ctx: &Context,
    convert: fn(&[u8], &Context) -> wire::Result<Converted>,
) -> PyResult<Bound<'py, PyTuple>> {
    let out =
        detached(py, || convert(body, ctx))?.map_err(|e| DecodeError::new_err(e.to_string()))?;
    to_python(py, out)
}

/// ExportMetricsServiceRequest bytes -> the `metrics` rows (see `to_python`); DecodeError.
#[pyfunction]
#[pyo3(signature = (body, *, max_time_unix_nano, application_id=None, max_buckets_per_point=usize::MAX))]
fn convert_metrics<'py>(
    py: Python<'py>,
    body: PyBackedBytes,
    max_time_unix_nano: u64,
    application_id: Option<String>,
    max_buckets_per_point: usize,
) -> PyResult<Bound<'py, PyTuple>> {
    run(
        py,
        &body,
        &context(application_id, max_time_unix_nano, max_buckets_per_point),
        metrics::convert,
    )
}

/// ExportTraceServiceRequest bytes -> the `traces` rows (see `to_python`); DecodeError.
#[pyfunction]
#[pyo3(signature = (body, *, max_time_unix_nano, application_id=None, max_buckets_per_point=usize::MAX))]
fn convert_traces<'py>(
    py: Python<'py>,
    body: PyBackedBytes,
    max_time_unix_nano: u64,
    application_id: Option<String>,
    max_buckets_per_point: usize,
) -> PyResult<Bound<'py, PyTuple>> {
    run(
        py,
        &body,
        &context(application_id, max_time_unix_nano, max_buckets_per_point),
        traces::convert,
    )
}

/// ExportLogsServiceRequest bytes -> (bulk bytes, item offsets, items, rejected, reasons,
/// example, asked, used); DecodeError. *dataset* and *namespace* are the sanitized defaults (the
/// `RoutePolicy`'s fallback); *locked_namespace* a registered application's namespace.
///
/// The routes are decided in Python, after the conversion and with the GIL held: *asked* lists
/// the routes the records went to, in the order the reference asks `RoutePolicy.admit` (see
/// `logs::Admit`), *used* where each was sent: where *expected* says (a route -> route map of
/// earlier answers), else to itself. When the policy answers otherwise for some, the caller
/// converts again with *routes*: the answers, one per route asked, in that order.
// The keyword arguments are the converter's context, one per setting.
#[allow(clippy::too_many_arguments)]
#[pyfunction]
#[pyo3(signature = (body, *, max_time_unix_nano, now_unix_nano, dataset, namespace, application_id=None, from_attributes=true, locked_namespace=None, expected=None, routes=None))]
fn convert_logs<'py>(
    py: Python<'py>,
    body: PyBackedBytes,
    max_time_unix_nano: u64,
    now_unix_nano: u64,
    dataset: String,
    namespace: String,
    application_id: Option<String>,
    from_attributes: bool,
    locked_namespace: Option<String>,
    expected: Option<HashMap<(String, String), (String, String)>>,
    routes: Option<Vec<(String, String)>>,
) -> PyResult<Bound<'py, PyTuple>> {
    let ctx = Context {
        application_id,
        max_time_unix_nano,
        now_unix_nano,
        max_buckets_per_point: usize::MAX,
    };
    let start = logs::Route {
        dataset: &dataset,
        namespace: &namespace,
        from_attributes,
        locked_namespace: locked_namespace.as_deref(),
    };
    let (out, asked, used) = detached(py, || {
        let mut asked: Vec<(String, String)> = Vec::new();
        let mut used: Vec<(String, String)> = Vec::new();
        let mut admit = |dataset: &str, namespace: &str| {
            let key = (dataset.to_owned(), namespace.to_owned());
            let answer = match (&routes, &expected) {
                (Some(answers), _) => answers.get(asked.len()).cloned(),
                (None, Some(expected)) => expected.get(&key).cloned(),
                (None, None) => None,
            };
            asked.push(key);
            let answer = answer.unwrap_or_else(|| logs::admit_all(dataset, namespace));
            used.push(answer.clone());
            answer
        };
        let out = logs::convert(&body, &ctx, &start, &mut admit);
        (out, asked, used)
    })?;
    let out = out.map_err(|e| DecodeError::new_err(e.to_string()))?;
    if let Some(answers) = &routes {
        if answers.len() != asked.len() {
            return Err(PyValueError::new_err(format!(
                "routes: {} answers for {} routes asked",
                answers.len(),
                asked.len()
            )));
        }
    }
    let offsets: Vec<u8> = out.offsets.iter().flat_map(|o| o.to_ne_bytes()).collect();
    let data = joined(py, out.buf.into_segments())?;
    let reasons = PyDict::new(py);
    for (reason, count) in &out.rejects.reasons {
        reasons.set_item(*reason, *count)?;
    }
    let example = out
        .rejects
        .example
        .as_ref()
        .map(|e| (e.prefix, e.name.as_deref(), e.suffix.as_str()));
    (
        data,
        PyBytes::new(py, &offsets),
        out.offsets.len(),
        out.rejects.rejected,
        reasons,
        example,
        asked,
        used,
    )
        .into_pyobject(py)
}

/// OTLP/JSON bytes of *signal* ("traces", "metrics", "logs") -> the same request as protobuf
/// bytes, or None when the Python decoder must decide (see `otlp_json`).
#[pyfunction]
fn json_to_protobuf<'py>(
    py: Python<'py>,
    signal: &str,
    body: PyBackedBytes,
) -> PyResult<Option<Bound<'py, PyBytes>>> {
    let root = match signal {
        "traces" => otlp_json::TRACES,
        "metrics" => otlp_json::METRICS,
        "logs" => otlp_json::LOGS,
        other => return Err(PyValueError::new_err(format!("unknown signal {other:?}"))),
    };
    let out = detached(py, || otlp_json::transcode(&body, root))?;
    Ok(out.map(|bytes| PyBytes::new(py, &bytes)))
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("DecodeError", m.py().get_type::<DecodeError>())?;
    m.add_function(wrap_pyfunction!(convert_traces, m)?)?;
    m.add_function(wrap_pyfunction!(convert_metrics, m)?)?;
    m.add_function(wrap_pyfunction!(convert_logs, m)?)?;
    m.add_function(wrap_pyfunction!(json_to_protobuf, m)?)?;
    Ok(())
}
