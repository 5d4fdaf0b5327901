//! `fleet status --watch` (alias `fleet top`): the status table, live.
//!
//! On a terminal: the alternate screen, redrawn in place once a second
//! (cursor home, each line overwritten and its rest cleared, then the rest
//! of the screen cleared, all in one write: no flicker). Raw mode turns `q`,
//! Esc and Ctrl-C into key events, so no SIGINT handler is needed for them;
//! SIGINT, SIGTERM and SIGHUP from elsewhere set a flag (signal-hook) that
//! ends the loop the same way. The terminal is restored by a guard's `Drop`
//! on every way out of the loop.
//!
//! Not on a terminal (a pipe, a log file): one plain snapshot per second,
//! separated by blank lines, until the fleet stops or the reader goes away.

use std::io::{self, IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossterm::cursor::{Hide, MoveTo, MoveToNextLine, Show};
use crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use crossterm::style::{Attribute, Print, SetAttribute};
use crossterm::terminal::{self, Clear, ClearType, EnterAlternateScreen, LeaveAlternateScreen};
use crossterm::{execute, queue};

use super::status::StatusError;
use super::status_view::{render, render_width};
use crate::control::client::{self, ControlError};
use crate::state_dir::StateDir;

const PERIOD: Duration = Duration::from_secs(1);
/// How often a key press or a signal is checked for between redraws.
const POLL: Duration = Duration::from_millis(100);

pub(crate) fn run(state: &StateDir) -> Result<(), StatusError> {
    if io::stdout().is_terminal() {
        live(state).map_err(StatusError::Watch)
    } else {
        snapshots(state).map_err(StatusError::Control)
    }
}

/// One frame's text: the status table (fitted to `width` columns, when
/// known), or why there is none.
fn frame(state: &StateDir, width: Option<usize>) -> Result<String, ControlError> {
    client::status(state).map(|s| render_width(&s, width))
}

fn snapshots(state: &StateDir) -> Result<(), ControlError> {
    let mut next = Instant::now();
    loop {
        match client::status(state).map(|s| render(&s)) {
            Ok(text) => {
                let mut out = io::stdout().lock();
                if writeln!(out, "{}\n", text.trim_end())
                    .and_then(|()| out.flush())
                    .is_err()
                {
                    // The reader went away (`| head`): that is a normal end.
                    return Ok(());
                }
            }
            Err(e) => return Err(e),
        }
        next += PERIOD;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
}

/// The terminal in watch mode; restored when dropped.
struct Screen;

impl Screen {
    fn enter() -> io::Result<Screen> {
        terminal::enable_raw_mode()?;
        let screen = Screen;
        execute!(io::stdout(), EnterAlternateScreen, Hide)?;
        Ok(screen)
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let _ = execute!(io::stdout(), Show, LeaveAlternateScreen);
        let _ = terminal::disable_raw_mode();
    }
}

fn live(state: &StateDir) -> io::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        signal_hook::flag::register(sig, stop.clone())?;
    }
    let color = !super::no_color();
    let _screen = Screen::enter()?;
    let mut out = io::stdout().lock();
    loop {
        let text = match frame(state, size().0) {
            Ok(t) => t,
            Err(e) => format!("fleet: {}\nwaiting for it...", crate::message::one_line(&e)),
        };
        draw(&mut out, &text, color)?;
        let next = Instant::now() + PERIOD;
        while Instant::now() < next {
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            match input(POLL.min(next.saturating_duration_since(Instant::now()))) {
                Input::None => continue,
                Input::HungUp => return Ok(()),
                Input::Ready => {}
            }
            // Every event crossterm has parsed, so none waits for the next key.
            let mut resized = false;
            while event::poll(Duration::ZERO)? {
                match event::read()? {
                    Event::Key(k) if quits(&k) => return Ok(()),
                    Event::Resize(..) => resized = true,
                    _ => {}
                }
            }
            if resized {
                break;
            }
        }
    }
}

enum Input {
    None,
    Ready,
    HungUp,
}

/// Wait up to `limit` for the terminal. We poll stdin ourselves rather than
/// through crossterm: on a terminal that went away without a SIGHUP reaching
/// us (its emulator was SIGKILLed), crossterm reads EOF in a busy loop and
/// never returns, while poll(2) reports the hang-up.
fn input(limit: Duration) -> Input {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let stdin = io::stdin();
    let mut fds = [PollFd::new(stdin.as_fd(), PollFlags::POLLIN)];
    let ms = PollTimeout::from(limit.as_millis().min(1000) as u16);
    match poll(&mut fds, ms) {
        Ok(0) => Input::None,
        Ok(_) => {
            let gone = PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL;
            if fds[0].revents().is_some_and(|r| r.intersects(gone)) {
                Input::HungUp
            } else {
                Input::Ready
            }
        }
        // EINTR (a signal: the loop checks `stop`) and the like.
        Err(_) => Input::None,
    }
}

fn quits(k: &KeyEvent) -> bool {
    k.kind != KeyEventKind::Release
        && match k.code {
            KeyCode::Char('q' | 'Q') | KeyCode::Esc => true,
            KeyCode::Char('c') => k.modifiers.contains(KeyModifiers::CONTROL),
            _ => false,
        }
}

/// The terminal's columns and rows; `None` for a terminal that does not
/// know its size (0x0, as under `script`): it is neither fitted nor clipped.
fn size() -> (Option<usize>, Option<usize>) {
    match terminal::size() {
        Ok((c, r)) if c > 0 && r > 0 => (Some(usize::from(c)), Some(usize::from(r))),
        _ => (None, None),
    }
}

/// Overwrite the screen with `text` (clipped to the terminal) in one write.
fn draw(out: &mut impl Write, text: &str, color: bool) -> io::Result<()> {
    let (cols, rows) = size();
    let (cols, rows) = (cols.unwrap_or(usize::MAX), rows.unwrap_or(usize::MAX));
    queue!(out, MoveTo(0, 0))?;
    let footer = "q quits · refreshed every second";
    let lines: Vec<&str> = text.trim_end().lines().collect();
    for (i, line) in lines.iter().take(rows.saturating_sub(2)).enumerate() {
        let clipped: String = line.chars().take(cols).collect();
        if i == 0 && color {
            queue!(
                out,
                SetAttribute(Attribute::Bold),
                Print(clipped),
                SetAttribute(Attribute::Reset)
            )?;
        } else {
            queue!(out, Print(clipped))?;
        }
        queue!(out, Clear(ClearType::UntilNewLine), MoveToNextLine(1))?;
    }
    let footer: String = footer.chars().take(cols).collect();
    queue!(
        out,
        Clear(ClearType::UntilNewLine),
        MoveToNextLine(1),
        Print(footer),
        Clear(ClearType::FromCursorDown)
    )?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode, modifiers: KeyModifiers) -> KeyEvent {
        KeyEvent::new(code, modifiers)
    }

    #[test]
    fn q_esc_and_ctrl_c_quit_other_keys_do_not() {
        assert!(quits(&key(KeyCode::Char('q'), KeyModifiers::NONE)));
        assert!(quits(&key(KeyCode::Char('Q'), KeyModifiers::SHIFT)));
        assert!(quits(&key(KeyCode::Esc, KeyModifiers::NONE)));
        assert!(quits(&key(KeyCode::Char('c'), KeyModifiers::CONTROL)));
        assert!(!quits(&key(KeyCode::Char('c'), KeyModifiers::NONE)));
        assert!(!quits(&key(KeyCode::Char('x'), KeyModifiers::NONE)));
        let mut release = key(KeyCode::Char('q'), KeyModifiers::NONE);
        release.kind = KeyEventKind::Release;
        assert!(!quits(&release), "the key's release is not a second press");
    }

    #[test]
    fn a_frame_overwrites_in_place_and_clears_what_is_left() {
        let mut out = Vec::new();
        draw(&mut out, "line one\nline two\n", false).expect("writes to a Vec");
        let s = String::from_utf8(out).expect("utf-8");
        assert!(s.starts_with("\x1b[1;1H"), "cursor home first: {s:?}");
        assert!(
            s.contains("line one\x1b[K"),
            "each line clears its rest: {s:?}"
        );
        assert!(
            s.ends_with("\x1b[J"),
            "the rest of the screen is cleared: {s:?}"
        );
        assert!(
            !s.contains("\x1b[2J"),
            "never a full clear (flicker): {s:?}"
        );
        assert!(!s.contains("\x1b[1m"), "no bold without colour: {s:?}");
    }
}
