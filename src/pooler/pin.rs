//! Session state a transaction-mode client leaves on its server connection: a cheap scan of
//! the SQL a client sends (Query and Parse texts) for the few statements and functions
//! whose effect outlives the transaction. Not a parser: one pass over the bytes, no
//! allocation, string literals and comments skipped. A false positive only pins a client to
//! its server connection; a false negative leaks its state to the next client, so when in
//! doubt it reports. Dollar-quoted bodies (DO blocks, functions) are scanned as SQL: they
//! run statements too. What it cannot see (dynamic SQL in `EXECUTE '…'`, a function that
//! sets state when called) is left to what PostgreSQL reports (ParameterStatus).

use super::params::is_tracked;

/// Why a client was pinned; stored as one byte per client (`ClientInfo::pinned`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Cause {
    /// SET or RESET of a parameter the pooler does not track.
    Set = 1,
    /// `set_config(…, false)` (or with an is_local the scan cannot read as true).
    SetConfig,
    /// SET ROLE / RESET ROLE.
    Role,
    /// SET SESSION AUTHORIZATION.
    SessionAuthorization,
    /// CREATE TEMP …, SELECT … INTO TEMP, objects in pg_temp.
    Temp,
    /// pg_advisory_lock and its session-level variants.
    AdvisoryLock,
    Listen,
    /// DECLARE … WITH HOLD.
    HoldCursor,
    /// SQL-level PREPARE.
    Prepare,
    /// dblink_connect: a named connection that lives with the session.
    Dblink,
    /// PostgreSQL reported a change of a parameter the pooler does not track.
    Reported,
}

impl Cause {
    pub fn name(self) -> &'static str {
        match self {
            Cause::Set => "set",
            Cause::SetConfig => "set_config",
            Cause::Role => "set_role",
            Cause::SessionAuthorization => "session_authorization",
            Cause::Temp => "temp",
            Cause::AdvisoryLock => "advisory_lock",
            Cause::Listen => "listen",
            Cause::HoldCursor => "hold_cursor",
            Cause::Prepare => "prepare",
            Cause::Dblink => "dblink",
            Cause::Reported => "parameter_status",
        }
    }

    pub fn from_byte(b: u8) -> Option<Cause> {
        const ALL: [Cause; 11] = [
            Cause::Set,
            Cause::SetConfig,
            Cause::Role,
            Cause::SessionAuthorization,
            Cause::Temp,
            Cause::AdvisoryLock,
            Cause::Listen,
            Cause::HoldCursor,
            Cause::Prepare,
            Cause::Dblink,
            Cause::Reported,
        ];
        ALL.into_iter().find(|c| *c as u8 == b)
    }
}

/// What the scan found: the cause and the words that show it (a parameter's name, a
/// function's), for the log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found<'a> {
    pub cause: Cause,
    pub detail: &'a [u8],
}

impl Found<'_> {
    /// "SET search_path", "pg_advisory_lock", …: what the log line and the error name.
    pub fn describe(&self) -> String {
        let detail = String::from_utf8_lossy(self.detail);
        match self.cause {
            Cause::Set => format!("SET/RESET {detail}"),
            Cause::SetConfig => format!("set_config({detail}, …, false)"),
            Cause::Role => "SET ROLE".to_owned(),
            Cause::SessionAuthorization => "SET SESSION AUTHORIZATION".to_owned(),
            Cause::Temp => "a temporary object".to_owned(),
            Cause::AdvisoryLock | Cause::Dblink => format!("{detail}()"),
            Cause::Listen => "LISTEN".to_owned(),
            Cause::HoldCursor => "DECLARE … WITH HOLD".to_owned(),
            Cause::Prepare => "PREPARE".to_owned(),
            Cause::Reported => format!("a change of {detail} reported by PostgreSQL"),
        }
    }
}

/// What PostgreSQL reports that is not session state a client chose: a standby's promotion
/// changes in_hot_standby under every session.
pub fn reported_is_state(name: &str) -> bool {
    !is_tracked(name) && !name.eq_ignore_ascii_case("in_hot_standby")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token<'a> {
    /// An identifier or keyword: unquoted (compared case-insensitively) or the inside of
    /// a quoted one.
    Word(&'a [u8]),
    /// The inside of a string literal (escapes left as written).
    Str(&'a [u8]),
    /// `;` or a dollar quote: where a statement may start.
    Boundary,
    Open,
    Close,
    Comma,
    Dot,
    Other,
}

struct Tokens<'a> {
    sql: &'a [u8],
    at: usize,
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80
}

impl<'a> Iterator for Tokens<'a> {
    type Item = Token<'a>;

    fn next(&mut self) -> Option<Token<'a>> {
        let sql = self.sql;
        loop {
            let b = *sql.get(self.at)?;
            let rest = sql.get(self.at..).unwrap_or_default();
            if b.is_ascii_whitespace() {
                self.at += 1;
            } else if rest.starts_with(b"--") {
                self.at += rest.iter().position(|&c| c == b'\n').unwrap_or(rest.len());
            } else if rest.starts_with(b"/*") {
                self.at += block_comment_length(rest);
            } else {
                break;
            }
        }
        let start = self.at;
        let b = sql[start];
        self.at += 1;
        Some(match b {
            b'\'' => Token::Str(self.quoted(b'\'', false)),
            b'"' => Token::Word(self.quoted(b'"', false)),
            b'e' | b'E' if sql.get(self.at) == Some(&b'\'') => {
                self.at += 1;
                Token::Str(self.quoted(b'\'', true))
            }
            b'$' => {
                // `$tag$` opens or closes a dollar-quoted body; `$1` is a parameter.
                let tag_end = sql[self.at..]
                    .iter()
                    .position(|&c| !is_word_byte(c))
                    .map(|n| self.at + n);
                match tag_end {
                    Some(end)
                        if sql[end] == b'$'
                            && !sql.get(self.at).is_some_and(u8::is_ascii_digit) =>
                    {
                        self.at = end + 1;
                        Token::Boundary
                    }
                    _ => {
                        while sql.get(self.at).is_some_and(|c| c.is_ascii_digit()) {
                            self.at += 1;
                        }
                        Token::Other
                    }
                }
            }
            b';' => Token::Boundary,
            b'(' => Token::Open,
            b')' => Token::Close,
            b',' => Token::Comma,
            b'.' => Token::Dot,
            c if is_word_byte(c) => {
                while sql.get(self.at).copied().is_some_and(is_word_byte) {
                    self.at += 1;
                }
                Token::Word(&sql[start..self.at])
            }
            _ => Token::Other,
        })
    }
}

impl<'a> Tokens<'a> {
    /// The inside of a literal whose opening quote was just read; a doubled quote is part
    /// of it, and with `backslash` (E'…') so is an escaped one.
    fn quoted(&mut self, quote: u8, backslash: bool) -> &'a [u8] {
        let sql = self.sql;
        let start = self.at;
        while let Some(&c) = sql.get(self.at) {
            self.at += 1;
            if backslash && c == b'\\' {
                self.at += 1;
            } else if c == quote {
                if sql.get(self.at) == Some(&quote) {
                    self.at += 1;
                } else {
                    return &sql[start..self.at - 1];
                }
            }
        }
        self.at = sql.len();
        &sql[start.min(sql.len())..]
    }
}

/// Length of a (nested) block comment at the start of `s`.
fn block_comment_length(s: &[u8]) -> usize {
    let mut depth = 0usize;
    let mut i = 0;
    while i < s.len() {
        if s[i..].starts_with(b"/*") {
            depth += 1;
            i += 2;
        } else if s[i..].starts_with(b"*/") {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    s.len()
}

fn is(word: &[u8], keyword: &str) -> bool {
    word.eq_ignore_ascii_case(keyword.as_bytes())
}

fn word(token: Option<Token<'_>>) -> Option<&[u8]> {
    match token {
        Some(Token::Word(w)) => Some(w),
        _ => None,
    }
}

/// PL/pgSQL words after which a statement starts inside a dollar-quoted body.
const BLOCK_STARTS: [&str; 4] = ["begin", "then", "else", "loop"];

/// Session-level advisory lock functions (the `_xact_` ones end with the transaction).
const ADVISORY: [&str; 4] = [
    "pg_advisory_lock",
    "pg_advisory_lock_shared",
    "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared",
];

/// The first session-state operation in `sql`, if any.
pub fn scan(sql: &[u8]) -> Option<Found<'_>> {
    if !mentions_a_trigger(sql) {
        return None;
    }
    let mut tokens = Tokens { sql, at: 0 }.peekable();
    let mut at_start = true;
    // Within the current statement.
    let mut declare = false;
    let mut temp: Option<&[u8]> = None;
    let mut previous: Option<Token<'_>> = None;
    while let Some(token) = tokens.next() {
        let starts = at_start;
        at_start = false;
        match token {
            Token::Boundary => {
                if let Some(detail) = temp.take() {
                    return Some(Found {
                        cause: Cause::Temp,
                        detail,
                    });
                }
                declare = false;
                at_start = true;
            }
            Token::Word(w) if starts => {
                if let Some(found) = statement_start(w, &mut tokens) {
                    return Some(found);
                }
                if is(w, "declare") {
                    declare = true;
                } else if is(w, "create") {
                    temp = create_temp(&mut tokens);
                }
                at_start = BLOCK_STARTS.iter().any(|k| is(w, k));
            }
            Token::Word(w) => {
                if let Some(found) = anywhere(w, previous, &mut tokens, declare) {
                    return Some(found);
                }
                if temp.is_some() && is(w, "on") && on_commit_drop(&mut tokens) {
                    temp = None;
                }
                at_start = BLOCK_STARTS.iter().any(|k| is(w, k));
            }
            _ => {}
        }
        previous = Some(token);
    }
    temp.map(|detail| Found {
        cause: Cause::Temp,
        detail,
    })
}

/// Whether `sql` has a word `scan` may act on; most statements have none, and one pass
/// over their bytes (no tokens, no comparisons but where a word's first letter fits)
/// spares them the tokenizer. It may say yes where `scan` finds nothing, never the
/// reverse: SET and RESET count only where a statement may start — after nothing, after
/// punctuation (`;`, a comment's `*/`, a dollar quote), after a line holding `--`, or after
/// a PL/pgSQL block word — since `UPDATE t SET` is the common case.
fn mentions_a_trigger(sql: &[u8]) -> bool {
    // The word before the current one, with only whitespace between; None after anything else.
    let mut previous: Option<&[u8]> = None;
    let mut comment_on_line = false;
    let mut i = 0;
    while let Some(&b) = sql.get(i) {
        if is_word_byte(b) {
            let start = i;
            while sql.get(i).copied().is_some_and(is_word_byte) {
                i += 1;
            }
            let word = &sql[start..i];
            if may_trigger(word, previous) {
                return true;
            }
            previous = Some(word);
            continue;
        }
        if b == b'\n' {
            if comment_on_line {
                previous = None;
            }
            comment_on_line = false;
        } else if !b.is_ascii_whitespace() {
            comment_on_line |= b == b'-' && sql.get(i + 1) == Some(&b'-');
            previous = None;
        }
        i += 1;
    }
    false
}

fn may_trigger(word: &[u8], previous: Option<&[u8]>) -> bool {
    let starts = |part: &[u8]| {
        word.get(..part.len())
            .is_some_and(|w| w.eq_ignore_ascii_case(part))
    };
    let at_statement_start = || previous.is_none_or(|p| BLOCK_STARTS.iter().any(|k| is(p, k)));
    match word.first().map(|b| b | 0x20) {
        Some(b's') => starts(b"set_config") || (is(word, "set") && at_statement_start()),
        Some(b'r') => is(word, "reset") && at_statement_start(),
        Some(b't') => starts(b"temp"),
        Some(b'l') => is(word, "listen"),
        Some(b'p') => {
            is(word, "prepare")
                || starts(b"pg_temp")
                || starts(b"pg_advisory")
                || starts(b"pg_try_advisory")
        }
        Some(b'd') => starts(b"dblink"),
        Some(b'h') => is(word, "hold"),
        _ => false,
    }
}

type Peek<'a> = std::iter::Peekable<Tokens<'a>>;

/// Statements recognised by their first word.
fn statement_start<'a>(first: &'a [u8], tokens: &mut Peek<'a>) -> Option<Found<'a>> {
    let found = |cause, detail| Some(Found { cause, detail });
    if is(first, "set") {
        set_target(tokens, false)
    } else if is(first, "reset") {
        set_target(tokens, true)
    } else if is(first, "listen") {
        found(Cause::Listen, first)
    } else if is(first, "prepare") {
        // PREPARE TRANSACTION hands the transaction over; it leaves no session state.
        match word(tokens.peek().copied()) {
            Some(w) if is(w, "transaction") => None,
            _ => found(Cause::Prepare, first),
        }
    } else {
        None
    }
}

/// After SET (or RESET): what is set, and whether it outlives the transaction.
fn set_target<'a>(tokens: &mut Peek<'a>, reset: bool) -> Option<Found<'a>> {
    let found = |cause, detail| Some(Found { cause, detail });
    let mut name = word(tokens.next())?;
    if !reset && (is(name, "local") || is(name, "transaction") || is(name, "constraints")) {
        return None;
    }
    if is(name, "session") {
        let Some(next) = word(tokens.next()) else {
            return found(Cause::Set, name);
        };
        if is(next, "authorization") {
            return found(Cause::SessionAuthorization, next);
        }
        if is(next, "characteristics") {
            return found(Cause::Set, next);
        }
        name = next;
    }
    if is(name, "role") {
        return found(Cause::Role, name);
    }
    if is(name, "time") || is(name, "names") {
        // TIME ZONE and NAMES set TimeZone and client_encoding, which the pooler tracks.
        return None;
    }
    if is(name, "all") && reset {
        return found(Cause::Set, name);
    }
    let dotted = tokens.peek() == Some(&Token::Dot);
    let tracked = std::str::from_utf8(name).is_ok_and(is_tracked);
    if tracked && !dotted {
        None
    } else {
        found(Cause::Set, name)
    }
}

/// After CREATE at a statement's start: the word TEMP or TEMPORARY if the object is
/// temporary.
fn create_temp<'a>(tokens: &mut Peek<'a>) -> Option<&'a [u8]> {
    while let Some(w) = word(tokens.peek().copied()) {
        if is(w, "temp") || is(w, "temporary") {
            tokens.next();
            return Some(w);
        }
        if !["or", "replace", "global", "local"]
            .iter()
            .any(|k| is(w, k))
        {
            return None;
        }
        tokens.next();
    }
    None
}

/// After ON in a CREATE TEMP statement: COMMIT DROP, which ends the table with the
/// transaction.
fn on_commit_drop(tokens: &mut Peek<'_>) -> bool {
    if !word(tokens.peek().copied()).is_some_and(|w| is(w, "commit")) {
        return false;
    }
    tokens.next();
    word(tokens.peek().copied()).is_some_and(|w| is(w, "drop"))
}

/// Words that matter wherever they are: function names, INTO TEMP, WITH HOLD.
fn anywhere<'a>(
    w: &'a [u8],
    previous: Option<Token<'a>>,
    tokens: &mut Peek<'a>,
    declare: bool,
) -> Option<Found<'a>> {
    // Most words start with none of the letters looked for: one comparison for them.
    if !w
        .first()
        .is_some_and(|b| matches!(b | 0x20, b'p' | b'd' | b'w' | b'i' | b's'))
    {
        return None;
    }
    let found = |cause, detail| Some(Found { cause, detail });
    if ADVISORY.iter().any(|k| is(w, k)) {
        return found(Cause::AdvisoryLock, w);
    }
    if is(w, "dblink_connect") || is(w, "dblink_connect_u") {
        return found(Cause::Dblink, w);
    }
    if is(w, "pg_temp") || (w.len() > 8 && is(&w[..8], "pg_temp_")) {
        return found(Cause::Temp, w);
    }
    if declare && is(w, "with") && word(tokens.peek().copied()).is_some_and(|n| is(n, "hold")) {
        return found(Cause::HoldCursor, w);
    }
    if is(w, "into") {
        let after_insert = word(previous).is_some_and(|p| is(p, "insert") || is(p, "merge"));
        let next = word(tokens.peek().copied());
        if !after_insert && next.is_some_and(|n| is(n, "temp") || is(n, "temporary")) {
            return found(Cause::Temp, next.unwrap_or(w));
        }
        return None;
    }
    if is(w, "set_config") && tokens.peek() == Some(&Token::Open) {
        return set_config(w, tokens);
    }
    None
}

/// `set_config(name, value, is_local)` from its opening parenthesis: session state unless
/// is_local is literally true or the parameter is one the pooler tracks.
fn set_config<'a>(function: &'a [u8], tokens: &mut Peek<'a>) -> Option<Found<'a>> {
    tokens.next();
    let mut depth = 1usize;
    let mut argument = 0usize;
    let mut name: Option<&'a [u8]> = None;
    let mut name_alone = true;
    let mut local = Vec::<Token<'a>>::new();
    for token in tokens.by_ref() {
        match token {
            Token::Open => depth += 1,
            Token::Close => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            Token::Comma if depth == 1 => {
                argument += 1;
                continue;
            }
            Token::Boundary => break,
            _ => {}
        }
        match argument {
            0 if name.is_none() => {
                name = Some(match token {
                    Token::Str(s) => s,
                    _ => function,
                })
            }
            0 => name_alone = false,
            2 => local.push(token),
            _ => {}
        }
    }
    let detail = name.unwrap_or(function);
    let tracked = name_alone
        && name.is_some_and(|n| n != function && std::str::from_utf8(n).is_ok_and(is_tracked));
    let is_local = match local.as_slice() {
        [Token::Word(w)] => is(w, "true"),
        [Token::Str(s)] => ["true", "t", "on", "yes", "1"].iter().any(|k| is(s, k)),
        _ => false,
    };
    if tracked || is_local {
        None
    } else {
        Some(Found {
            cause: Cause::SetConfig,
            detail,
        })
    }
}

#[cfg(test)]
#[path = "pin_tests.rs"]
mod tests;
