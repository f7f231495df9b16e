//! The embedded store: an in-memory LRU cache (moka, with its LRU policy:
//! every new answer is admitted, the least recently used go first) bounded
//! by bytes — each entry weighs its answer plus
//! [`ENTRY_OVERHEAD`] — and, with `max_entries`, by count; each entry
//! expires after its own TTL. With `persist`, [`Memory::save`] writes the
//! live entries to `state_dir/cache.bin` (at shutdown) and
//! [`Memory::open`] reads them back at start.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::notification::RemovalCause;
use moka::sync::Cache;

use super::entry::Answer;
use super::key::Key;

/// What one entry costs beyond its answer's bytes: the key, the `Arc`,
/// the answer's own fields and moka's bookkeeping (measured: ~100k
/// entries of small answers, see the README's Response cache section).
pub const ENTRY_OVERHEAD: usize = 700;

/// The file `persist: true` keeps the cache in.
pub const FILE: &str = "cache.bin";

pub struct Memory {
    cache: Cache<Key, Arc<Answer>>,
    pub max_bytes: u64,
    pub max_entries: Option<u64>,
    file: Option<PathBuf>,
}

/// Each entry lives until its answer's own expiry.
struct Expiry;

impl moka::Expiry<Key, Arc<Answer>> for Expiry {
    fn expire_after_create(&self, _: &Key, v: &Arc<Answer>, _: Instant) -> Option<Duration> {
        Some(Duration::from_secs(v.ttl_left(super::now())))
    }

    fn expire_after_update(&self, _: &Key, v: &Arc<Answer>, _: Instant, _: Option<Duration>) -> Option<Duration> {
        Some(Duration::from_secs(v.ttl_left(super::now())))
    }
}

impl Memory {
    /// A store of at most `max_bytes` (and `max_entries`); with `persist`,
    /// loaded from `state_dir`.
    pub fn open(max_bytes: u64, max_entries: Option<u64>, persist: Option<&Path>) -> Memory {
        // With max_entries, every entry weighs at least max_bytes /
        // max_entries: the byte bound then also bounds the count.
        let floor = max_entries.map_or(0, |n| (max_bytes / n.max(1)) as usize);
        let cache = Cache::builder()
            .eviction_policy(moka::policy::EvictionPolicy::lru())
            .max_capacity(max_bytes)
            .weigher(move |_k: &Key, v: &Arc<Answer>| u32::try_from((v.size() + ENTRY_OVERHEAD).max(floor)).unwrap_or(u32::MAX))
            .expire_after(Expiry)
            .eviction_listener(|_k, _v, cause| {
                let cause = match cause {
                    RemovalCause::Size => "size",
                    RemovalCause::Expired => "expired",
                    RemovalCause::Explicit => "deleted",
                    RemovalCause::Replaced => "replaced",
                };
                crate::metrics::cache_eviction(cause);
            })
            .build();
        let m = Memory { cache, max_bytes, max_entries, file: persist.map(|d| d.join(FILE)) };
        if let Some(f) = &m.file {
            m.load(f);
        }
        m
    }

    pub fn get(&self, k: &Key) -> Option<Arc<Answer>> {
        self.cache.get(k).filter(|a| a.ttl_left(super::now()) > 0)
    }

    pub fn put(&self, k: Key, a: Arc<Answer>) {
        self.cache.insert(k, a);
    }

    /// Remove the entries `remove` picks; how many were removed.
    pub fn remove_if(&self, remove: impl Fn(&Answer) -> bool) -> u64 {
        let doomed: Vec<Arc<Key>> = self.cache.iter().filter(|(_, v)| remove(v)).map(|(k, _)| k).collect();
        for k in &doomed {
            self.cache.invalidate(k.as_ref());
        }
        self.cache.run_pending_tasks();
        doomed.len() as u64
    }

    /// (entries, weighted bytes), after pending evictions ran.
    pub fn usage(&self) -> (u64, u64) {
        self.cache.run_pending_tasks();
        (self.cache.entry_count(), self.cache.weighted_size())
    }

    /// Write the live entries to the state_dir file (a temp file renamed
    /// over it, so a crash mid-write leaves the old one).
    pub fn save(&self) -> Result<usize, String> {
        let Some(path) = &self.file else { return Ok(0) };
        let now = super::now();
        let tmp = path.with_extension("bin.tmp");
        let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?);
        let mut n = 0;
        for (k, v) in self.cache.iter() {
            if v.ttl_left(now) == 0 {
                continue;
            }
            let bytes = v.encode();
            let ok = out.write_all(k.as_ref()).and_then(|_| out.write_all(&(bytes.len() as u64).to_le_bytes())).and_then(|_| out.write_all(&bytes));
            ok.map_err(|e| format!("{}: {e}", tmp.display()))?;
            n += 1;
        }
        out.into_inner().map_err(|e| e.to_string())?.sync_all().map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(n)
    }

    fn load(&self, path: &Path) {
        let mut bytes = Vec::new();
        match std::fs::File::open(path).and_then(|mut f| f.read_to_end(&mut bytes)) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot read the saved response cache; starting empty");
                return;
            }
        }
        let now = super::now();
        let (mut loaded, mut rest) = (0, &bytes[..]);
        while rest.len() >= 40 {
            let Ok(key) = <Key>::try_from(&rest[..32]) else { break };
            let len = u64::from_le_bytes(rest[32..40].try_into().unwrap_or_default()) as usize;
            let Some(body) = rest.get(40..40 + len) else { break };
            rest = &rest[40 + len..];
            if let Some(a) = Answer::decode(body).filter(|a| a.ttl_left(now) > 0) {
                self.put(key, Arc::new(a));
                loaded += 1;
            }
        }
        if !rest.is_empty() {
            tracing::warn!(file = %path.display(), "the saved response cache ends in a damaged entry; it was skipped");
        }
        tracing::info!(file = %path.display(), entries = loaded, "response cache loaded");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::entry::Body;

    fn answer(size: usize, ttl: u64) -> Arc<Answer> {
        let now = crate::cache::now();
        Arc::new(Answer {
            body: Body::Whole(bytes::Bytes::from(vec![b'x'; size])),
            content_type: "application/json".into(),
            usage: Default::default(),
            created: now,
            expires: now + ttl,
            model: "m".into(),
            route: "r".into(),
        })
    }

    #[test]
    fn the_byte_bound_holds_and_entries_expire_on_their_own_ttl() {
        let m = Memory::open(1024 * 1024, None, None);
        for i in 0..2000u32 {
            let mut k = [0u8; 32];
            k[..4].copy_from_slice(&i.to_le_bytes());
            m.put(k, answer(1000, 60));
        }
        let (n, bytes) = m.usage();
        assert!(bytes <= 1024 * 1024, "{bytes}");
        assert!(n < 2000 && n > 500, "{n}");
        // LRU: the newest answer is kept, the oldest went.
        let mut last = [0u8; 32];
        last[..4].copy_from_slice(&1999u32.to_le_bytes());
        assert!(m.get(&last).is_some());
        assert!(m.get(&[0u8; 32]).is_none());
        let m = Memory::open(1024 * 1024, Some(10), None);
        for i in 0..50u32 {
            let mut k = [0u8; 32];
            k[..4].copy_from_slice(&i.to_le_bytes());
            m.put(k, answer(10, 60));
        }
        assert!(m.usage().0 <= 10);
        m.put([9; 32], answer(10, 0));
        assert!(m.get(&[9; 32]).is_none());
    }

    #[test]
    fn a_saved_cache_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let m = Memory::open(1024 * 1024, None, Some(dir.path()));
        m.put([1; 32], answer(10, 60));
        m.put([2; 32], answer(20, 60));
        assert_eq!(m.save().unwrap(), 2);
        let back = Memory::open(1024 * 1024, None, Some(dir.path()));
        assert!(back.get(&[2; 32]).is_some());
        assert_eq!(back.get(&[1; 32]).map(|a| a.size()), Some(answer(10, 60).size()));
        assert_eq!(back.remove_if(|a| a.model == "m"), 2);
        assert!(back.get(&[1; 32]).is_none());
    }
}
