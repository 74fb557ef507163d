//! JSON as Python's `json.dumps` writes it, which both Python peers' formats follow:
//! `", "` between items and `": "` after keys; with `ensure_ascii` (the default, and what
//! hat-juggler sends) every non-ASCII character escaped as `\uXXXX`, astral characters as
//! surrogate pairs; without it (clever-show's frames) raw UTF-8.

use serde::Serialize;
use serde_json::Value;

struct PythonFormatter {
    ensure_ascii: bool,
}

impl serde_json::ser::Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.begin_array_value(w, first)
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(b": ")
    }

    fn write_string_fragment<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        if !self.ensure_ascii {
            return w.write_all(fragment.as_bytes());
        }
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            if c.is_ascii() {
                continue;
            }
            w.write_all(&fragment.as_bytes()[start..i])?;
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                write!(w, "\\u{u:04x}")?;
            }
            start = i + c.len_utf8();
        }
        w.write_all(&fragment.as_bytes()[start..])
    }
}

fn dumps<T: Serialize + ?Sized>(value: &T, ensure_ascii: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut ser =
        serde_json::Serializer::with_formatter(&mut out, PythonFormatter { ensure_ascii });
    // Writing into a Vec cannot fail, and neither can a Value or a juggler message (every
    // key a string).
    let _ = value.serialize(&mut ser);
    out
}

/// `json.dumps(value, ensure_ascii=False)`: raw UTF-8.
pub fn python_json(value: &Value) -> Vec<u8> {
    dumps(value, false)
}

/// `json.dumps(value)`: pure ASCII. `value` is a `Value` or anything that serialises
/// the same way (maps with string keys).
pub fn python_json_ascii<T: Serialize + ?Sized>(value: &T) -> String {
    // Only ASCII was written.
    String::from_utf8(dumps(value, true)).unwrap_or_default()
}
