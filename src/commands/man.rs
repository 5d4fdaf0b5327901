//! `fleet man [-o DIR]`: the man page, rendered by clap_mangen from the clap
//! types (so it carries every flag's help and each subcommand's examples).
//! Without `-o` it prints `fleet.1`; with `-o DIR` it writes `fleet.1` and
//! one page per subcommand (`fleet-up.1`, ...) into DIR.
//!
//! clap_mangen renders the name, synopsis, description, options and the
//! list of subcommands; the text after `--help` is laid out here, in the
//! sections man(7) readers look for: its examples under EXAMPLES (each
//! command as typed, unfilled, its explanation indented below), exit codes
//! under EXIT STATUS and variables under ENVIRONMENT (one entry each), other
//! paragraphs in DESCRIPTION. Then the page is made lint-clean: text lines
//! wrapped under 80 bytes, no trailing whitespace, no empty line (roff reads
//! it as a paragraph break). `mandoc -T lint` reports nothing (a test runs
//! it); `docs/man.txt` is the page as `man -l` shows it.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::CommandFactory;

use crate::cli::{Cli, ManArgs};
use crate::exit;

/// The date in every page's title line: when the pages last changed in a way
/// a reader would notice (man(7) asks for that, not the build date).
const DATE: &str = "2026-12-02";
/// Longest text line written (mandoc's style limit).
const WIDTH: usize = 80;

/// Why no man page was written.
#[derive(Debug, thiserror::Error)]
pub enum ManError {
    #[error("cannot render the man page")]
    Render(#[source] std::io::Error),
    #[error("cannot write man pages to {}", dir.display())]
    Write {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ManError {
    pub fn exit_code(&self) -> u8 {
        exit::FAILURE
    }
}

pub(crate) fn run(args: ManArgs) -> Result<(), ManError> {
    let cmd = root();
    match args.out_dir {
        None => {
            let page = page(&cmd).map_err(ManError::Render)?;
            // A closed pipe (`fleet man | head`) is the reader's choice.
            let _ = std::io::stdout().lock().write_all(page.as_bytes());
        }
        Some(dir) => {
            write_pages(&cmd, &dir).map_err(|source| ManError::Write {
                dir: dir.clone(),
                source,
            })?;
            crate::outln!("fleet: wrote man pages to {}", dir.display());
        }
    }
    Ok(())
}

/// The command tree as the pages show it: no `help` subcommand (`--help`
/// is on every page), built, so subcommands know their full names.
fn root() -> clap::Command {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    cmd
}

/// `fleet.1` and one page per visible subcommand (the internal `guard` has none).
fn write_pages(cmd: &clap::Command, dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("fleet.1"), page(cmd)?)?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("fleet-{}.1", sub.get_name());
        std::fs::write(dir.join(name), page(sub)?)?;
    }
    Ok(())
}

/// One page, as roff text.
fn page(cmd: &clap::Command) -> std::io::Result<String> {
    let name = cmd
        .get_display_name()
        .unwrap_or_else(|| cmd.get_name())
        .to_owned();
    let man = clap_mangen::Man::new(cmd.clone())
        .title(name.to_uppercase())
        .date(DATE)
        .source(format!("fleet {}", env!("CARGO_PKG_VERSION")))
        .manual("fleet manual");
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    let after = cmd
        .get_after_help()
        .map(|h| h.to_string())
        .unwrap_or_default();
    let after = After::parse(&after);
    for p in &after.description {
        writeln!(out, ".PP\n{}", text(p))?;
    }
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut out)?;
    }
    if cmd.get_subcommands().any(|s| !s.is_hide_set()) {
        man.render_subcommands_section(&mut out)?;
    }
    if !after.examples.is_empty() {
        writeln!(out, ".SH EXAMPLES")?;
        for (i, (command, what)) in after.examples.iter().enumerate() {
            if i > 0 {
                writeln!(out, ".PP")?;
            }
            writeln!(out, ".EX\n{}\n.EE", escape(command))?;
            if !what.is_empty() {
                writeln!(out, ".RS 4\n{}\n.RE", text(what))?;
            }
        }
    }
    for (heading, items) in [
        ("EXIT STATUS", &after.exit_codes),
        ("ENVIRONMENT", &after.environment),
    ] {
        if !items.is_empty() {
            writeln!(out, ".SH {heading}")?;
            for (tag, what) in items {
                writeln!(out, ".TP\n.B {}\n{}", escape(tag), text(what))?;
            }
        }
    }
    writeln!(out, ".SH SEE ALSO")?;
    let see: Vec<String> = if cmd.get_name() == "fleet" {
        cmd.get_subcommands()
            .filter(|s| !s.is_hide_set())
            .map(|s| format!("fleet\\-{}(1)", s.get_name()))
            .collect()
    } else {
        vec!["fleet(1)".into()]
    };
    writeln!(out, "{}", wrap(&see.join(", ")))?;
    let roff = String::from_utf8(out).map_err(std::io::Error::other)?;
    Ok(tidy(&roff))
}

/// The text after `--help`, sorted into the sections it belongs to.
#[derive(Debug, Default, PartialEq)]
struct After {
    /// Paragraphs that explain (bench's columns).
    description: Vec<String>,
    /// (command as typed, what it does; may be empty).
    examples: Vec<(String, String)>,
    /// (code, meaning).
    exit_codes: Vec<(String, String)>,
    /// (variable, meaning).
    environment: Vec<(String, String)>,
}

impl After {
    fn parse(text: &str) -> After {
        let mut after = After::default();
        // Blocks: paragraphs, and within one a line that starts a known
        // heading starts a block of its own.
        let mut blocks: Vec<Vec<&str>> = Vec::new();
        let mut fresh = true;
        for line in text.lines() {
            let heading = ["Examples:", "Exit codes:", "Environment:"]
                .iter()
                .any(|h| line.starts_with(h));
            if line.trim().is_empty() {
                fresh = true;
                continue;
            }
            if fresh || heading {
                blocks.push(Vec::new());
                fresh = false;
            }
            if let Some(b) = blocks.last_mut() {
                b.push(line);
            }
        }
        for block in blocks {
            let first = block[0];
            if first.starts_with("Examples:") {
                after.examples = examples(&block[1..]);
            } else if let Some(rest) = first.strip_prefix("Exit codes:") {
                let all = join(rest, &block[1..]);
                after.exit_codes = entries(&all, |w| w.bytes().all(|b| b.is_ascii_digit()));
            } else if let Some(rest) = first.strip_prefix("Environment:") {
                let all = join(rest, &block[1..]);
                after.environment = entries(&all, |w| {
                    w.bytes()
                        .all(|b| b.is_ascii_uppercase() || b == b'_' || b.is_ascii_digit())
                });
            } else {
                after.description.push(join(first, &block[1..]));
            }
        }
        after
    }
}

fn join(first: &str, rest: &[&str]) -> String {
    std::iter::once(first)
        .chain(rest.iter().copied())
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ")
        .trim()
        .to_owned()
}

/// `  COMMAND   what it does` lines; a command too long for its column has
/// its explanation on the next, further indented line.
fn examples(lines: &[&str]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in lines {
        let indent = line.len() - line.trim_start().len();
        let body = line.trim();
        match out.last_mut() {
            // A continuation: indented past the command column.
            Some((_, what)) if indent > 2 && what.is_empty() => *what = body.to_owned(),
            _ => {
                let (command, what) = body
                    .split_once("  ")
                    .map_or((body, ""), |(c, w)| (c, w.trim()));
                out.push((command.trim().to_owned(), what.to_owned()));
            }
        }
    }
    out
}

/// `0 ok; 1 runtime failure.` -> [("0", "ok"), ("1", "runtime failure")]:
/// items separated by `; ` whose first word passes `is_tag` (a `;` inside
/// an item stays).
fn entries(text: &str, is_tag: impl Fn(&str) -> bool) -> Vec<(String, String)> {
    let text = text.trim().trim_end_matches('.');
    let mut out: Vec<(String, String)> = Vec::new();
    for part in text.split("; ") {
        let (tag, what) = part.split_once(' ').unwrap_or((part, ""));
        match out.last_mut() {
            Some((_, prev)) if !is_tag(tag) => {
                prev.push_str("; ");
                prev.push_str(part);
            }
            _ => out.push((tag.to_owned(), what.to_owned())),
        }
    }
    out
}

/// Text for roff: escaped, wrapped, a line starting with `.` or `'` guarded.
fn text(s: &str) -> String {
    wrap(&escape(s))
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\e"),
            '-' => out.push_str("\\-"),
            _ => out.push(c),
        }
    }
    out
}

/// Break filled text at spaces into lines of at most `WIDTH` bytes (a word
/// longer than that stays whole); `\&` guards a line that would start with
/// a control character.
fn wrap(s: &str) -> String {
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for word in s.split(' ').filter(|w| !w.is_empty()) {
        if !line.is_empty() && line.len() + 1 + word.len() > WIDTH {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    lines.push(line);
    lines
        .into_iter()
        .map(|l| {
            if l.starts_with('.') || l.starts_with('\'') {
                format!("\\&{l}")
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// What clap_mangen writes, made lint-clean: trailing whitespace dropped,
/// empty lines (a paragraph break in roff, which mandoc flags beside `.br`)
/// removed, long text lines wrapped. Lines inside `.EX`/`.EE` stay as they
/// are: they are shown unfilled.
fn tidy(roff: &str) -> String {
    let mut out = String::with_capacity(roff.len());
    let mut unfilled = false;
    let mut last_br = false;
    let mut preamble_seen = false;
    for line in roff.lines() {
        let line = line.trim_end();
        if line.is_empty() {
            continue;
        }
        // Each section clap_mangen renders alone starts with its definition
        // of the apostrophe string; once is enough.
        if line.starts_with(".ie \\n(.g .ds Aq") || line == ".el .ds Aq '" {
            if preamble_seen && !out.ends_with(".ds Aq \\(aq\n") {
                continue;
            }
            preamble_seen = true;
        }
        if line == ".br" && last_br {
            continue;
        }
        last_br = line == ".br";
        if line == ".EX" {
            unfilled = true;
        } else if line == ".EE" {
            unfilled = false;
        }
        let control = line.starts_with('.') || line.starts_with('\'');
        if unfilled || control || line.len() <= WIDTH {
            out.push_str(line);
        } else {
            out.push_str(&wrap(line));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_text_is_sorted_into_sections() {
        let a = After::parse(
            "Columns follow ab.\nSecond line.\n\nExamples:\n  fleet up -d        start it\n  fleet restart --all-at-once\n                     all together\n  fleet init\n\nExit codes: 0 ok; 1 runtime failure; 3 no fleet (status; restart).\nEnvironment: FLEET_STATE_DIR sets --state-dir; RUST_LOG filters log lines (default info).",
        );
        assert_eq!(a.description, ["Columns follow ab. Second line."]);
        let ex = |c: &str, w: &str| (c.to_owned(), w.to_owned());
        assert_eq!(
            a.examples,
            [
                ex("fleet up -d", "start it"),
                ex("fleet restart --all-at-once", "all together"),
                ex("fleet init", "")
            ]
        );
        assert_eq!(
            a.exit_codes,
            [
                ex("0", "ok"),
                ex("1", "runtime failure"),
                ex("3", "no fleet (status; restart)")
            ]
        );
        assert_eq!(
            a.environment,
            [
                ex("FLEET_STATE_DIR", "sets --state-dir"),
                ex("RUST_LOG", "filters log lines (default info)")
            ]
        );
    }

    #[test]
    fn every_page_has_its_sections_and_no_help_page_is_named() {
        let cmd = root();
        let top = page(&cmd).unwrap();
        for section in ["EXAMPLES", "EXIT STATUS", "ENVIRONMENT", "SEE ALSO"] {
            assert!(
                top.contains(&format!("\n.SH {section}\n")),
                "{section}:\n{top}"
            );
        }
        assert!(
            !top.contains("EXTRA") && !top.contains("fleet\\-help"),
            "{top}"
        );
        assert!(
            top.starts_with(".ie") || top.contains(".TH FLEET 1 2026"),
            "{top}"
        );
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            let p = page(sub).unwrap();
            assert!(p.contains("\n.SH EXAMPLES\n.EX\n"), "{p}");
            assert_eq!(p.matches(".ds Aq \\(aq").count(), 1, "{p}");
            let mut unfilled = false;
            for l in p.lines() {
                unfilled = (unfilled || l == ".EX") && l != ".EE";
                assert!(unfilled || l.len() <= WIDTH || l.starts_with('.'), "{l}");
            }
        }
    }

    #[test]
    fn long_lines_are_wrapped_and_guarded() {
        let long = "word ".repeat(40);
        assert!(wrap(&long).lines().all(|l| l.len() <= WIDTH));
        assert_eq!(wrap("a .b"), "a .b");
        assert_eq!(text("-d"), "\\-d");
        let t = tidy(".TH X 1 \n\nplain  \n.br\n\n.br\n.EX\n".to_owned().as_str());
        assert_eq!(t, ".TH X 1\nplain\n.br\n.EX\n");
    }
}
