//! Source positions for [`YamlPath`]s, for diagnostics.
//!
//! The loader parses YAML into a `serde_yaml` value tree, which keeps no positions. When validation
//! reports an error at a [`YamlPath`], [`locate`] re-parses the source with the event parser of
//! `saphyr-parser`, builds a small tree of nodes that remember where they start, and walks the path
//! down that tree, following aliases and merge keys (`<<: *a`, `<<: [*a, *b]`) the way the loader
//! resolves them.
//!
//! This only runs when there are errors to report, so it favours simplicity over speed.

use std::collections::{HashMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};

use saphyr_parser::{Event, Marker, Parser};

use super::path::{Segment, YamlPath};

/// A 1-based position in a source file.
///
/// The column counts characters (Unicode scalar values), not bytes; a tab counts as one column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// The line, starting at 1.
    pub line: usize,
    /// The column, starting at 1.
    pub column: usize,
}

impl Location {
    fn from_marker(mark: Marker) -> Self {
        Location {
            line: mark.line().max(1),
            column: mark.col() + 1,
        }
    }
}

/// Where the node at `path` is written in `src` (the first YAML document): for a `Key` segment the
/// position of the key, for an `Index` the position of the item. When the full path does not
/// exist, the position of its deepest existing prefix (None only when not even the first segment
/// is found or the source does not parse).
///
/// The empty (root) path gives the position of the document's root node.
///
/// Resolution follows the loader's semantics:
/// - a path that goes through an alias continues inside the anchored node's definition, so the
///   positions of deeper nodes are those of the definition; a path that *ends* at an alias (an
///   `Index` whose item is `*a`) gives the position of the alias itself, the use site;
/// - a key not found directly in a mapping is looked for in the mappings merged into it with `<<`
///   (in order, the first one that has it wins, recursively), and is reported where it is written
///   in the merged mapping;
/// - keys match by their scalar value, whatever their quoting style; tags (`!reset`,
///   `!override`, ...) are ignored; a scalar key that is an alias matches the anchored scalar.
///
/// A syntax error does not make the whole lookup fail: nodes parsed before the error can still be
/// located. This function never panics.
pub fn locate(src: &str, path: &YamlPath) -> Option<Location> {
    // The parser is not expected to panic, but this runs while reporting another error: a bug in
    // it must not turn a diagnostic into a crash.
    let tree = catch_unwind(AssertUnwindSafe(|| Tree::parse_first_document(src))).ok()?;
    tree.locate(path).map(Location::from_marker)
}

/// How many aliases or merges may be followed in a row before giving up (guards against cycles
/// such as `&a {<<: *a}`).
const MAX_INDIRECTIONS: usize = 64;

/// An index into [`Tree::nodes`].
type NodeId = usize;

/// What a node is.
#[derive(Debug)]
enum Kind {
    /// A scalar, with its value (unquoted, unfolded).
    Scalar(String),
    /// A sequence of items.
    Seq(Vec<NodeId>),
    /// A mapping: keys and values alternate; the last value is missing when the source stopped
    /// (a syntax error) between a key and its value.
    Map(Vec<NodeId>),
    /// An alias, with the parser's anchor id.
    Alias(usize),
}

/// A node and where it starts (its anchor or tag, if any, included).
#[derive(Debug)]
struct Node {
    kind: Kind,
    start: Marker,
}

/// The nodes of one document. Kept flat, so that neither building, walking nor dropping it
/// recurses, whatever the nesting depth of the input.
#[derive(Debug, Default)]
struct Tree {
    nodes: Vec<Node>,
    /// Anchor id (as numbered by the parser) to the anchored node.
    anchors: HashMap<usize, NodeId>,
    root: Option<NodeId>,
    /// The containers being filled, innermost last.
    open: Vec<NodeId>,
}

impl Tree {
    /// Builds the tree of the first document of `src`, up to the first syntax error if any.
    fn parse_first_document(src: &str) -> Tree {
        let mut tree = Tree::default();
        let mut parser = Parser::new_from_str(src);
        let mut documents = 0;
        while let Some(Ok((event, span))) = parser.next_event() {
            let start = span.start;
            match event {
                Event::StreamStart | Event::Nothing => {}
                Event::DocumentStart(_) => {
                    documents += 1;
                    if documents > 1 {
                        break;
                    }
                }
                Event::DocumentEnd | Event::StreamEnd => break,
                Event::Scalar(value, _, anchor, _) => {
                    tree.add(Kind::Scalar(value.into_owned()), anchor, start);
                }
                Event::Alias(anchor) => {
                    tree.add(Kind::Alias(anchor), 0, start);
                }
                Event::SequenceStart(anchor, _) => {
                    let id = tree.add(Kind::Seq(Vec::new()), anchor, start);
                    tree.open.push(id);
                }
                Event::MappingStart(anchor, _) => {
                    let id = tree.add(Kind::Map(Vec::new()), anchor, start);
                    tree.open.push(id);
                }
                Event::SequenceEnd | Event::MappingEnd => {
                    tree.open.pop();
                }
            }
        }
        tree.open.clear();
        tree
    }

    /// Adds a node, registers its anchor and attaches it to the innermost open container.
    fn add(&mut self, kind: Kind, anchor: usize, start: Marker) -> NodeId {
        let id = self.nodes.len();
        self.nodes.push(Node { kind, start });
        if anchor != 0 {
            // A redefined anchor gets a fresh id from the parser, so this never overwrites.
            self.anchors.insert(anchor, id);
        }
        match self.open.last() {
            None => {
                if self.root.is_none() {
                    self.root = Some(id);
                }
            }
            Some(&parent) => {
                if let Some(Node {
                    kind: Kind::Seq(children) | Kind::Map(children),
                    ..
                }) = self.nodes.get_mut(parent)
                {
                    children.push(id);
                }
            }
        }
        id
    }

    fn kind(&self, id: NodeId) -> Option<&Kind> {
        self.nodes.get(id).map(|node| &node.kind)
    }

    /// The node an alias stands for (the node itself when it is not an alias, or the alias when
    /// its anchor is unknown).
    fn resolve(&self, mut id: NodeId) -> NodeId {
        for _ in 0..MAX_INDIRECTIONS {
            match self.kind(id) {
                Some(Kind::Alias(anchor)) => match self.anchors.get(anchor) {
                    Some(&target) => id = target,
                    None => return id,
                },
                _ => return id,
            }
        }
        id
    }

    /// The value of a scalar node, through an alias.
    fn scalar(&self, id: NodeId) -> Option<&str> {
        match self.kind(self.resolve(id)) {
            Some(Kind::Scalar(value)) => Some(value),
            _ => None,
        }
    }

    /// Finds `key` in the mapping `map` (after resolving aliases) or, failing that, in the mappings
    /// merged into it. Returns the key node and its value node (missing after a syntax error).
    fn find_key(&self, map: NodeId, key: &str) -> Option<(NodeId, Option<NodeId>)> {
        self.find_key_in(map, key, 0, &mut HashSet::new())
    }

    /// [`Self::find_key`], `depth` merges down, skipping the mappings already `searched` (which
    /// makes cycles and diamonds of merges cheap).
    fn find_key_in(
        &self,
        map: NodeId,
        key: &str,
        depth: usize,
        searched: &mut HashSet<NodeId>,
    ) -> Option<(NodeId, Option<NodeId>)> {
        let map = self.resolve(map);
        if depth > MAX_INDIRECTIONS || !searched.insert(map) {
            return None;
        }
        let Some(Kind::Map(entries)) = self.kind(map) else {
            return None;
        };
        let direct = entries
            .chunks(2)
            .find(|entry| self.scalar(entry[0]) == Some(key))
            .map(|entry| (entry[0], entry.get(1).copied()));
        if direct.is_some() {
            return direct;
        }
        for entry in entries.chunks(2) {
            let (Some("<<"), Some(&value)) = (self.scalar(entry[0]), entry.get(1)) else {
                continue;
            };
            let value = self.resolve(value);
            let sources: &[NodeId] = match self.kind(value) {
                Some(Kind::Map(_)) => std::slice::from_ref(&value),
                Some(Kind::Seq(items)) => items,
                _ => &[],
            };
            for &source in sources {
                if let Some(found) = self.find_key_in(source, key, depth + 1, searched) {
                    return Some(found);
                }
            }
        }
        None
    }

    /// The `index`th item of the sequence `seq` (after resolving aliases).
    fn item(&self, seq: NodeId, index: usize) -> Option<NodeId> {
        match self.kind(self.resolve(seq)) {
            Some(Kind::Seq(items)) => items.get(index).copied(),
            _ => None,
        }
    }

    /// The start of the node at `path`, or of its deepest existing prefix.
    fn locate(&self, path: &YamlPath) -> Option<Marker> {
        let root = self.root?;
        let mut found = path
            .is_root()
            .then(|| self.nodes.get(root).map(|node| node.start))
            .flatten();
        let mut current = root;
        for segment in &path.0 {
            let (at, value) = match segment {
                Segment::Key(key) => match self.find_key(current, key) {
                    Some(step) => step,
                    None => break,
                },
                Segment::Index(index) => match self.item(current, *index) {
                    Some(item) => (item, Some(item)),
                    None => break,
                },
            };
            found = self.nodes.get(at).map(|node| node.start);
            match value {
                Some(value) => current = value,
                None => break,
            }
        }
        found
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// Parses `services.web.ports[0]`-style paths; a key may be written `"with.dots"`.
    fn path(text: &str) -> YamlPath {
        let mut segments = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix('.') {
                rest = after;
            } else if let Some(after) = rest.strip_prefix('[') {
                let end = after.find(']').unwrap();
                segments.push(Segment::Index(after[..end].parse().unwrap()));
                rest = &after[end + 1..];
            } else if let Some(after) = rest.strip_prefix('"') {
                let end = after.find('"').unwrap();
                segments.push(Segment::Key(after[..end].to_string()));
                rest = &after[end + 1..];
            } else {
                let end = rest.find(['.', '[']).unwrap_or(rest.len());
                segments.push(Segment::Key(rest[..end].to_string()));
                rest = &rest[end..];
            }
        }
        YamlPath(segments)
    }

    fn at(line: usize, column: usize) -> Option<Location> {
        Some(Location { line, column })
    }

    /// Runs `(path, expected)` cases against one source, reporting every failure at once.
    fn check(name: &str, src: &str, cases: &[(&str, Option<Location>)]) {
        let mut failures = Vec::new();
        for (text, expected) in cases {
            let got = locate(src, &path(text));
            if got != *expected {
                failures.push(format!("  {text}: expected {expected:?}, got {got:?}"));
            }
        }
        assert!(
            failures.is_empty(),
            "{name}:\n{}\n--- source ---\n{src}",
            failures.join("\n")
        );
    }

    #[test]
    fn path_helper_parses_keys_indexes_and_quoted_keys() {
        assert_eq!(
            path(r#"services.web.ports[0].target"#),
            YamlPath::root()
                .key("services")
                .key("web")
                .key("ports")
                .index(0)
                .key("target")
        );
        assert_eq!(
            path(r#"labels."com.example.x"[1][2]"#),
            YamlPath::root()
                .key("labels")
                .key("com.example.x")
                .index(1)
                .index(2)
        );
        assert_eq!(path(""), YamlPath::root());
    }

    #[test]
    fn block_style() {
        let src = "\
services:
  web:
    image: nginx
    ports:
      - \"80:80\"
      - target: 81
        published: 8081
      -
        - nested
  db:
    image: postgres
";
        check(
            "block",
            src,
            &[
                ("", at(1, 1)),
                ("services", at(1, 1)),
                ("services.web", at(2, 3)),
                ("services.web.image", at(3, 5)),
                ("services.web.ports", at(4, 5)),
                ("services.web.ports[0]", at(5, 9)),
                ("services.web.ports[1]", at(6, 9)),
                ("services.web.ports[1].target", at(6, 9)),
                ("services.web.ports[1].published", at(7, 9)),
                ("services.web.ports[2][0]", at(9, 11)),
                ("services.db", at(10, 3)),
                ("services.db.image", at(11, 5)),
            ],
        );
    }

    #[test]
    fn missing_paths_give_the_deepest_existing_prefix() {
        let src = "\
services:
  web:
    image: nginx
    ports:
      - 80
";
        check(
            "missing",
            src,
            &[
                ("nope", None),
                ("nope.deeper", None),
                ("[0]", None),
                ("services.api", at(1, 1)),
                ("services.web.build.context", at(2, 3)),
                ("services.web.ports[1]", at(4, 5)),
                ("services.web.ports[0].target", at(5, 9)),
                ("services.web.ports.target", at(4, 5)),
                ("services.web[0]", at(2, 3)),
                ("services.web.image.tag", at(3, 5)),
                ("services.web.image[0]", at(3, 5)),
            ],
        );
    }

    #[test]
    fn flow_style() {
        let src = "\
services: {web: {image: nginx, ports: [\"80:80\", {target: 81}], 'x': [[a, b]]}}
volumes: { data: {}, logs: }
list: [a: 1, b]
";
        check(
            "flow",
            src,
            &[
                ("services", at(1, 1)),
                ("services.web", at(1, 12)),
                ("services.web.image", at(1, 18)),
                ("services.web.ports", at(1, 32)),
                ("services.web.ports[0]", at(1, 40)),
                ("services.web.ports[1]", at(1, 49)),
                ("services.web.ports[1].target", at(1, 50)),
                ("services.web.x", at(1, 64)),
                ("services.web.x[0][1]", at(1, 74)),
                ("volumes.data", at(2, 12)),
                ("volumes.logs", at(2, 22)),
                ("list[0].a", at(3, 8)),
                ("list[1]", at(3, 14)),
            ],
        );
    }

    #[test]
    fn quoted_and_odd_keys() {
        let src = "\
labels:
  \"com.example.quoted\": a
  'single ''quoted''': b
  plain key with spaces: c
  \"esc\\u0041ped\": d
  80: e
  \"\": f
  ? explicit
  : g
  ? [complex, key]
  : h
";
        check(
            "quoted keys",
            src,
            &[
                (r#"labels."com.example.quoted""#, at(2, 3)),
                ("labels.single 'quoted'", at(3, 3)),
                ("labels.plain key with spaces", at(4, 3)),
                ("labels.escAped", at(5, 3)),
                ("labels.80", at(6, 3)),
                (r#"labels."""#, at(7, 3)),
                ("labels.explicit", at(8, 5)),
                // A key that is not a scalar matches no path key.
                ("labels.complex", at(1, 1)),
            ],
        );
    }

    #[test]
    fn aliases_continue_in_the_anchored_definition() {
        let src = "\
x-env: &env
  A: 1
  B: 2
x-ports: &ports
  - 80
  - 443
x-svc: &svc
  image: nginx
  environment: *env
services:
  web: *svc
  api:
    ports: *ports
    extra: [*ports, *env]
";
        check(
            "aliases",
            src,
            &[
                // The path ends at the key whose value is an alias: the key.
                ("services.web", at(11, 3)),
                // Through the alias: positions inside the definition.
                ("services.web.image", at(8, 3)),
                ("services.web.environment", at(9, 3)),
                ("services.web.environment.B", at(3, 3)),
                ("services.api.ports[1]", at(6, 5)),
                // The path ends at an alias item: the use site.
                ("services.api.extra[0]", at(14, 13)),
                ("services.api.extra[1]", at(14, 21)),
                // ... and continues in the definition.
                ("services.api.extra[0][0]", at(5, 5)),
                ("services.api.extra[1].A", at(2, 3)),
                // Missing inside the definition: the deepest prefix found.
                ("services.web.environment.C", at(9, 3)),
                ("services.web.build", at(11, 3)),
            ],
        );
    }

    #[test]
    fn merge_keys() {
        let src = "\
x-base: &base
  image: nginx
  restart: always
x-logging: &logging
  logging:
    driver: json-file
  restart: no
x-nested: &nested
  <<: *base
  user: root
services:
  single:
    <<: *base
    restart: unless-stopped
  list:
    <<: [*logging, *base]
    command: run
  nested:
    <<: *nested
  inline:
    <<: {init: true}
  flow: {<<: *base, x: 1}
";
        check(
            "merge",
            src,
            &[
                ("services.single.image", at(2, 3)),
                // A key written in the mapping wins over a merged one.
                ("services.single.restart", at(14, 5)),
                ("services.list.logging.driver", at(6, 5)),
                // The first merged mapping that has the key wins.
                ("services.list.restart", at(7, 3)),
                ("services.list.image", at(2, 3)),
                ("services.list.command", at(17, 5)),
                // Merges inside merged mappings.
                ("services.nested.user", at(10, 3)),
                ("services.nested.image", at(2, 3)),
                ("services.inline.init", at(21, 10)),
                ("services.flow.image", at(2, 3)),
                ("services.flow.x", at(22, 21)),
                // Not anywhere: the mapping's own key.
                ("services.list.ports", at(15, 3)),
                // The merge key itself can be addressed.
                ("services.single.<<", at(13, 5)),
            ],
        );
    }

    #[test]
    fn merge_cycles_and_bad_merges_terminate() {
        let src = "\
a: &a
  <<: *a
  x: 1
b: &b
  <<: [*b, *a, 3, [1]]
c:
  <<: scalar
d:
  <<:
";
        check(
            "merge cycles",
            src,
            &[
                ("a.x", at(3, 3)),
                ("a.y", at(1, 1)),
                ("b.x", at(3, 3)),
                ("b.y", at(4, 1)),
                ("c.x", at(6, 1)),
                ("d.x", at(8, 1)),
            ],
        );
    }

    #[test]
    fn diamonds_of_merges_stay_cheap() {
        // Each level merges the previous one twice: a naive search would visit 2^60 mappings.
        let mut src = String::from("x-0: &m0\n  found: yes\n");
        for level in 1..=60 {
            let prev = level - 1;
            src.push_str(&format!(
                "x-{level}: &m{level}\n  <<: [*m{prev}, *m{prev}]\n"
            ));
        }
        src.push_str("svc:\n  <<: *m60\n");
        check(
            "diamonds",
            &src,
            &[("svc.found", at(2, 3)), ("svc.missing", at(123, 1))],
        );
    }

    #[test]
    fn long_merge_chains_are_cut_off() {
        // Beyond 64 merges in a row the search gives up rather than recurse deeper.
        let mut src = String::from("x-0: &m0\n  found: yes\n");
        for level in 1..=100 {
            let prev = level - 1;
            src.push_str(&format!("x-{level}: &m{level}\n  <<: *m{prev}\n"));
        }
        check(
            "chain",
            &src,
            &[("x-60.found", at(2, 3)), ("x-100.found", at(201, 1))],
        );
    }

    #[test]
    fn alias_keys_match_their_anchored_scalar() {
        let src = "\
names:
  - &k web
services:
  *k : {image: nginx}
";
        check(
            "alias keys",
            src,
            &[("services.web", at(4, 3)), ("services.web.image", at(4, 9))],
        );
    }

    #[test]
    fn tags_are_ignored() {
        let src = "\
services:
  web:
    ports: !reset
      - 80
    environment: !override
      A: 1
    image: !!str nginx
    !!str tagged-key: v
    volumes: !reset []
";
        check(
            "tags",
            src,
            &[
                ("services.web.ports", at(3, 5)),
                ("services.web.ports[0]", at(4, 9)),
                ("services.web.environment.A", at(6, 7)),
                ("services.web.image", at(7, 5)),
                // A tagged node starts at its tag.
                ("services.web.tagged-key", at(8, 5)),
                ("services.web.volumes[0]", at(9, 5)),
            ],
        );
    }

    #[test]
    fn anchored_nodes_start_at_their_anchor() {
        let src = "\
list:
  - &first one
  - two
&k key: value
";
        check(
            "anchored",
            src,
            &[
                ("list[0]", at(2, 5)),
                ("list[1]", at(3, 5)),
                ("key", at(4, 1)),
            ],
        );
    }

    #[test]
    fn multi_line_scalars() {
        let src = "\
services:
  web:
    command: >-
      run
      --flag
    entrypoint: |
      line one
      line two
    healthcheck:
      test: \"a
        b\"
      interval: 10s
    labels:
      - plain
        continued
      - after
    user: root
";
        check(
            "multi-line",
            src,
            &[
                ("services.web.command", at(3, 5)),
                ("services.web.entrypoint", at(6, 5)),
                ("services.web.healthcheck.test", at(10, 7)),
                ("services.web.healthcheck.interval", at(12, 7)),
                ("services.web.labels[0]", at(14, 9)),
                ("services.web.labels[1]", at(16, 9)),
                ("services.web.user", at(17, 5)),
            ],
        );
    }

    #[test]
    fn only_the_first_document_counts() {
        let src = "\
---
first: 1
---
second: 2
";
        check("documents", src, &[("first", at(2, 1)), ("second", None)]);
    }

    #[test]
    fn comments_blank_lines_and_unicode_columns() {
        let src = "\
# a comment

services:   # trailing comment
  # inside
  wéb:
    image: \"ünïcode\"
    labels: {ä: 1, b: 2}
";
        check(
            "comments",
            src,
            &[
                ("services", at(3, 1)),
                ("services.wéb", at(5, 3)),
                ("services.wéb.image", at(6, 5)),
                // Columns count characters, not bytes.
                ("services.wéb.labels.b", at(7, 20)),
            ],
        );
    }

    #[test]
    fn empty_and_null_documents() {
        check("empty", "", &[("", None), ("a", None)]);
        check("comment only", "# nothing\n", &[("", None), ("a", None)]);
        check("scalar root", "just text\n", &[("", at(1, 1)), ("a", None)]);
        check(
            "null values",
            "a:\nb: ~\n",
            &[("a", at(1, 1)), ("a.x", at(1, 1)), ("b", at(2, 1))],
        );
    }

    #[test]
    fn syntax_errors_keep_what_was_parsed_before() {
        let src = "\
services:
  web:
    image: nginx
  db: [unclosed
";
        check(
            "syntax error",
            src,
            &[
                ("services.web.image", at(3, 5)),
                ("services.web.ports", at(2, 3)),
            ],
        );
        check("bad start", "]\n", &[("", None), ("a", None)]);
        // The parser stops at the unknown alias: its key is known, not its value.
        check(
            "unknown alias",
            "a: *nope\nb: 1\n",
            &[("a", at(1, 1)), ("a.x", at(1, 1)), ("b", None)],
        );
    }

    #[test]
    fn duplicate_keys_give_the_first() {
        check("duplicates", "a: 1\na: 2\n", &[("a", at(1, 1))]);
    }

    #[test]
    fn windows_line_endings() {
        let src = "services:\r\n  web:\r\n    image: nginx\r\n";
        check("crlf", src, &[("services.web.image", at(3, 5))]);
    }

    /// Every node of a compose-like document is located where its key (or item) is written: the
    /// text at the location starts with the key, for every path of the serde value tree.
    #[test]
    fn every_path_of_a_document_points_at_its_key() {
        let src = "\
name: demo
x-common: &common
  restart: always
  labels:
    com.example.team: core
services:
  web:
    <<: *common
    image: \"nginx:${TAG:-latest}\"
    ports: [\"80:80\", \"443:443\"]
    environment:
      - A=1
      - B=2
    depends_on:
      db:
        condition: service_healthy
    healthcheck:
      test: [CMD, curl, -f, http://localhost]
      interval: 10s
  db:
    image: 'postgres:16'
    volumes:
      - type: volume
        source: data
        target: /var/lib/postgresql/data
volumes:
  data: {}
";
        let mut value: serde_yaml::Value = serde_yaml::from_str(src).unwrap();
        value.apply_merge().unwrap();
        let lines: Vec<&str> = src.lines().collect();
        let mut stack = vec![(YamlPath::root(), value, String::new())];
        let mut checked = 0;
        while let Some((here, value, name)) = stack.pop() {
            if !here.is_root() {
                let loc = locate(src, &here).unwrap_or_else(|| panic!("{here} not found"));
                let text: String = lines[loc.line - 1].chars().skip(loc.column - 1).collect();
                let text = text.trim_start_matches(['"', '\'', '[', '{']);
                assert!(
                    text.starts_with(&name),
                    "{here}: at {loc:?} found {text:?}, expected {name:?}"
                );
                checked += 1;
            }
            match value {
                serde_yaml::Value::Mapping(map) => {
                    for (key, child) in map {
                        let key = key.as_str().unwrap().to_string();
                        stack.push((here.key(&key), child, key));
                    }
                }
                serde_yaml::Value::Sequence(items) => {
                    for (i, child) in items.into_iter().enumerate() {
                        let first = match &child {
                            serde_yaml::Value::String(s) => s.clone(),
                            serde_yaml::Value::Mapping(m) => m
                                .keys()
                                .next()
                                .and_then(|k| k.as_str())
                                .unwrap_or_default()
                                .to_string(),
                            _ => String::new(),
                        };
                        stack.push((here.index(i), child, first));
                    }
                }
                _ => {}
            }
        }
        assert!(checked > 30, "only {checked} paths checked");
    }

    /// A small deterministic generator of YAML-ish garbage.
    struct Garbage(u64);

    impl Garbage {
        fn next(&mut self) -> u64 {
            // xorshift64
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn text(&mut self) -> String {
            const PIECES: &[&str] = &[
                "a",
                "b",
                ":",
                ": ",
                "-",
                "- ",
                "\n",
                "  ",
                " ",
                "\t",
                "[",
                "]",
                "{",
                "}",
                ",",
                "&a ",
                "*a",
                "&b ",
                "*b",
                "<<: ",
                "!reset ",
                "!!str ",
                "!",
                "?",
                "? ",
                "|",
                ">-",
                "\"",
                "'",
                "\\",
                "#",
                "---\n",
                "...\n",
                "%YAML 1.2\n",
                "%TAG ! !x\n",
                "é",
                "\r\n",
                "\u{feff}",
                "@",
                "`",
                "%",
                "0",
                "~",
            ];
            let len = self.next() % 60;
            (0..len)
                .map(|_| PIECES[(self.next() % PIECES.len() as u64) as usize])
                .collect()
        }

        fn path(&mut self) -> YamlPath {
            let len = self.next() % 5;
            YamlPath(
                (0..len)
                    .map(|_| match self.next() % 4 {
                        0 => Segment::Index((self.next() % 3) as usize),
                        1 => Segment::Key("b".into()),
                        2 => Segment::Key("<<".into()),
                        _ => Segment::Key("a".into()),
                    })
                    .collect(),
            )
        }
    }

    #[test]
    fn garbage_never_panics() {
        let mut gen = Garbage(0x9e37_79b9_7f4a_7c15);
        for _ in 0..20_000 {
            let src = gen.text();
            let path = gen.path();
            if let Some(loc) = locate(&src, &path) {
                assert!(loc.line >= 1 && loc.column >= 1, "{src:?} {path}: {loc:?}");
            }
        }
    }

    #[test]
    fn deep_nesting_does_not_overflow() {
        // Block nesting has no limit in the parser.
        let depth = 100_000;
        let src = format!("{}x", "- ".repeat(depth));
        let deep = YamlPath(vec![Segment::Index(0); depth]);
        assert_eq!(locate(&src, &deep), at(1, 2 * depth + 1));
        let deeper = YamlPath(vec![Segment::Index(0); depth + 5]);
        assert_eq!(locate(&src, &deeper), at(1, 2 * depth + 1));
        // Flow nesting is limited to 255 levels by the parser, which then fails from the start.
        let src = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let deep = YamlPath(vec![Segment::Index(0); 500]);
        assert_eq!(locate(&src, &deep), at(1, 200));
        let src = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        assert_eq!(locate(&src, &deep), None);
        let unclosed = "{a: ".repeat(depth);
        let keys = YamlPath(vec![Segment::Key("a".into()); depth]);
        assert_eq!(locate(&unclosed, &keys), None);
    }
}
