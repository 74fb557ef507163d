//! The subscription index: which clients receive a publish on a given URL.

use std::hash::Hash;

use foldhash::{HashMap, HashMapExt, HashSet};

use super::{pattern_stem, stems, Pattern};

/// Subscriptions of many clients, indexed for publishing.
///
/// `K` identifies a client (the server uses its numeric id). A publish asks
/// [`SubscriptionIndex::matching`], which costs one hash lookup per `/`-level of the URL
/// plus the matches themselves, never a scan over all clients or patterns.
///
/// ```
/// use tether_wire::url::SubscriptionIndex;
/// let mut idx = SubscriptionIndex::new();
/// idx.subscribe(1u32, "/sensors/");
/// idx.subscribe(2u32, "/sensors/temp");
/// idx.subscribe(3u32, "/");
/// let mut who = Vec::new();
/// idx.matching("/sensors/temp", &mut who);
/// assert_eq!(who, vec![1, 2, 3]);
/// ```
#[derive(Debug, Clone)]
pub struct SubscriptionIndex<K> {
    exact: HashMap<Box<str>, Vec<K>>,
    prefix: HashMap<Box<str>, Vec<K>>,
    by_client: HashMap<K, HashSet<Box<str>>>,
}

impl<K> Default for SubscriptionIndex<K> {
    fn default() -> Self {
        SubscriptionIndex {
            exact: HashMap::new(),
            prefix: HashMap::new(),
            by_client: HashMap::new(),
        }
    }
}

impl<K: Copy + Eq + Hash + Ord> SubscriptionIndex<K> {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    fn map_for<'p>(&mut self, pattern: &'p str) -> (&mut HashMap<Box<str>, Vec<K>>, &'p str) {
        match pattern_stem(pattern) {
            Pattern::Exact(p) => (&mut self.exact, p),
            Pattern::Prefix(stem) => (&mut self.prefix, stem),
        }
    }

    /// Adds `pattern` for `client`. Returns false if it was already there.
    pub fn subscribe(&mut self, client: K, pattern: &str) -> bool {
        let mine = self.by_client.entry(client).or_default();
        if !mine.insert(pattern.into()) {
            return false;
        }
        let (map, key) = self.map_for(pattern);
        map.entry(key.into()).or_default().push(client);
        true
    }

    /// Removes `pattern` for `client`. Returns false if it was not there.
    pub fn unsubscribe(&mut self, client: K, pattern: &str) -> bool {
        let Some(mine) = self.by_client.get_mut(&client) else {
            return false;
        };
        if !mine.remove(pattern) {
            return false;
        }
        if mine.is_empty() {
            self.by_client.remove(&client);
        }
        let (map, key) = self.map_for(pattern);
        remove_from(map, key, client);
        true
    }

    /// Removes every subscription of `client`; returns how many there were.
    pub fn remove_client(&mut self, client: K) -> usize {
        let Some(mine) = self.by_client.remove(&client) else {
            return 0;
        };
        for pattern in &mine {
            let (map, key) = self.map_for(pattern);
            remove_from(map, key, client);
        }
        mine.len()
    }

    /// Appends to `out` every client with a subscription matching `url`, each once, in
    /// ascending order. `out` is cleared first.
    pub fn matching(&self, url: &str, out: &mut Vec<K>) {
        out.clear();
        if let Some(v) = self.exact.get(url) {
            out.extend_from_slice(v);
        }
        if !self.prefix.is_empty() {
            for stem in stems(url) {
                if let Some(v) = self.prefix.get(stem) {
                    out.extend_from_slice(v);
                }
            }
        }
        out.sort_unstable();
        out.dedup();
    }

    /// Whether any client would receive a publish on `url`.
    pub fn is_subscribed(&self, url: &str) -> bool {
        self.exact.get(url).is_some_and(|v| !v.is_empty())
            || stems(url).any(|stem| self.prefix.get(stem).is_some_and(|v| !v.is_empty()))
    }

    /// Whether `client` would receive a publish on `url`.
    pub fn client_is_subscribed(&self, client: K, url: &str) -> bool {
        self.by_client.get(&client).is_some_and(|mine| {
            mine.iter()
                .any(|pattern| super::subscription_matches(pattern, url))
        })
    }

    /// The patterns `client` subscribed to, in no particular order.
    pub fn patterns_of(&self, client: K) -> impl Iterator<Item = &str> {
        self.by_client
            .get(&client)
            .into_iter()
            .flat_map(|set| set.iter().map(|s| &**s))
    }

    /// Whether `client` holds exactly `pattern`.
    pub fn client_has_pattern(&self, client: K, pattern: &str) -> bool {
        self.by_client
            .get(&client)
            .is_some_and(|mine| mine.contains(pattern))
    }

    /// Number of subscriptions `client` holds.
    pub fn count_of(&self, client: K) -> usize {
        self.by_client.get(&client).map_or(0, HashSet::len)
    }

    /// Every pattern some client holds, once each (prefix patterns with their trailing
    /// `/`), in no order.
    pub fn patterns(&self) -> impl Iterator<Item = String> + '_ {
        self.exact
            .keys()
            .map(|k| k.to_string())
            .chain(self.prefix.keys().map(|stem| format!("{stem}/")))
    }

    /// Total number of (client, pattern) subscriptions.
    pub fn len(&self) -> usize {
        self.by_client.values().map(HashSet::len).sum()
    }

    /// Whether there are no subscriptions at all.
    pub fn is_empty(&self) -> bool {
        self.by_client.is_empty()
    }
}

fn remove_from<K: Eq>(map: &mut HashMap<Box<str>, Vec<K>>, key: &str, client: K) {
    if let Some(v) = map.get_mut(key) {
        if let Some(i) = v.iter().position(|k| *k == client) {
            v.swap_remove(i);
        }
        if v.is_empty() {
            map.remove(key);
        }
    }
}
