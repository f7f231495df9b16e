//! YAML path → source position index.
//!
//! serde_yaml reports positions only for the first syntax or schema error, and
//! none for errors found while validating (a route naming a missing model).
//! This module walks the document's marked events once and records where each
//! node starts, keyed by the same path syntax our errors use
//! (`routes[1].match.model`), so every error can point at its line.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// 1-based line and column of a node in the config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

/// Where each YAML path starts. Paths of mapping keys point at the key.
#[derive(Debug, Default)]
pub struct PositionIndex {
    map: HashMap<String, Pos>,
}

impl PositionIndex {
    /// Index `text`. A document that does not parse yields an empty index
    /// (serde_yaml reports the syntax error itself, with its position).
    pub fn build(text: &str) -> Self {
        let mut recv = Recv::default();
        let mut parser = Parser::new_from_str(text);
        if parser.load(&mut recv, false).is_err() {
            return Self::default();
        }
        Self { map: recv.map }
    }

    /// Position of `path`, or of its nearest ancestor that has one.
    pub fn find(&self, path: &str) -> Option<Pos> {
        let mut p = path;
        loop {
            if let Some(pos) = self.map.get(p) {
                return Some(*pos);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }
}

enum Frame {
    Map { path: String, key: Option<String>, keys_seen: usize },
    Seq { path: String, next: usize },
}

#[derive(Default)]
struct Recv {
    stack: Vec<Frame>,
    map: HashMap<String, Pos>,
}

fn pos(mark: Marker) -> Pos {
    // yaml-rust2 lines are 1-based, columns 0-based.
    Pos { line: mark.line(), column: mark.col() + 1 }
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

impl Recv {
    /// The path of the node that starts now, advancing the parent's state.
    /// `None` when the event is a mapping key (recorded, not a node).
    fn node_path(&mut self, scalar: Option<&str>, mark: Marker) -> Option<String> {
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Seq { path, next }) => {
                let p = format!("{path}[{next}]");
                *next += 1;
                Some(p)
            }
            Some(Frame::Map { path, key, keys_seen }) => match key.take() {
                Some(k) => Some(join(path, &k)),
                None => {
                    // This event is a key. Complex (non-scalar) keys are not
                    // used by our schema; index them under a placeholder.
                    let k = scalar.unwrap_or("?").to_string();
                    self.map.insert(join(path, &k), pos(mark));
                    // A block mapping's start mark is at its first `:`;
                    // point the mapping itself at its first key instead.
                    if *keys_seen == 0 {
                        self.map.insert(path.clone(), pos(mark));
                    }
                    *keys_seen += 1;
                    *key = Some(k);
                    None
                }
            },
        }
    }
}

impl MarkedEventReceiver for Recv {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(ref v, ..) => {
                if let Some(p) = self.node_path(Some(v), mark) {
                    self.map.entry(p).or_insert(pos(mark));
                }
            }
            Event::Alias(_) => {
                if let Some(p) = self.node_path(None, mark) {
                    self.map.entry(p).or_insert(pos(mark));
                }
            }
            Event::MappingStart(..) => {
                let p = self.node_path(None, mark).unwrap_or_default();
                self.map.entry(p.clone()).or_insert(pos(mark));
                self.stack.push(Frame::Map { path: p, key: None, keys_seen: 0 });
            }
            Event::SequenceStart(..) => {
                let p = self.node_path(None, mark).unwrap_or_default();
                self.map.entry(p.clone()).or_insert(pos(mark));
                self.stack.push(Frame::Seq { path: p, next: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_keys_and_sequence_items() {
        let text = "a: 1\nroutes:\n  - name: x\n    match: { model: \"g*\" }\n  - name: y\n    target: m\n";
        let idx = PositionIndex::build(text);
        assert_eq!(idx.find("a"), Some(Pos { line: 1, column: 1 }));
        assert_eq!(idx.find("routes[1].target"), Some(Pos { line: 6, column: 5 }));
        assert_eq!(idx.find("routes[0].match.model"), Some(Pos { line: 4, column: 14 }));
        // Unknown leaf falls back to its parent.
        assert_eq!(idx.find("routes[1].nope"), Some(Pos { line: 5, column: 5 }));
    }
}
