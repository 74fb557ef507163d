//! VSOA URLs and patterns as NATS subjects, for federation (docs/federation.md).
//!
//! NATS subjects are `.`-separated tokens; a token is non-empty, holds no whitespace, and
//! `*` or `>` alone are wildcards. VSOA URLs allow anything after the leading `/`. The
//! codec maps each `/`-segment to one token: `[A-Za-z0-9_-]` stay, every other byte is
//! written `%XX` (upper-case hex), an empty segment is `%`. Every URL subject ends with the
//! token `%%`, which no segment produces. Decoding is the exact inverse.
//!
//! With that, a VSOA prefix pattern whose stem has tokens `T` matches exactly the URLs whose
//! subjects are `T` plus at least one more token, which is NATS' `T.>`. So every pattern is
//! one subject, and NATS' matching equals VSOA's ([`super::subscription_matches`]): the
//! property tests check it.
//!
//! ```
//! use tether_wire::url::subject::{url_subject, pattern_subject, decode_url_subject};
//! assert_eq!(url_subject("tether.pub", "/a/b").unwrap(), "tether.pub.a.b.%%");
//! assert_eq!(url_subject("tether.pub", "/a/").unwrap(), "tether.pub.a.%.%%");
//! assert_eq!(url_subject("tether.pub", "/a.b/ x").unwrap(), "tether.pub.a%2Eb.%20x.%%");
//! assert_eq!(pattern_subject("tether.pub", "/a/").unwrap(), "tether.pub.a.>");
//! assert_eq!(pattern_subject("tether.pub", "/").unwrap(), "tether.pub.>");
//! assert_eq!(decode_url_subject("tether.pub", "tether.pub.a%2Eb.%20x.%%").as_deref(), Some("/a.b/ x"));
//! ```

use super::{pattern_stem, Pattern};

/// Subjects longer than this are not federated: NATS closes the whole connection on a
/// control line over 4 KiB, and the subject shares that line with the reply subject and
/// the sizes. The caller delivers such URLs locally and counts them.
pub const MAX_SUBJECT_LEN: usize = 3500;

/// The last token of every URL subject.
pub const TERMINATOR: &str = "%%";

/// Why a URL or pattern has no subject.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubjectError {
    /// Not a VSOA URL (must start with `/`).
    #[error("not a VSOA URL (it must start with '/')")]
    NotAUrl,
    /// The subject would be longer than [`MAX_SUBJECT_LEN`].
    #[error("its NATS subject would be {0} bytes, more than {MAX_SUBJECT_LEN}")]
    TooLong(usize),
}

fn keep(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

fn push_segment(out: &mut String, seg: &str) {
    out.push('.');
    if seg.is_empty() {
        out.push('%');
        return;
    }
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in seg.as_bytes() {
        if keep(b) {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 15) as usize] as char);
        }
    }
}

/// `prefix` followed by one token per segment of `path` (a URL or a stem; the empty stem
/// has no segments).
fn tokens(prefix: &str, path: &str) -> Result<String, SubjectError> {
    let mut out = String::with_capacity(prefix.len() + path.len() + 4);
    out.push_str(prefix);
    if !path.is_empty() {
        let rest = path.strip_prefix('/').ok_or(SubjectError::NotAUrl)?;
        for seg in rest.split('/') {
            push_segment(&mut out, seg);
        }
    }
    Ok(out)
}

fn checked(s: String) -> Result<String, SubjectError> {
    if s.len() > MAX_SUBJECT_LEN {
        Err(SubjectError::TooLong(s.len()))
    } else {
        Ok(s)
    }
}

/// The subject a publish on `url` is sent to: `prefix`, a token per segment, `%%`.
pub fn url_subject(prefix: &str, url: &str) -> Result<String, SubjectError> {
    if !url.starts_with('/') {
        return Err(SubjectError::NotAUrl);
    }
    let mut s = tokens(prefix, url)?;
    s.push('.');
    s.push_str(TERMINATOR);
    checked(s)
}

/// The subject a subscription `pattern` listens on: the URL subject of an exact pattern,
/// the stem's tokens and `>` for a prefix pattern (`/` is `prefix.>`).
pub fn pattern_subject(prefix: &str, pattern: &str) -> Result<String, SubjectError> {
    match pattern_stem(pattern) {
        Pattern::Exact(url) => url_subject(prefix, url),
        Pattern::Prefix(stem) => {
            let mut s = tokens(prefix, stem)?;
            s.push_str(".>");
            checked(s)
        }
    }
}

/// The literal subject naming one route level, for RPC: `prefix` and the tokens of `path`
/// (a URL for an exact route, a stem for a prefix route; the `/` route is `prefix` alone).
/// No terminator: the level kinds live under different prefixes.
pub fn level_subject(prefix: &str, path: &str) -> Result<String, SubjectError> {
    checked(tokens(prefix, path)?)
}

fn unhex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn decode_token(tok: &str, out: &mut Vec<u8>) -> Option<()> {
    if tok == "%" {
        return Some(());
    }
    let b = tok.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hi = unhex(*b.get(i + 1)?)?;
            let lo = unhex(*b.get(i + 2)?)?;
            let v = hi << 4 | lo;
            // Canonical only: a kept byte written as %XX would make two subjects for one URL.
            if keep(v) {
                return None;
            }
            out.push(v);
            i += 3;
        } else if keep(b[i]) {
            out.push(b[i]);
            i += 1;
        } else {
            return None;
        }
    }
    (!b.is_empty()).then_some(())
}

/// The URL a subject made by [`url_subject`] with `prefix` stands for; `None` for any
/// other subject (a foreign or malformed one).
pub fn decode_url_subject(prefix: &str, subject: &str) -> Option<String> {
    let rest = subject.strip_prefix(prefix)?.strip_prefix('.')?;
    let body = rest.strip_suffix(TERMINATOR)?.strip_suffix('.')?;
    let mut url = Vec::with_capacity(body.len());
    for tok in body.split('.') {
        url.push(b'/');
        decode_token(tok, &mut url)?;
    }
    String::from_utf8(url).ok()
}

/// NATS' own matching of a literal `subject` against a subscription `filter` (`*` one
/// token, `>` one or more trailing tokens): the reference the property tests hold the
/// codec to.
pub fn nats_matches(filter: &str, subject: &str) -> bool {
    let mut f = filter.split('.');
    let mut s = subject.split('.');
    loop {
        match (f.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether `subject` is a valid literal NATS subject: non-empty tokens without
/// whitespace, no wildcard tokens.
pub fn is_valid_literal(subject: &str) -> bool {
    !subject.is_empty()
        && subject.split('.').all(|t| {
            !t.is_empty() && t != "*" && t != ">" && !t.bytes().any(|b| b.is_ascii_whitespace())
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::url::{subscription_matches, MATCH_MATRIX, MATCH_MATRIX_URLS};
    use proptest::prelude::*;

    const P: &str = "t.pub";

    #[test]
    fn the_matrix_holds_on_subjects() {
        for (pattern, row) in MATCH_MATRIX {
            let filter = pattern_subject(P, pattern).unwrap();
            for (url, want) in MATCH_MATRIX_URLS.iter().zip(row.chars()) {
                let subject = url_subject(P, url).unwrap();
                assert_eq!(
                    nats_matches(&filter, &subject),
                    want == 'Y',
                    "{pattern} ({filter}) vs {url} ({subject})"
                );
            }
        }
    }

    #[test]
    fn examples() {
        assert_eq!(url_subject(P, "/").unwrap(), "t.pub.%.%%");
        assert_eq!(url_subject(P, "//").unwrap(), "t.pub.%.%.%%");
        assert_eq!(url_subject(P, "/é").unwrap(), "t.pub.%C3%A9.%%");
        assert_eq!(url_subject(P, "/%41").unwrap(), "t.pub.%2541.%%");
        assert_eq!(pattern_subject(P, "//").unwrap(), "t.pub.%.>");
        assert_eq!(pattern_subject(P, "/a*/>").unwrap(), "t.pub.a%2A.%3E.%%");
        assert_eq!(level_subject("t.rpcp", "").unwrap(), "t.rpcp");
        assert_eq!(level_subject("t.rpcx", "/a/b").unwrap(), "t.rpcx.a.b");
        assert_eq!(url_subject(P, "x"), Err(SubjectError::NotAUrl));
        let long = format!("/{}", " ".repeat(1200));
        assert!(matches!(
            url_subject(P, &long),
            Err(SubjectError::TooLong(n)) if n > MAX_SUBJECT_LEN
        ));
    }

    #[test]
    fn foreign_and_non_canonical_subjects_do_not_decode() {
        for s in [
            "t.pub.a",
            "t.pub.%%",
            "t.pub..%%",
            "t.pub.a%41.%%",
            "t.pub.a%4.%%",
            "t.pub.a%zz.%%",
            "t.pub.a b.%%",
            "t.pubx.a.%%",
            "u.pub.a.%%",
            "t.pub.%FF.%%",
        ] {
            assert_eq!(decode_url_subject(P, s), None, "{s}");
        }
    }

    fn segment() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                Just("a"),
                Just("b"),
                Just("."),
                Just("*"),
                Just(">"),
                Just(" "),
                Just("\t"),
                Just("%"),
                Just("~"),
                Just("é"),
                Just("%%"),
            ],
            0..3,
        )
        .prop_map(|v| v.concat())
    }

    fn url() -> impl Strategy<Value = String> {
        proptest::collection::vec(segment(), 1..5).prop_map(|segs| format!("/{}", segs.join("/")))
    }

    fn pattern() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("/".to_string()),
            url(),
            url().prop_map(|u| format!("{u}/")),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20_000))]

        #[test]
        fn nats_matching_equals_vsoa_matching(p in pattern(), u in url()) {
            let filter = pattern_subject(P, &p).unwrap();
            let subject = url_subject(P, &u).unwrap();
            prop_assert!(is_valid_literal(&subject), "{subject}");
            prop_assert_eq!(
                nats_matches(&filter, &subject),
                subscription_matches(&p, &u),
                "{} ({}) vs {} ({})", p, filter, u, subject
            );
        }

        #[test]
        fn decoding_inverts_encoding(u in url()) {
            let subject = url_subject(P, &u).unwrap();
            prop_assert_eq!(decode_url_subject(P, &subject), Some(u));
        }

        #[test]
        fn filters_are_valid(p in pattern()) {
            let filter = pattern_subject(P, &p).unwrap();
            let literal = filter.strip_suffix(".>").unwrap_or(&filter);
            prop_assert!(is_valid_literal(literal), "{filter}");
        }
    }
}
