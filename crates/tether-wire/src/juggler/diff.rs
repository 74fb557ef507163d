//! JSON diff and patch as hat-json 0.6.8 does them (docs/protocols/juggler.md §6).
//!
//! [`diff`] emits only `add`, `remove` and `replace` (never `test`, which wipes a Python
//! client's state). hat-json compares containers by identity; we compare them by value,
//! which gives the same patches wherever hat-json's storage shares structure and smaller
//! ones where it does not. Numbers compare as JSON numbers (`1 == 1.0`); booleans never
//! equal numbers. [`patch`] applies all six RFC 6902 operations, plus hat's extras: a
//! `remove` at the root gives `null`, and `add` at index == length appends.

use serde_json::{json, Value};

/// Whether two JSON values are equal as hat-json sees them.
fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            match (x.as_i64(), y.as_i64(), x.as_u64(), y.as_u64()) {
                (Some(i), Some(j), _, _) => i == j,
                (_, _, Some(i), Some(j)) => i == j,
                _ => x.as_f64() == y.as_f64(),
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| equal(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| equal(v, w)))
        }
        _ => a == b,
    }
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn op(out: &mut Vec<Value>, op: &str, path: &str, value: Option<&Value>) {
    out.push(match value {
        Some(v) => json!({"op": op, "path": path, "value": v}),
        None => json!({"op": op, "path": path}),
    });
}

/// The patch turning `src` into `dst`.
pub fn diff(src: &Value, dst: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    diff_at(src, dst, "", &mut out);
    out
}

fn diff_at(src: &Value, dst: &Value, path: &str, out: &mut Vec<Value>) {
    if equal(src, dst) {
        return;
    }
    match (src, dst) {
        (Value::Array(a), Value::Array(b)) if !a.is_empty() && !b.is_empty() => {
            diff_arrays(a, b, path, out)
        }
        (Value::Object(a), Value::Object(b)) if !a.is_empty() && !b.is_empty() => {
            for key in a.keys().filter(|k| !b.contains_key(*k)) {
                op(out, "remove", &format!("{path}/{}", escape(key)), None);
            }
            for (key, v) in b {
                let at = format!("{path}/{}", escape(key));
                match a.get(key) {
                    Some(old) => diff_at(old, v, &at, out),
                    None => op(out, "add", &at, Some(v)),
                }
            }
        }
        _ => op(out, "replace", path, Some(dst)),
    }
}

/// hat-json's one greedy pass: equal elements are skipped in step, the others removed or
/// added at the current index until the length difference is used up, then diffed.
fn diff_arrays(a: &[Value], b: &[Value], path: &str, out: &mut Vec<Value>) {
    let (mut i, mut j, mut k) = (0, 0, 0);
    let mut surplus = b.len() as isize - a.len() as isize;
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && equal(&a[i], &b[j]) {
            (i, j, k) = (i + 1, j + 1, k + 1);
        } else if j < b.len() && (surplus > 0 || i >= a.len()) {
            op(out, "add", &format!("{path}/{k}"), Some(&b[j]));
            (j, k) = (j + 1, k + 1);
            surplus -= 1;
        } else if i < a.len() && (surplus < 0 || j >= b.len()) {
            op(out, "remove", &format!("{path}/{k}"), None);
            i += 1;
            surplus += 1;
        } else {
            diff_at(&a[i], &b[j], &format!("{path}/{k}"), out);
            (i, j, k) = (i + 1, j + 1, k + 1);
        }
    }
}

/// Why a patch cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot apply JSON patch operation {index}: {reason}")]
pub struct PatchError {
    /// Which operation.
    pub index: usize,
    /// Why.
    pub reason: String,
}

fn pointer(path: &str) -> Result<Vec<String>, String> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(format!("path {path:?} does not start with '/'"));
    };
    Ok(rest
        .split('/')
        .map(|p| p.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn index_of(part: &str, len: usize, allow_end: bool) -> Result<usize, String> {
    if allow_end && part == "-" {
        return Ok(len);
    }
    let i: usize = part
        .parse()
        .map_err(|_| format!("invalid array index {part:?}"))?;
    if i < len || (allow_end && i == len) {
        Ok(i)
    } else {
        Err(format!("array index {i} out of range"))
    }
}

fn get<'v>(doc: &'v Value, parts: &[String]) -> Result<&'v Value, String> {
    let mut at = doc;
    for p in parts {
        at = match at {
            Value::Object(m) => m
                .get(p)
                .ok_or_else(|| format!("invalid object key {p:?}"))?,
            Value::Array(a) => &a[index_of(p, a.len(), false)?],
            _ => return Err(format!("invalid data type at {p:?}")),
        };
    }
    Ok(at)
}

fn get_mut<'v>(doc: &'v mut Value, parts: &[String]) -> Result<&'v mut Value, String> {
    let Some(last) = parts.last() else {
        return Ok(doc);
    };
    match parent(doc, parts)? {
        Value::Object(m) => m
            .get_mut(last)
            .ok_or_else(|| format!("invalid object key {last:?}")),
        Value::Array(a) => {
            let i = index_of(last, a.len(), false)?;
            Ok(&mut a[i])
        }
        _ => Err("invalid data type".into()),
    }
}

/// The container holding `parts`' last element.
fn parent<'v>(doc: &'v mut Value, parts: &[String]) -> Result<&'v mut Value, String> {
    let mut at = doc;
    for p in &parts[..parts.len() - 1] {
        at = match at {
            Value::Object(m) => m
                .get_mut(p)
                .ok_or_else(|| format!("invalid object key {p:?}"))?,
            Value::Array(a) => {
                let i = index_of(p, a.len(), false)?;
                &mut a[i]
            }
            _ => return Err(format!("invalid data type at {p:?}")),
        };
    }
    Ok(at)
}

fn add(doc: &mut Value, parts: &[String], value: Value) -> Result<(), String> {
    let Some(last) = parts.last() else {
        *doc = value;
        return Ok(());
    };
    match parent(doc, parts)? {
        Value::Object(m) => {
            m.insert(last.clone(), value);
        }
        Value::Array(a) => {
            let i = index_of(last, a.len(), true)?;
            a.insert(i, value);
        }
        _ => return Err("invalid data type".into()),
    }
    Ok(())
}

fn remove(doc: &mut Value, parts: &[String]) -> Result<Value, String> {
    let Some(last) = parts.last() else {
        return Ok(std::mem::take(doc));
    };
    match parent(doc, parts)? {
        Value::Object(m) => m
            .shift_remove(last)
            .ok_or_else(|| format!("invalid object key {last:?}")),
        Value::Array(a) => {
            let i = index_of(last, a.len(), false)?;
            Ok(a.remove(i))
        }
        _ => Err("invalid data type".into()),
    }
}

/// Applies `ops` (a JSON array of RFC 6902 operations) to a copy of `doc`.
pub fn patch(doc: &Value, ops: &Value) -> Result<Value, PatchError> {
    let Value::Array(ops) = ops else {
        return Err(PatchError {
            index: 0,
            reason: "a patch must be an array".into(),
        });
    };
    let mut doc = doc.clone();
    for (index, o) in ops.iter().enumerate() {
        let fail = |reason: String| PatchError { index, reason };
        let field = |name: &str| o.get(name).ok_or_else(|| fail(format!("no {name:?}")));
        let path = pointer(field("path")?.as_str().unwrap_or("\u{0}")).map_err(fail)?;
        let value = || field("value").cloned();
        let from = || -> Result<Vec<String>, PatchError> {
            pointer(field("from")?.as_str().unwrap_or("\u{0}")).map_err(fail)
        };
        match field("op")?.as_str().unwrap_or_default() {
            "add" => add(&mut doc, &path, value()?).map_err(fail)?,
            "remove" => {
                remove(&mut doc, &path).map_err(fail)?;
            }
            "replace" => *get_mut(&mut doc, &path).map_err(fail)? = value()?,
            "move" => {
                let v = remove(&mut doc, &from()?).map_err(fail)?;
                add(&mut doc, &path, v).map_err(fail)?;
            }
            "copy" => {
                let v = get(&doc, &from()?).map_err(fail)?.clone();
                add(&mut doc, &path, v).map_err(fail)?;
            }
            "test" => {
                if !equal(get(&doc, &path).map_err(fail)?, &value()?) {
                    return Err(fail("test failed".into()));
                }
            }
            other => return Err(fail(format!("unsupported operation {other:?}"))),
        }
    }
    Ok(doc)
}
