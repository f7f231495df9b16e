//! Token counting with OpenAI's BPE vocabularies (o200k_base, cl100k_base)
//! in a compact table.
//!
//! tiktoken-rs's `CoreBPE` keeps every token's bytes three times (encoder,
//! decoder, sorted list), each in its own heap allocation: the o200k tables
//! alone made RSS +35 MB for as long as the process lived. Counting needs
//! only bytes → rank, so the vocabulary is read once from tiktoken-rs
//! (which stays the source of the ranks and the test oracle), copied into
//! one byte arena with an open-addressing table of packed entries (~4 MB
//! for o200k), and tiktoken's own tables are dropped.
//!
//! The split (the vocabulary's regular expression) and the merge (lowest
//! rank first, by bytes) are tiktoken's: `count` equals
//! `CoreBPE::encode_ordinary(text).len()`, which the tests check on text of
//! many kinds and on random strings.

use std::collections::BinaryHeap;

use fancy_regex::Regex;
use hashbrown::{DefaultHashBuilder, HashTable};
use std::hash::BuildHasher;

type Rank = u32;

/// cl100k_base's split pattern, as tiktoken-rs builds it (it does not export
/// it, unlike o200k's).
const CL100K_PAT_STR: &str =
    "'(?i:[sdmt]|ll|ve|re)|[^\\r\\n\\p{L}\\p{N}]?+\\p{L}++|\\p{N}{1,3}+| ?[^\\s\\p{L}\\p{N}]++[\\r\\n]*+|\\s++$|\\s*[\\r\\n]|\\s+(?!\\S)|\\s";

/// Pieces this long merge with a heap instead of rescanning (as tiktoken).
const LARGE_PIECE: usize = 100;

pub struct Bpe {
    /// Every token's bytes, back to back.
    arena: Box<[u8]>,
    /// Entries: offset (32 bits) | length (10) | rank (22).
    table: HashTable<u64>,
    hasher: DefaultHashBuilder,
    split: Regex,
}

fn pack(off: usize, len: usize, rank: Rank) -> u64 {
    assert!(off < 1 << 32 && len < 1 << 10 && rank < 1 << 22, "token table entry out of range");
    ((off as u64) << 32) | ((len as u64) << 22) | rank as u64
}

impl Bpe {
    pub fn o200k() -> Result<Bpe, String> {
        Self::from_core(|| tiktoken_rs::o200k_base().map_err(|e| e.to_string()), tiktoken_rs::O200K_BASE_PAT_STR)
    }

    pub fn cl100k() -> Result<Bpe, String> {
        Self::from_core(|| tiktoken_rs::cl100k_base().map_err(|e| e.to_string()), CL100K_PAT_STR)
    }

    /// Copy the regular tokens (ranks 0.. until the first gap, where the
    /// special tokens start) out of tiktoken's tables, which are then
    /// dropped. What is kept is allocated before tiktoken's tables (the
    /// pattern) or in two large blocks (arena, table), never among their
    /// many small allocations, so that their pages are wholly free again
    /// once they are dropped.
    fn from_core(load: impl FnOnce() -> Result<tiktoken_rs::CoreBPE, String>, pattern: &str) -> Result<Bpe, String> {
        let split = Regex::new(pattern).map_err(|e| e.to_string())?;
        let core = load()?;
        let token = |rank: usize| core.decode_bytes(&[rank as Rank]).ok();
        let (mut n, mut bytes) = (0, 0);
        while let Some(t) = token(n) {
            n += 1;
            bytes += t.len();
        }
        let hasher = DefaultHashBuilder::default();
        let mut arena = Vec::with_capacity(bytes);
        let mut table = HashTable::with_capacity(n);
        for rank in 0..n {
            let t = token(rank).ok_or_else(|| format!("token {rank} could not be read twice"))?;
            let entry = pack(arena.len(), t.len(), rank as Rank);
            arena.extend_from_slice(&t);
            table.insert_unique(hasher.hash_one(t.as_slice()), entry, |e| hasher.hash_one(slice(&arena, *e)));
        }
        drop(core);
        Ok(Bpe { arena: arena.into_boxed_slice(), table, hasher, split })
    }

    /// The number of tokens `text` encodes to (no special tokens).
    pub fn count(&self, text: &str) -> usize {
        let mut n = 0;
        let mut at = 0;
        for m in self.split.find_iter(text) {
            match m {
                Ok(m) => {
                    n += self.count_piece(m.as_str().as_bytes());
                    at = m.end();
                }
                // The matcher gave up (a backtracking limit): what is left
                // is estimated at 4 bytes a token rather than lost.
                Err(_) => return n + (text.len() - at).div_ceil(4),
            }
        }
        n
    }

    fn rank(&self, bytes: &[u8]) -> Option<Rank> {
        let hash = self.hasher.hash_one(bytes);
        self.table.find(hash, |e| slice(&self.arena, *e) == bytes).map(|e| (*e & 0x3f_ffff) as Rank)
    }

    fn count_piece(&self, piece: &[u8]) -> usize {
        if piece.len() <= 1 || self.rank(piece).is_some() {
            piece.len().min(1)
        } else if piece.len() < LARGE_PIECE {
            self.merge_small(piece)
        } else {
            self.merge_large(piece)
        }
    }

    /// tiktoken's `_byte_pair_merge`: merge the lowest-ranked adjacent
    /// pair until none is in the vocabulary; the parts left are the tokens.
    fn merge_small(&self, piece: &[u8]) -> usize {
        // (start, rank of the pair starting here)
        let mut parts: Vec<(usize, Rank)> = Vec::with_capacity(piece.len() + 1);
        for i in 0..piece.len() - 1 {
            parts.push((i, self.rank(&piece[i..i + 2]).unwrap_or(Rank::MAX)));
        }
        parts.push((piece.len() - 1, Rank::MAX));
        parts.push((piece.len(), Rank::MAX));
        let pair_rank = |parts: &[(usize, Rank)], i: usize| {
            if i + 3 < parts.len() {
                self.rank(&piece[parts[i].0..parts[i + 3].0]).unwrap_or(Rank::MAX)
            } else {
                Rank::MAX
            }
        };
        loop {
            let (i, rank) = parts[..parts.len() - 1].iter().enumerate().map(|(i, p)| (i, p.1)).min_by_key(|&(i, r)| (r, i)).unwrap_or((0, Rank::MAX));
            if rank == Rank::MAX {
                return parts.len() - 1;
            }
            if i > 0 {
                parts[i - 1].1 = pair_rank(&parts, i - 1);
            }
            parts[i].1 = pair_rank(&parts, i);
            parts.remove(i + 1);
        }
    }

    /// tiktoken's `_byte_pair_merge_large`: the same merges in the same
    /// order, lowest rank (then leftmost) first from a heap, so a long piece
    /// costs O(n log n) instead of O(n²).
    fn merge_large(&self, piece: &[u8]) -> usize {
        struct Part {
            prev: usize,
            end: usize,
            next_end: usize,
            next_rank: Rank,
        }
        let mut parts: Vec<Part> = (0..piece.len()).map(|i| Part { prev: i.wrapping_sub(1), end: i + 1, next_end: i + 2, next_rank: Rank::MAX }).collect();
        // Min-heap on (rank, start).
        let mut heap = BinaryHeap::with_capacity(piece.len());
        for i in 0..piece.len() - 1 {
            if let Some(rank) = self.rank(&piece[i..i + 2]) {
                heap.push(std::cmp::Reverse((rank, i)));
                parts[i].next_rank = rank;
            }
        }
        let mut count = piece.len();
        let consider = |parts: &mut Vec<Part>, heap: &mut BinaryHeap<std::cmp::Reverse<(Rank, usize)>>, start: usize, next_end: usize| {
            parts[start].next_end = next_end;
            parts[start].next_rank = Rank::MAX;
            if next_end <= piece.len() {
                if let Some(rank) = self.rank(&piece[start..next_end]) {
                    heap.push(std::cmp::Reverse((rank, start)));
                    parts[start].next_rank = rank;
                }
            }
        };
        while let Some(std::cmp::Reverse((rank, left))) = heap.pop() {
            if rank != parts[left].next_rank {
                continue; // invalidated by an earlier merge
            }
            let right = parts[left].end;
            let right_end = parts[left].next_end;
            let right_next_end = parts[right].next_end;
            parts[left].end = right_end;
            consider(&mut parts, &mut heap, left, right_next_end);
            if right_end < parts.len() {
                parts[right_end].prev = left;
            }
            if left > 0 {
                let prev = parts[left].prev;
                consider(&mut parts, &mut heap, prev, right_end);
            }
            parts[right].next_rank = Rank::MAX;
            count -= 1;
        }
        count
    }
}

fn slice(arena: &[u8], e: u64) -> &[u8] {
    let off = (e >> 32) as usize;
    let len = ((e >> 22) & 0x3ff) as usize;
    &arena[off..off + len]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::LazyLock;

    static O200K: LazyLock<Bpe> = LazyLock::new(|| Bpe::o200k().unwrap());
    static CL100K: LazyLock<Bpe> = LazyLock::new(|| Bpe::cl100k().unwrap());

    fn same(text: &str) {
        let o = tiktoken_rs::o200k_base_singleton().encode_ordinary(text).len();
        assert_eq!(O200K.count(text), o, "o200k on {text:?}");
        let c = tiktoken_rs::cl100k_base_singleton().encode_ordinary(text).len();
        assert_eq!(CL100K.count(text), c, "cl100k on {text:?}");
    }

    #[test]
    fn counts_equal_tiktoken_on_text_of_many_kinds() {
        same("");
        same("Hello world");
        same("Summarize the following meeting notes in three bullet points.\n\nAlice: we ship Friday.\r\n  Bob: I'll check the budget's numbers — it's 12,345.67 USD.");
        same("fn main() {\n    println!(\"{}\", 2 + 2);\n}\n\t\t// done   \n\n\n");
        same("日本語のテキストと中文文本，还有한국어 텍스트와 emoji 🎉🎉🎉 and ÄÖÜ straße.");
        same(r#"{"type":"function","function":{"name":"get_weather","parameters":{"type":"object"}}}"#);
        // Long pieces take the heap merge: no whitespace, no vocabulary hit.
        same(&"abcdefghijklmnopqrstuvwxyz0123456789".repeat(20));
        same(&"x".repeat(5_000));
        same(&"🎉".repeat(300));
        same(&"aé".repeat(400));
        same(&"=-".repeat(700));
        same(&" ".repeat(1_000));
    }

    #[test]
    fn the_compact_table_holds_every_regular_token() {
        assert_eq!(O200K.table.len(), 199_998);
        assert_eq!(CL100K.table.len(), 100_256);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]
        #[test]
        fn counts_equal_tiktoken_on_random_text(s in "\\PC{0,200}") {
            same(&s);
        }

        #[test]
        fn counts_equal_tiktoken_on_random_long_pieces(s in "[a-z0-9é🎉_=-]{100,400}") {
            same(&s);
        }
    }
}
