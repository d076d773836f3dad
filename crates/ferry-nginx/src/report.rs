//! The import's report: one line per nginx directive that Ferry's configuration does not say the same way,
//! with where it was written and why.

use crate::Position;

/// What became of a directive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NoteKind {
    /// Left out: Ferry has nothing that does it (or not in this form).
    NotTranslated,
    /// Left out: Ferry does it by itself (forwarding headers, WebSocket upgrades, HTTP/2, keep-alive…).
    NotNeeded,
    /// Translated to something close that differs in a way worth knowing.
    Approximated,
}

impl NoteKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NoteKind::NotTranslated => "not translated",
            NoteKind::NotNeeded => "not needed",
            NoteKind::Approximated => "approximated",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Note {
    pub at: Position,
    /// The directive, with its first argument when that names what it is about (`proxy_set_header Upgrade`).
    pub directive: String,
    pub kind: NoteKind,
    pub why: String,
}

impl std::fmt::Display for Note {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {}: {}: {}",
            self.at,
            self.directive,
            self.kind.as_str(),
            self.why
        )
    }
}

/// Every note, in file order, each directive once per reason.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    pub notes: Vec<Note>,
}

impl Report {
    pub(crate) fn push(&mut self, note: Note) {
        if !self.notes.contains(&note) {
            self.notes.push(note);
        }
    }

    pub(crate) fn sort(&mut self) {
        self.notes.sort_by(|a, b| {
            (a.at.file.as_path(), a.at.line, &a.directive).cmp(&(
                b.at.file.as_path(),
                b.at.line,
                &b.directive,
            ))
        });
    }

    /// The notes of one kind.
    pub fn of(&self, kind: NoteKind) -> impl Iterator<Item = &Note> {
        self.notes.iter().filter(move |n| n.kind == kind)
    }

    /// The report as lines, for stderr.
    pub fn lines(&self) -> Vec<String> {
        self.notes.iter().map(ToString::to_string).collect()
    }
}
