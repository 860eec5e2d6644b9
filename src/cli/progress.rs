//! A small progress line on stderr for long client operations (paging through many list pages;
//! ready for export, import or preloads). It draws only when stderr is a terminal, so scripts and
//! pipes see clean output, and it clears its line when done.

use std::io::Write;

/// Counts pages and items; redraws `label: N items (P pages)` on one stderr line.
pub struct Progress<W: Write> {
    label: String,
    out: Option<W>,
    pages: usize,
    items: usize,
    /// A line was drawn (and must be cleared).
    drawn: bool,
}

impl Progress<std::io::Stderr> {
    /// Drawn on stderr when it is a terminal; silent otherwise.
    pub fn stderr(label: &str) -> Self {
        let err = std::io::stderr();
        let tty = std::io::IsTerminal::is_terminal(&err);
        Progress::new(label, tty.then_some(err))
    }
}

impl<W: Write> Progress<W> {
    /// Draws on `out`, or nowhere when `None`.
    pub fn new(label: &str, out: Option<W>) -> Self {
        Progress {
            label: label.to_string(),
            out,
            pages: 0,
            items: 0,
            drawn: false,
        }
    }

    /// Redraws the line as `label: text` (for progress that is not counted in pages).
    pub fn status(&mut self, text: &str) {
        if let Some(out) = &mut self.out {
            let _ = write!(out, "\r\x1b[2K{}: {text}", self.label);
            let _ = out.flush();
            self.drawn = true;
        }
    }

    /// One more page of `items` items. The first page is not drawn (one page is not long).
    pub fn page(&mut self, items: usize) {
        self.pages += 1;
        self.items += items;
        if self.pages < 2 {
            return;
        }
        if let Some(out) = &mut self.out {
            let _ = write!(
                out,
                "\r{}: {} ({} pages)",
                self.label, self.items, self.pages
            );
            let _ = out.flush();
            self.drawn = true;
        }
    }

    /// Clears the line, if one was drawn.
    pub fn finish(&mut self) {
        if self.drawn
            && let Some(out) = &mut self.out
        {
            let _ = write!(out, "\r\x1b[2K");
            let _ = out.flush();
        }
    }

    /// Pages and items counted so far.
    pub fn counts(&self) -> (usize, usize) {
        (self.pages, self.items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_from_the_second_page_and_clears() {
        let mut p = Progress::new("runs", Some(Vec::new()));
        p.page(100);
        assert!(p.out.as_ref().unwrap().is_empty());
        p.page(50);
        p.finish();
        let text = String::from_utf8(p.out.take().unwrap()).unwrap();
        assert_eq!(text, "\rruns: 150 (2 pages)\r\x1b[2K");
        assert_eq!(p.counts(), (2, 150));
    }

    #[test]
    fn a_status_line_is_redrawn_in_place_and_cleared() {
        let mut p = Progress::new("backup", Some(Vec::new()));
        p.status("10 keys");
        p.status("20 keys");
        p.finish();
        let text = String::from_utf8(p.out.take().unwrap()).unwrap();
        assert_eq!(
            text,
            "\r\x1b[2Kbackup: 10 keys\r\x1b[2Kbackup: 20 keys\r\x1b[2K"
        );
    }

    #[test]
    fn silent_without_a_terminal() {
        let mut p: Progress<Vec<u8>> = Progress::new("runs", None);
        p.page(1);
        p.page(1);
        p.finish();
        assert_eq!(p.counts(), (2, 2));
    }
}
