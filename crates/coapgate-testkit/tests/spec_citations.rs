//! Every section citation of docs/spec.md in the repository's `.rs` and
//! `.md` files names a heading of docs/spec.md, and none points at the
//! upstream contract outside the repository instead.
//!
//! A citation is the file name `spec.md`, white space (also across a line
//! break and a `//`, `///` or `//!` comment marker), the section sign and a
//! number such as `2` or `2.1`, optionally followed by more numbers joined
//! with `,`, `and`, `or`, `to` or a dash (each may carry `step N`). The
//! section numbers are those of the headings `## 2. Resources` and
//! `### 2.1 Order of checks …`.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use regex::Regex;

/// A heading of spec.md that carries a section number.
static HEADING: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?m)^#{1,6}[ \t]+(\d+(?:\.\d+)*)\.?[ \t]").unwrap());

/// White space between words, also across a line break and a comment marker.
const GAP: &str = r"(?:\s|//[/!]?)+";

/// One citation of spec.md, possibly naming several sections.
static CITATION: LazyLock<Regex> = LazyLock::new(|| {
    let number = r"§\d+(?:\.\d+)*(?:\s+steps?\s+\d+(?:\s*(?:–|-|to|and)\s*\d+)?)?";
    let join = r"(?:\s|//[/!]?)*(?:,|;|–|-|\band\b|\bor\b|\bto\b)(?:\s|//[/!]?)*";
    Regex::new(&format!(r"\bspec\.md{GAP}({number}(?:{join}{number})*)")).unwrap()
});

/// One section number inside a citation.
static SECTION: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"§(\d+(?:\.\d+)*)").unwrap());

/// A citation of the upstream contract's sections, which a clone cannot follow.
static OUTSIDE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(&format!(r"\bSPEC(?:\.md)?{GAP}§\d+(?:\.\d+)*")).unwrap());

/// The section numbers the upstream contract has; spec.md must keep them.
const REQUIRED: [&str; 13] = [
    "1", "2", "2.1", "2.2", "2.3", "2.4", "2.5", "3", "4", "5", "6", "7", "8",
];

/// Fewer citations than this means the search is broken, not that the
/// code stopped citing (there were about 80 when this test was written).
const AT_LEAST: usize = 60;

/// A citation that points nowhere.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Bad {
    file: String,
    line: usize,
    citation: String,
    why: &'static str,
}

impl std::fmt::Display for Bad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}: `{}`: {}",
            self.file, self.line, self.citation, self.why
        )
    }
}

/// The section numbers spec.md has headings for.
fn sections(spec: &str) -> BTreeSet<String> {
    HEADING
        .captures_iter(spec)
        .map(|c| c[1].to_owned())
        .collect()
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset].matches('\n').count() + 1
}

/// Checks one file's text: the number of section numbers cited, and every
/// citation that names no section of `known` or points outside the repo.
fn check(file: &str, text: &str, known: &BTreeSet<String>) -> (usize, Vec<Bad>) {
    let mut cited = 0;
    let mut bad = Vec::new();
    for citation in CITATION.captures_iter(text) {
        let list = citation.get(1).unwrap();
        for section in SECTION.captures_iter(list.as_str()) {
            cited += 1;
            let number = &section[1];
            if !known.contains(number) {
                let at = list.start() + section.get(0).unwrap().start();
                bad.push(Bad {
                    file: file.to_owned(),
                    line: line_of(text, at),
                    citation: format!("spec.md §{number}"),
                    why: "docs/spec.md has no heading with this number",
                });
            }
        }
    }
    for outside in OUTSIDE.find_iter(text) {
        bad.push(Bad {
            file: file.to_owned(),
            line: line_of(text, outside.start()),
            citation: outside
                .as_str()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
            why: "cites the contract outside the repository; cite docs/spec.md",
        });
    }
    (cited, bad)
}

/// Directories never searched: build output, git's own, fuzzing data.
fn skipped(root: &Path, dir: &Path) -> bool {
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    name == "target"
        || name == ".git"
        || dir == root.join("fuzz/corpus")
        || dir == root.join("fuzz/artifacts")
}

/// Every `.rs` and `.md` file under `dir`, symlinks not followed.
fn sources(root: &Path, dir: &Path, found: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.unwrap())
        .collect();
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let path = entry.path();
        let kind = entry.file_type().unwrap();
        if kind.is_dir() && !skipped(root, &path) {
            sources(root, &path, found);
        } else if kind.is_file()
            && path
                .extension()
                .is_some_and(|ext| ext == "rs" || ext == "md")
        {
            found.push(path);
        }
    }
}

#[test]
fn every_spec_citation_names_a_section_of_docs_spec_md() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap();
    let spec = std::fs::read_to_string(root.join("docs/spec.md")).unwrap();
    let known = sections(&spec);
    let missing: Vec<_> = REQUIRED.iter().filter(|n| !known.contains(**n)).collect();
    assert!(
        missing.is_empty(),
        "docs/spec.md lost the upstream numbering: no heading for {missing:?}"
    );

    let mut files = Vec::new();
    sources(&root, &root, &mut files);
    let mut cited = 0;
    let mut citing_files = 0;
    let mut bad = Vec::new();
    for path in &files {
        let Ok(text) = std::fs::read_to_string(path) else {
            continue; // not UTF-8: no citations to check
        };
        let name = path.strip_prefix(&root).unwrap().display().to_string();
        let (n, mut problems) = check(&name, &text, &known);
        cited += n;
        citing_files += usize::from(n > 0);
        bad.append(&mut problems);
    }
    assert!(
        bad.is_empty(),
        "{} bad citation(s) (sections of docs/spec.md: {}):\n{}",
        bad.len(),
        known.iter().cloned().collect::<Vec<_>>().join(", "),
        bad.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        cited >= AT_LEAST && citing_files >= 20,
        "only {cited} citations in {citing_files} of {} files: is the search broken?",
        files.len()
    );
}

#[test]
fn the_checker_reports_bad_citations_with_their_lines() {
    let known = sections("# t\n\n## 2. Resources\n\n### 2.1 Order\n\n## 10. More\n");
    assert_eq!(
        known,
        ["2", "2.1", "10"].map(String::from).into_iter().collect()
    );
    // Built from pieces so that this file cites nothing itself, and the
    // rewrite script of the citation commit leaves it alone.
    let md = concat!("spec", ".md");
    let upstream = concat!("SP", "EC");
    let text = format!(
        "fine: {md} §2.1 step 3.\n\
         //! broken across a line: {md}\n//! §2.2, and more\n\
         a list {md} §2, §9.9 and §10; then {md} §3\n\
         outside: {upstream} §2.1 and {upstream}.md §4\n\
         §7 alone is no citation; {md}§2 needs a space\n",
    );
    let (cited, bad) = check("x.md", &text, &known);
    assert_eq!(cited, 6, "2.1, 2.2, 2, 9.9, 10, 3");
    let found: Vec<_> = bad.iter().map(|b| (b.line, b.citation.clone())).collect();
    let expected = [
        (3, format!("{md} §2.2")),
        (4, format!("{md} §9.9")),
        (4, format!("{md} §3")),
        (5, format!("{upstream} §2.1")),
        (5, format!("{upstream}.md §4")),
    ];
    assert_eq!(found, expected);
    assert!(
        bad[0]
            .to_string()
            .starts_with(&format!("x.md:3: `{md} §2.2`")),
        "{}",
        bad[0]
    );
}
