//! Classification: what routing knows about a request (app, task,
//! complexity, size, client controls), computed once per request.
//!
//! Cheap by construction: the body's top-level fields are already split
//! (`JsonBody`); messages are read as borrowed slices and only the last user
//! message's text is decoded. Input tokens are counted lazily, only when a
//! route or the context guard needs them (see `tokens`).

use std::sync::OnceLock;

use http::HeaderMap;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::prompt::{has_response_format, GeminiConfig, Prompt};
use super::tokens::{self, Tokens};
use crate::body::JsonBody;
use crate::config::{Complexity, KeywordMatch, Mode, Model, Snapshot};
use crate::dialect::{Api, Dialect, ErrorKind, GatewayError, Incoming};

/// Where a classification value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Header,
    ApiKey,
    /// Index into `routing.tasks`.
    Rule(usize),
    Default,
}

impl Source {
    pub fn describe(self) -> String {
        match self {
            Source::Header => "header".into(),
            Source::ApiKey => "API key (routing.app_keys)".into(),
            Source::Rule(i) => format!("routing.tasks[{i}]"),
            Source::Default => "default".into(),
        }
    }
}

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

/// Requests a client makes through `x-modelgate-*` headers.
#[derive(Debug, Clone, Default)]
pub struct Controls {
    pub model: Option<String>,
    pub tier_max: bool,
    pub mode: Option<Mode>,
}

pub struct Facts<'a> {
    pub dialect: Dialect,
    pub api: Api,
    pub path: &'a str,
    pub headers: &'a HeaderMap,
    /// The body's `model`.
    pub model: Option<&'a str>,
    /// The configured model `model` names: by its name, its upstream `id`
    /// or one of its `aliases` (`Snapshot::model_for`).
    pub configured: Option<&'a Model>,
    /// `model` is an upstream id or alias of `configured`, not its name: a
    /// try at `configured` sends it upstream as the client wrote it.
    pub by_alias: bool,
    pub app: String,
    pub app_source: Source,
    pub task: Option<String>,
    pub task_source: Source,
    pub complexity: Score,
    pub stream: bool,
    /// Transparent mode: the provider whose host the client called.
    pub provider_hint: Option<usize>,
    pub tools: bool,
    pub response_format: bool,
    /// The end user: `user`, `safety_identifier` or `metadata.user_id`.
    pub user: Option<String>,
    /// The output budget the client asked for.
    pub max_tokens: Option<u64>,
    pub controls: Controls,
    body: Option<&'a JsonBody>,
    body_len: usize,
    tokens_model: Option<&'a str>,
    /// Raw counts per BPE family, made on first use.
    counts: [OnceLock<u64>; 2],
}

impl Facts<'_> {
    /// An upper bound on the input tokens that costs nothing: a token is at
    /// least one byte of the body.
    pub fn tokens_upper_bound(&self) -> u64 {
        // A token is at least one byte of the body, except images (a flat
        // 1,000 each): with any image the bound is unknown.
        let has_image = self.body.is_some_and(|b| memchr::memmem::find(b.original(), b"image").is_some());
        if has_image {
            return u64::MAX;
        }
        tokens::scaled(self.body_len as u64, false).count
    }

    /// The estimated input tokens for the requested model.
    pub fn tokens(&self) -> Tokens {
        self.tokens_for(self.tokens_model)
    }

    /// The estimated input tokens for a model (upstream id): its own
    /// tokenizer, or the o200k count with a margin.
    pub fn tokens_for(&self, model: Option<&str>) -> Tokens {
        let (family, exact) = tokens::family(model);
        let n = *self.counts[family as usize].get_or_init(|| self.body.map(|b| tokens::count(b, self.api, family)).unwrap_or(0));
        tokens::scaled(n, exact)
    }

    /// The requested model's estimate, if routing needed a count.
    pub fn tokens_if_counted(&self) -> Option<Tokens> {
        let (family, exact) = tokens::family(self.tokens_model);
        self.counts[family as usize].get().map(|n| tokens::scaled(*n, exact))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        header(self.headers, name)
    }
}

fn header<'h>(h: &'h HeaderMap, name: &str) -> Option<&'h str> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty())
}

fn bad_header(name: &str, msg: String) -> GatewayError {
    GatewayError::new(400, ErrorKind::InvalidRequest, "invalid_modelgate_header", format!("{name}: {msg}"))
}

/// The request's classification. `body` is the parsed JSON of a model call
/// (`None` for other requests); `body_len` its size in bytes.
pub fn classify<'a>(
    snap: &'a Snapshot,
    incoming: &Incoming,
    path: &'a str,
    headers: &'a HeaderMap,
    body: Option<&'a JsonBody>,
    body_len: usize,
    model: Option<&'a str>,
) -> Result<Facts<'a>, GatewayError> {
    let (dialect, api) = (incoming.dialect, incoming.api);
    let routing = &snap.routing;
    let controls = Controls::read(headers)?;

    let (app, app_source) = if let Some(a) = header(headers, "x-modelgate-app") {
        (a.to_string(), Source::Header)
    } else if let Some(a) = app_from_key(headers, routing) {
        (a, Source::ApiKey)
    } else {
        ("default".to_string(), Source::Default)
    };

    let prompt = body.map(|b| Prompt::read(b, api, dialect, !routing.tasks.is_empty())).unwrap_or_default();
    let tools = body.and_then(|b| b.field("tools")).is_some_and(|t| !matches!(t.get().trim(), "null" | "[]"));
    let gemini_config = body.filter(|_| api == Api::GenerateContent).and_then(GeminiConfig::read);
    let response_format = body.is_some_and(has_response_format) || gemini_config.as_ref().is_some_and(GeminiConfig::structured);

    let (task, task_source) = match header(headers, "x-modelgate-task") {
        Some(t) => (Some(t.to_string()), Source::Header),
        None => task_rule(routing, path, model, &prompt.system, tools, response_format),
    };

    let complexity = score(&routing.complexity, &prompt.last_user, prompt.messages);
    let user = body.and_then(user_of);
    let max_tokens = ["max_completion_tokens", "max_tokens", "max_output_tokens"]
        .iter()
        .find_map(|k| body.and_then(|b| b.field(k)).and_then(|v| v.get().trim().parse::<u64>().ok()))
        .or(gemini_config.as_ref().and_then(|g| g.max_output_tokens));
    // Count with the tokenizer of the model the request names (its upstream id
    // when it is a configured model).
    let found = model.and_then(|m| snap.model_for(m));
    let (configured, by_alias) = (found.map(|(c, _)| c), found.is_some_and(|(_, a)| a));
    let tokens_model = model.map(|m| configured.filter(|_| !by_alias).map(|c| c.id.as_str()).unwrap_or(m));

    Ok(Facts {
        dialect,
        api,
        path,
        headers,
        model,
        configured,
        by_alias,
        app,
        app_source,
        task,
        task_source,
        complexity,
        stream: incoming.path_stream || body.is_some_and(JsonBody::stream),
        provider_hint: incoming.provider,
        tools,
        response_format,
        user,
        max_tokens,
        controls,
        body,
        body_len,
        tokens_model,
        counts: [OnceLock::new(), OnceLock::new()],
    })
}

impl Controls {
    /// The client's `x-modelgate-model`, `-tier` and `-mode` headers.
    fn read(headers: &HeaderMap) -> Result<Controls, GatewayError> {
        Ok(Controls {
            model: header(headers, "x-modelgate-model").map(str::to_string),
            tier_max: match header(headers, "x-modelgate-tier") {
                None => false,
                Some(v) if v.eq_ignore_ascii_case("max") => true,
                Some(v) => {
                    return Err(bad_header("x-modelgate-tier", format!("`{v}` is not a tier request; send `max` to escalate to the route's strongest model")))
                }
            },
            mode: match header(headers, "x-modelgate-mode") {
                None => None,
                Some(v) => Some(
                    Mode::parse(v).ok_or_else(|| bad_header("x-modelgate-mode", format!("unknown routing mode `{v}`; expected one of: {}", Mode::names())))?,
                ),
            },
        })
    }
}

/// The first `routing.tasks` rule the request matches.
fn task_rule(routing: &crate::config::Routing, path: &str, model: Option<&str>, system: &str, tools: bool, response_format: bool) -> (Option<String>, Source) {
    let lower = system.to_lowercase();
    let hit = routing.tasks.iter().position(|r| {
        r.path.as_ref().is_none_or(|g| g.matches(path))
            && r.model.as_ref().is_none_or(|g| model.is_some_and(|m| g.matches(m)))
            && r.system_contains.as_ref().is_none_or(|s| lower.contains(s.as_str()))
            && r.system_regex.as_ref().is_none_or(|re| re.is_match(system))
            && r.tools.is_none_or(|t| t == tools)
            && r.response_format.is_none_or(|f| f == response_format)
    });
    match hit {
        Some(i) => (Some(routing.tasks[i].task.clone()), Source::Rule(i)),
        None => (None, Source::Default),
    }
}

/// The end user the body names (`user`, `safety_identifier`, Anthropic's
/// `metadata.user_id`).
fn user_of(body: &JsonBody) -> Option<String> {
    let field_str = |k: &str| body.field(k).and_then(|v| serde_json::from_str::<String>(v.get()).ok());
    field_str("user").or_else(|| field_str("safety_identifier")).or_else(|| {
        #[derive(Deserialize)]
        struct Meta {
            user_id: Option<String>,
        }
        body.field("metadata").and_then(|m| serde_json::from_str::<Meta>(m.get()).ok()).and_then(|m| m.user_id)
    })
}

/// The hex SHA-256 of the client's API key, if it is mapped to an app.
fn app_from_key(headers: &HeaderMap, routing: &crate::config::Routing) -> Option<String> {
    if routing.app_keys.is_empty() {
        return None;
    }
    let key = header(headers, "authorization")
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .or_else(|| header(headers, "x-api-key"))
        .or_else(|| header(headers, "x-goog-api-key"))?;
    routing.app_keys.get(&key_hash(key.trim())).cloned()
}

/// How an API key is named in `routing.app_keys`: lowercase hex SHA-256.
pub fn key_hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
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
/// of its keywords found. Each group is one automaton (a SIMD scan when
/// nothing matches, which is most of the text); only the winning group is
/// searched keyword by keyword.
fn first_keyword(rules: &Complexity, message: &str) -> Option<(usize, usize)> {
    let ascii = message.is_ascii();
    if rules.keyword_match == KeywordMatch::Word && !ascii {
        return first_word_unicode(rules, message);
    }
    let lower = if ascii { message.to_ascii_lowercase() } else { message.to_lowercase() };
    let index = rules.index.get_or_init(|| {
        // Leftmost-first lets a SIMD prefilter skip text; finding every
        // overlap (whole words) needs standard semantics.
        let kind = match rules.keyword_match {
            KeywordMatch::Substring => aho_corasick::MatchKind::LeftmostFirst,
            KeywordMatch::Word => aho_corasick::MatchKind::Standard,
        };
        let group = |kws: &Vec<String>| aho_corasick::AhoCorasick::builder().match_kind(kind).build(kws).ok();
        rules.groups.iter().map(|(_, kws)| group(kws)).collect()
    });
    let bytes = lower.as_bytes();
    let is_word = |b: u8| b.is_ascii_alphanumeric() || b == b'\'';
    let whole_word =
        |s: usize, e: usize| (s == 0 || !is_word(bytes[s - 1])) && (e == bytes.len() || !is_word(bytes[e])) && bytes[s..e].iter().all(|&b| is_word(b));
    index.iter().zip(&rules.groups).enumerate().find_map(|(g, (ac, (_, kws)))| {
        // (Plain strings always build; without an automaton, scan plainly.)
        let Some(ac) = ac else { return kws.iter().position(|kw| plain_find(rules.keyword_match, &lower, kw)).map(|k| (g, k)) };
        let k = match rules.keyword_match {
            KeywordMatch::Substring if ac.is_match(&lower) => kws.iter().position(|kw| memchr::memmem::find(bytes, kw.as_bytes()).is_some()),
            KeywordMatch::Substring => None,
            KeywordMatch::Word => ac.find_overlapping_iter(&lower).filter(|m| whole_word(m.start(), m.end())).map(|m| m.pattern().as_usize()).min(),
        };
        k.map(|k| (g, k))
    })
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
        }
        assert_eq!(score(&Complexity::default(), "Pourquoi ? EXPLAIN ça", 1).keyword, Some((2, 3)));
    }
}
