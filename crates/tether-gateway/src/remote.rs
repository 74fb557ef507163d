//! The client's address from proxy headers, as hat-juggler's `Connection.remote`
//! (docs/protocols/juggler.md §1.8): the `for=` of the last `Forwarded` element, as is; else the
//! last entry of a single `X-Forwarded-For` line; else nothing (the socket's IP is used).

use axum::http::HeaderMap;

/// What the proxy headers say, if anything.
pub(crate) fn forwarded(headers: &HeaderMap) -> Option<String> {
    let elements: Vec<&str> = headers
        .get_all("forwarded")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    if let Some(last) = elements.last() {
        let found = last.split(';').find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("for")
                .then(|| v.trim().trim_matches('"').to_string())
        });
        if let Some(f) = found.filter(|f| !f.is_empty()) {
            return Some(f);
        }
    }
    let mut xff = headers.get_all("x-forwarded-for").iter();
    match (xff.next(), xff.next()) {
        (Some(one), None) => one
            .to_str()
            .ok()?
            .rsplit(',')
            .next()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        m
    }

    #[test]
    fn rules_in_order() {
        assert_eq!(
            forwarded(&h(&[("forwarded", r#"for="[2001:db8::1]:4711""#)])).as_deref(),
            Some("[2001:db8::1]:4711")
        );
        assert_eq!(
            forwarded(&h(&[
                ("forwarded", "for=1.1.1.1"),
                ("x-forwarded-for", "2.2.2.2")
            ]))
            .as_deref(),
            Some("1.1.1.1")
        );
        assert_eq!(
            forwarded(&h(&[("forwarded", "for=9.9.9.9, for=1.1.1.1;proto=http")])).as_deref(),
            Some("1.1.1.1"),
            "the last element"
        );
        assert_eq!(
            forwarded(&h(&[
                ("forwarded", "proto=https"),
                ("x-forwarded-for", "10.0.0.1, 10.0.0.2 ")
            ]))
            .as_deref(),
            Some("10.0.0.2")
        );
        assert_eq!(forwarded(&h(&[("forwarded", "proto=https")])), None);
        assert_eq!(
            forwarded(&h(&[
                ("x-forwarded-for", "1.1.1.1"),
                ("x-forwarded-for", "2.2.2.2")
            ])),
            None,
            "two X-Forwarded-For lines are ignored"
        );
        assert_eq!(forwarded(&h(&[])), None);
    }
}
