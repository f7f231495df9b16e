//! The complexity score of a request's last user message: keyword groups
//! (one Aho-Corasick automaton per group, built once per config) set the
//! base, then bumps for a long conversation, several questions and a long
//! message. The rules are `routing.complexity` (`config::Complexity`).

use crate::config::{Complexity, KeywordIndex, KeywordMatch};

/// The complexity score with what produced it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Score {
    pub value: u8,
    pub base: u8,
    /// (group, keyword) of `routing.complexity.keywords` that set the base.
    pub keyword: Option<(usize, usize)>,
    pub messages: usize,
    pub question_marks: usize,
    pub chars: usize,
}

/// The complexity score of a message (the seed's heuristic by default):
/// the first keyword group found sets the base, then bumps for a long
/// conversation, several questions and a long message; capped at 10.
pub fn score(rules: &Complexity, message: &str, messages: usize) -> Score {
    let keyword = first_keyword(rules, message);
    let base = keyword.map(|(g, _)| rules.groups[g].0).unwrap_or(rules.default_score);
    let question_marks = memchr::memchr_iter(b'?', message.as_bytes()).count();
    let chars = if message.is_ascii() { message.len() } else { message.chars().count() };
    let mut value = base;
    for (measured, bump) in [(messages, rules.long_conversation), (question_marks, rules.many_questions), (chars, rules.long_message)] {
        if measured as u64 > bump.over {
            value = value.saturating_add(bump.add).min(10);
        }
    }
    Score { value: value.min(10), base, keyword, messages, question_marks, chars }
}

/// The first group with a keyword in the lowercased message, and the first
/// of its keywords found: the least (group, keyword) found anywhere. One
/// scan over the message with one automaton of every group's keywords
/// over the lowercased message (a SIMD prefilter skips text that cannot
/// match, which is most of it; matching case-insensitively instead would
/// cost that prefilter).
fn first_keyword(rules: &Complexity, message: &str) -> Option<(usize, usize)> {
    let ascii = message.is_ascii();
    if rules.keyword_match == KeywordMatch::Word && !ascii {
        return first_word_unicode(rules, message);
    }
    let index = rules.index.get_or_init(|| build_index(rules));
    let text = if ascii { message.to_ascii_lowercase() } else { message.to_lowercase() };
    let Some(ac) = &index.automaton else {
        return rules.groups.iter().enumerate().find_map(|(g, (_, kws))| kws.iter().position(|kw| plain_find(rules.keyword_match, &text, kw)).map(|k| (g, k)));
    };
    let bytes = text.as_bytes();
    let least = match rules.keyword_match {
        // Leftmost-first reports, at each place a keyword starts, the least
        // pattern starting there; searching on from the next byte visits
        // every such place (a keyword inside or overlapping another one too).
        KeywordMatch::Substring => {
            let mut least: Option<usize> = None;
            let mut from = 0;
            while let Some(m) = ac.find(aho_corasick::Input::new(bytes).span(from..bytes.len())) {
                let p = m.pattern().as_usize();
                least = Some(least.map_or(p, |l| l.min(p)));
                if p == 0 {
                    break;
                }
                from = m.start() + 1;
            }
            least
        }
        KeywordMatch::Word => {
            let is_word = |b: u8| b.is_ascii_alphanumeric() || b == b'\'';
            let whole_word =
                |s: usize, e: usize| (s == 0 || !is_word(bytes[s - 1])) && (e == bytes.len() || !is_word(bytes[e])) && bytes[s..e].iter().all(|&b| is_word(b));
            ac.find_overlapping_iter(bytes).filter(|m| whole_word(m.start(), m.end())).map(|m| m.pattern().as_usize()).min()
        }
    };
    least.map(|p| index.owner[p])
}

fn build_index(rules: &Complexity) -> KeywordIndex {
    let owner: Vec<(usize, usize)> = rules.groups.iter().enumerate().flat_map(|(g, (_, kws))| (0..kws.len()).map(move |k| (g, k))).collect();
    // Leftmost-first lets the prefilter skip text; every overlap (whole
    // words) needs standard semantics.
    let kind = match rules.keyword_match {
        KeywordMatch::Substring => aho_corasick::MatchKind::LeftmostFirst,
        KeywordMatch::Word => aho_corasick::MatchKind::Standard,
    };
    let automaton = aho_corasick::AhoCorasick::builder().match_kind(kind).build(rules.groups.iter().flat_map(|(_, kws)| kws)).ok();
    KeywordIndex { automaton, owner }
}

/// Whether `kw` is in the lowercased message, keyword by keyword.
fn plain_find(how: KeywordMatch, lower: &str, kw: &str) -> bool {
    match how {
        KeywordMatch::Substring => lower.contains(kw),
        KeywordMatch::Word => lower.split(|c: char| !c.is_alphanumeric() && c != '\'').any(|w| w == kw),
    }
}

/// Whole-word keywords in a message with non-ASCII text: its Unicode
/// lowercase split into words.
fn first_word_unicode(rules: &Complexity, message: &str) -> Option<(usize, usize)> {
    let lower = message.to_lowercase();
    let words: Vec<&str> = lower.split(|c: char| !c.is_alphanumeric() && c != '\'').filter(|w| !w.is_empty()).collect();
    rules.groups.iter().enumerate().find_map(|(g, (_, kws))| kws.iter().position(|k| words.contains(&k.as_str())).map(|k| (g, k)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(msg: &str, messages: usize) -> u8 {
        score(&Complexity::default(), msg, messages).value
    }

    #[test]
    fn the_seeds_examples_score_as_the_seed_says() {
        assert_eq!(s("add task to call john", 1), 2);
        assert_eq!(s("show urgent Avenue tasks due this week", 1), 4);
        assert_eq!(s("analyze my productivity patterns", 1), 9);
        assert_eq!(s("hello there", 1), 5);
        // Long conversation (+2), several questions (+2), long message (+1).
        assert_eq!(s("add task to call john", 11), 4);
        assert_eq!(s("what is due? and when?", 1), 6);
        let long = format!("show {}", "x".repeat(200));
        assert_eq!(s(&long, 1), 5);
        assert_eq!(s("why? how? really?", 12), 10, "capped at 10");
    }

    #[test]
    fn first_matching_group_wins_and_word_mode_avoids_substrings() {
        // "explain what ..." hits the retrieval group first, as in the seed.
        assert_eq!(s("explain what happened", 1), 4);
        let word = Complexity { keyword_match: KeywordMatch::Word, ..Complexity::default() };
        assert_eq!(score(&Complexity::default(), "my address book", 1).base, 2, "substring: `add` in `address`");
        assert_eq!(score(&word, "my address book", 1).base, 5);
        assert_eq!(score(&word, "add milk", 1).keyword, Some((0, 0)));
    }

    #[test]
    fn the_indexed_scan_agrees_with_a_plain_one() {
        // What the scorer means: the first group with a keyword in the
        // lowercased message (as a substring, or as a whole word), and the
        // first such keyword of that group.
        fn plain(rules: &Complexity, message: &str) -> Option<(usize, usize)> {
            let lower = message.to_lowercase();
            let words: Vec<&str> = lower.split(|c: char| !c.is_alphanumeric() && c != '\'').filter(|w| !w.is_empty()).collect();
            let found = |kw: &str| match rules.keyword_match {
                KeywordMatch::Substring => lower.contains(kw),
                KeywordMatch::Word => words.contains(&kw),
            };
            rules.groups.iter().enumerate().find_map(|(g, (_, kws))| kws.iter().position(|k| found(k)).map(|k| (g, k)))
        }
        let word = Complexity { keyword_match: KeywordMatch::Word, ..Complexity::default() };
        let messages = [
            "Add it NOW",
            "why? HOW? explain",
            "my address book",
            "don't show",
            "no keyword here",
            "x-list-y",
            "Findings and analyzes",
            "",
            "what's new",
            "ÉCRIS: how ça",
            "Pourquoi ? EXPLAIN ça",
        ];
        for rules in [&Complexity::default(), &word] {
            for m in messages {
                assert_eq!(first_keyword(rules, m), plain(rules, m), "{m:?} ({:?})", rules.keyword_match);
            }
            // Keywords inside, overlapping and beside one another, in
            // either case: the one scan must still see each of them.
            let kws: Vec<&str> = rules.groups.iter().flat_map(|(_, k)| k.iter().map(String::as_str)).collect();
            for a in &kws {
                for b in &kws {
                    let overlap = (1..a.len().min(b.len())).rev().find(|&n| a.ends_with(&b[..n])).unwrap_or(0);
                    for m in [format!("{a}{}", &b[overlap..]), format!("x{}{b} {a}", a.to_uppercase()), format!("{b}'{a}")] {
                        assert_eq!(first_keyword(rules, &m), plain(rules, &m), "{m:?} ({:?})", rules.keyword_match);
                    }
                }
            }
        }
        assert_eq!(score(&Complexity::default(), "Pourquoi ? EXPLAIN ça", 1).keyword, Some((2, 3)));
    }
}
